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
from ltxtrainer.ui.settings import load_settings, remember
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
                with ui.tr(gr.Tab(t(key, language), id=key.split(".")[1]), label=key):
                    module.build(ui)

        def switch_language(lang: str):
            ui.remember(language=lang)
            return [lang, *ui.label_updates(lang)]

        switch.change(switch_language, inputs=switch, outputs=[ui.lang, *ui.labelled], api_name="set_language")

        def on_load():
            """A (re)opened page gets the remembered language (the GPU/model header is one of the labels)."""
            lang = ui.settings().get("language", language)
            return [lang, gr.update(value=lang), *ui.label_updates(lang)]

        demo.load(on_load, outputs=[ui.lang, switch, *ui.labelled], api_name=False)
    return demo


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
