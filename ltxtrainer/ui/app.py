"""Building and launching the Gradio Blocks: header, language switch, the six tabs.

Labels are registered with `UI.tr` as they are created, so the language switch can send every
one of them its text in the other language without rebuilding the page. Job state lives in the
server (`JobRunner`, on disk), so refreshing or reopening the page shows the running job.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from ltxtrainer.desktop import should_open_browser
from ltxtrainer.ui import actions
from ltxtrainer.ui.i18n import LANGUAGE_NAMES, LANGUAGES, t
from ltxtrainer.ui.jobs import JobRunner
from ltxtrainer.ui.settings import REMEMBERED, load_settings, remember
from ltxtrainer.ui.workspace import AppPaths

DEFAULT_PORT = 7860

# A label spec: a strings-table key, or a function of the language (for choices and texts).
Spec = str | Callable[[str], Any]


@dataclass
class UI:
    """What every tab needs: folders, the job runner, the session language, the label registry."""

    paths: AppPaths
    runner: JobRunner
    language: str
    lang: gr.State | None = None
    _labels: list[tuple[gr.components.Component | gr.blocks.BlockContext, dict[str, Spec]]] = field(default_factory=list)
    _restorers: list[tuple[gr.components.Component, Callable[[dict, str], dict]]] = field(default_factory=list)
    _on_show: list[tuple[gr.components.Component, Callable[..., Any], list]] = field(default_factory=list)

    def tr(self, component, **props: Spec):
        """Register a component's translatable properties (label=, info=, value=, choices=)."""
        self._labels.append((component, props))
        return component

    def text(self, spec: Spec, lang: str | None = None) -> Any:
        lang = lang or self.language
        return spec(lang) if callable(spec) else t(spec, lang)

    def label_updates(self, lang: str) -> list:
        return [gr.update(**{prop: self.text(spec, lang) for prop, spec in props.items()}) for _, props in self._labels]

    @property
    def labelled(self) -> list:
        return [component for component, _ in self._labels]

    def settings(self) -> dict:
        return load_settings(self.paths.settings_file)

    def remembered(self, component, key: str, restore: Callable[[dict, str], dict] | None = None, save: bool = True):
        """A form field whose value is saved in settings.json on every change and restored on load.

        `restore(settings, lang)` gives the properties to set on load (default: the saved value,
        when there is one); a page reload then shows the user's choices, not the server's start.
        With `save=False` the field only follows the saved value (a second view of one setting).
        """
        if save:
            if key not in REMEMBERED:  # settings.remember would drop it silently: the field would never come back
                raise ValueError(f"{key!r} is not in settings.REMEMBERED")
            component.change(lambda value: self.remember(**{key: value}), inputs=component, api_visibility="private",
                             show_progress="hidden")
        self._restorers.append((component, restore or (lambda saved, _lang: {"value": saved[key]} if key in saved else {})))
        return component

    def on_show(self, component, update: Callable[..., Any], inputs: list | None = None) -> None:
        """Update `component` whenever its tab is opened (a project made or a run started on another tab).

        `update(*inputs, lang)` returns the component's new value or gr.update.
        """
        self._on_show.append((component, update, list(inputs or [])))

    def take_on_show(self) -> list[tuple[Any, Callable[..., Any], list]]:
        taken, self._on_show = self._on_show, []
        return taken

    def load_updates(self, lang: str) -> tuple[list, list]:
        """(components, updates) for a page load: labels in `lang` merged with the remembered values."""
        props: dict[int, tuple[Any, dict]] = {}
        for component, specs in self._labels:
            props.setdefault(id(component), (component, {}))[1].update(
                {prop: self.text(spec, lang) for prop, spec in specs.items()})
        saved = self.settings()
        for component, restore in self._restorers:
            props.setdefault(id(component), (component, {}))[1].update(restore(saved, lang))
        return [component for component, _ in props.values()], [gr.update(**values) for _, values in props.values()]

    def remember(self, **values) -> None:
        remember(self.paths.settings_file, **values)


def build_app(paths: AppPaths, runner: JobRunner, language: str) -> gr.Blocks:
    from ltxtrainer.ui import tab_advanced, tab_dataset, tab_environment, tab_export, tab_pipeline, tab_runs

    ui = UI(paths=paths, runner=runner, language=language)
    with gr.Blocks(title="LTX-Video LoRA Trainer") as demo:
        ui.lang = gr.State(language)
        with gr.Row():
            ui.tr(gr.Markdown(t("app.title", language)), value="app.title")
            switch = ui.tr(
                gr.Radio([(LANGUAGE_NAMES[code], code) for code in LANGUAGES], value=language,
                         label=t("app.language", language), scale=0, min_width=220),
                label="app.language",
            )
        # The card and model folders, redone in the new language on every switch (no torch: quick).
        ui.tr(gr.Markdown(tab_environment.header_text(paths, language)),
              value=lambda lang: tab_environment.header_text(paths, lang))
        tab_builders = (
            ("tab.pipeline", tab_pipeline), ("tab.advanced", tab_advanced), ("tab.dataset", tab_dataset),
            ("tab.runs", tab_runs), ("tab.export", tab_export), ("tab.environment", tab_environment),
        )
        with gr.Tabs():
            for key, module in tab_builders:
                with ui.tr(gr.Tab(t(key, language), id=key.split(".")[1]), label=key) as tab:
                    module.build(ui)
                _refresh_when_shown(ui, tab)

        def switch_language(lang: str):
            ui.remember(language=lang)
            return [lang, *ui.label_updates(lang)]

        switch.change(switch_language, inputs=switch, outputs=[ui.lang, *ui.labelled], api_name="set_language")

        loaded, _ = ui.load_updates(language)

        def on_load():
            """A (re)opened page gets the remembered language and form values (the GPU/model header is a label)."""
            lang = ui.settings().get("language", language)
            return [lang, gr.update(value=lang), *ui.load_updates(lang)[1]]

        # Events that fire by themselves (page load, restored values, lists refreshed) hide their progress:
        # gradio 6.31 announces a finished event in a screen-reader region with its untranslated key
        # "common.complete", which the 中文 scan found on the page.
        demo.load(on_load, outputs=[ui.lang, switch, *loaded], api_visibility="private", show_progress="hidden")
    return demo


def _refresh_when_shown(ui: UI, tab: gr.Tab) -> None:
    """Wire the tab's on_show updates to its selection, so its lists are never stale when opened."""
    hooks = ui.take_on_show()
    if not hooks:
        return
    inputs = [component for _, _, hook_inputs in hooks for component in hook_inputs]

    def refresh(*values):
        *values, lang = values
        updates, position = [], 0
        for _, update, hook_inputs in hooks:
            updates.append(update(*values[position:position + len(hook_inputs)], lang))
            position += len(hook_inputs)
        return updates if len(updates) > 1 else updates[0]  # one output takes the update itself

    tab.select(refresh, inputs=[*inputs, ui.lang], outputs=[component for component, _, _ in hooks],
               api_visibility="private", show_progress="hidden")


def free_port(preferred: int = DEFAULT_PORT, host: str = "127.0.0.1", attempts: int = 100) -> int:
    """`preferred` or the next port after it that nobody listens on."""
    for port in range(preferred, preferred + attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in {preferred}-{preferred + attempts - 1}")


def launch(
    paths: AppPaths,
    *,
    language: str,
    port: int | None = None,
    listen: bool = False,
    share: bool = False,
    auth: tuple[str, str] | None = None,
    prevent_thread_lock: bool = False,
    runner: JobRunner | None = None,
):
    """Start the server on 127.0.0.1 (or all interfaces with `listen`); returns (blocks, url).

    Anything beyond this machine requires `auth`: the GUI starts processes and reads and writes
    files, which nobody on the network should do anonymously.
    """
    if (listen or share) and not auth:
        raise ValueError("listen/share need a username and password")
    host = "0.0.0.0" if listen else "127.0.0.1"
    runner = runner or JobRunner(paths.jobs)
    demo = build_app(paths, runner, language)
    chosen = free_port(port or DEFAULT_PORT, "127.0.0.1" if not listen else host)
    demo.queue(default_concurrency_limit=4)
    _, url, _ = demo.launch(
        server_name=host, server_port=chosen, share=share, auth=auth, prevent_thread_lock=prevent_thread_lock,
        allowed_paths=[str(paths.outputs), str(paths.train_date), str(paths.datasets)], quiet=True,
        inbrowser=should_open_browser(),  # a person at a desktop expects the browser to open
    )
    return demo, url or f"http://{host}:{chosen}/"


__all__ = ["UI", "actions", "build_app", "free_port", "launch"]
