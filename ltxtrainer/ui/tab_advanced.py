"""Tab 2, 高级训练参数 / Advanced parameters: every config field, generated from the schema.

The widgets carry no limits of their own; the schema checks the values and its messages are
shown as they are, so a value refused here is refused for the same reason on the command line.
"""

from __future__ import annotations

import gradio as gr

from ltxtrainer.config import ConfigError, load_config
from ltxtrainer.ui import actions
from ltxtrainer.ui.config_form import ENABLED, FormField, config_from_values, form_fields, values_from_config
from ltxtrainer.ui.i18n import field_label, t
from ltxtrainer.ui.workspace import UnsafePathError

DEFAULT_SOURCE = "tiny_demo.yaml"


def hint(field: FormField, lang: str) -> str:
    limits = field.limits()
    return (t("adv.limits", lang, limits=limits) if limits else "") + field.description


def _widget(field: FormField, value, lang: str):
    label = field_label(field.path, lang)
    info = hint(field, lang)
    if field.kind in ("bool", "section"):
        return gr.Checkbox(value=bool(value), label=label, info=info or (t("adv.section_on", lang)
                                                                                  if field.kind == "section" else None))
    if field.kind == "choice":
        choices = ([("—", "")] if field.optional else []) + [(str(c), c) for c in field.choices]
        return gr.Dropdown(choices, value=value if value is not None else "", label=label, info=info)
    if field.kind in ("int", "float"):
        # No minimum/maximum on the widget: gradio would refuse first, with its own message.
        return gr.Number(value=value, label=label, info=info, precision=0 if field.kind == "int" else None)
    lines = 3 if field.kind in ("lines", "mapping") else 1
    return gr.Textbox(value=value or "", label=label, info=info, lines=lines)


def section_title(path: str) -> str:
    return path.split(".")[0] if "." in path else "general"


def build(ui) -> None:
    lang = ui.language
    ui.tr(gr.Markdown(t("adv.intro", lang)), value="adv.intro")
    configs = actions.list_configs(ui.paths)
    saved = ui.settings().get("advanced_config")
    initial = saved if saved in configs else (DEFAULT_SOURCE if DEFAULT_SOURCE in configs else None)
    with gr.Row():
        source = ui.tr(gr.Dropdown(configs, value=initial, label=t("adv.source", lang), scale=3), label="adv.source")
        load = ui.tr(gr.Button(t("adv.load", lang), scale=0), value="adv.load")

    fields = form_fields()
    initial_values = values_from_config(load_config(ui.paths.configs / initial)) if initial else [
        None if f.kind in ("lines", "mapping", "dims", "text") else f.default for f in fields]
    widgets = []
    sections: dict[str, list[tuple[FormField, object]]] = {}
    for field, value in zip(fields, initial_values, strict=True):
        sections.setdefault(section_title(field.path), []).append((field, value))
    for title, members in sections.items():
        with gr.Accordion(title, open=title in ("optimization", "lora", "model")):
            with gr.Row(equal_height=False):
                for field, value in members:
                    widget = _widget(field, value, lang)
                    ui.tr(widget, label=lambda lang, p=field.path: field_label(p, lang),
                          info=lambda lang, f=field: hint(f, lang) or (t("adv.section_on", lang)
                                                                       if f.path.endswith(ENABLED) else ""))
                    widgets.append(widget)
    with gr.Row():
        name = ui.tr(gr.Textbox("my_lora", label=t("adv.name", lang), scale=3), label="adv.name")
        save = ui.tr(gr.Button(t("adv.save", lang)), value="adv.save")
        start = ui.tr(gr.Button(t("adv.start", lang), variant="primary"), value="adv.start")
    result = gr.Markdown()

    def load_values(config_name, lang):
        try:
            path = actions.config_file_for(ui.paths, config_name or "")
            values = values_from_config(load_config(path))
        except (ConfigError, ValueError) as error:
            return [gr.skip()] * len(widgets) + [t("msg.invalid_config", lang, error=error)]
        ui.remember(advanced_config=path.name)
        return values + [t("msg.loaded_config", lang, path=path)]

    def save_form(values: list, config_name: str, lang: str):
        """(message, saved path or None): the schema's messages for a bad value, as they are."""
        try:
            config = config_from_values(values)
            path = actions.save_named_config(ui.paths, config, config_name or "")
        except ConfigError as error:
            return t("msg.invalid_config", lang, error=error), None
        except (ValueError, UnsafePathError):
            return t("msg.bad_name", lang, name=config_name), None
        ui.remember(advanced_config=path.name)
        return t("msg.saved_config", lang, path=path), path

    def save_values(*values):
        *values, config_name, lang = values
        message, path = save_form(list(values), config_name, lang)
        return message, gr.update(choices=actions.list_configs(ui.paths), value=path.name) if path else gr.skip()

    def start_values(*values):
        *values, config_name, lang = values
        message, path = save_form(list(values), config_name, lang)
        if path is None:
            return message, gr.skip()
        job = actions.start_training(ui.runner, ui.paths, path)
        message += "  \n" + t("msg.queued", lang, title=job.title)
        return message, gr.update(choices=actions.list_configs(ui.paths), value=path.name)

    load.click(load_values, inputs=[source, ui.lang], outputs=[*widgets, result], api_name="load_config")
    save.click(save_values, inputs=[*widgets, name, ui.lang], outputs=[result, source], api_name="save_config")
    start.click(start_values, inputs=[*widgets, name, ui.lang], outputs=[result, source], api_name="start_training")
