"""Tab 2, 高级训练参数 / Advanced parameters: every config field, generated from the schema.

Each field has a short label in the user's language, and under it its explanation, its limits
(both bounds, from the schema) and its YAML key in small print. The widgets carry no limits of
their own; the schema checks the values and its messages are shown as they are, so a value
refused here is refused for the same reason on the command line. The model and data folders are
chosen from what exists and checked before a job is queued, so a wrong path is named here rather
than minutes later on another tab.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from ltxtrainer.config import ConfigError, TrainerConfig, load_config
from ltxtrainer.models.folder import check_model_folder
from ltxtrainer.pipeline import TEMPLATES
from ltxtrainer.ui import actions, memory_line, monitor, tab_pipeline
from ltxtrainer.ui.config_form import (
    FormField,
    config_from_values,
    data_folder_usable,
    form_fields,
    precomputed_sets,
    values_from_config,
)
from ltxtrainer.ui.i18n import field_hint, field_label, section_label, t
from ltxtrainer.ui.jobs import DuplicateJobError
from ltxtrainer.ui.tab_environment import model_problem_text
from ltxtrainer.ui.workspace import AppPaths, UnsafePathError

TAB = "advanced"
MODEL_FIELD = "model.model_source"
DATA_FIELD = "data.preprocessed_data_root"
# The fields that change the memory a run needs: editing one redoes the memory line.
MEMORY_FIELDS = (
    MODEL_FIELD, "model.training_mode", "lora.enabled", "lora.rank", "lora.target_modules", "optimization.batch_size",
    "optimization.optimizer_type", "optimization.enable_gradient_checkpointing",
    "optimization.first_frame_conditioning_p", "acceleration.mixed_precision_mode", "acceleration.quantization",
    "acceleration.block_offload", "validation.prompts", "validation.video_dims", "validation.interval",
)


def _number(value: float) -> str:
    return f"{value:g}"


def hint(field: FormField, lang: str) -> str:
    """The explanation, the limits with both bounds, and the YAML key."""
    parts = [field_hint(field.path, lang)]
    if field.minimum is not None and field.maximum is not None:
        parts.append(t("adv.range", lang, low=_number(field.minimum), high=_number(field.maximum)))
    elif field.minimum is not None:
        parts.append(t("adv.at_least", lang, low=_number(field.minimum)))
    elif field.maximum is not None:
        parts.append(t("adv.at_most", lang, high=_number(field.maximum)))
    # a section's switch is no key of its own: it writes (or leaves out) the section
    parts.append(t("adv.key", lang, path=field.path.rsplit(".", 1)[0] if field.kind == "section" else field.path))
    return " · ".join(part for part in parts if part)


def _shown(paths: AppPaths, folder: Path) -> str:
    """A folder as a config names it: relative to the GUI's root (jobs run there) when inside it."""
    return folder.relative_to(paths.root).as_posix() if folder.is_relative_to(paths.root) else str(folder)


def model_choices(paths: AppPaths) -> list[str]:
    folders = sorted(p for p in paths.models.iterdir() if p.is_dir()) if paths.models.is_dir() else []
    return [_shown(paths, folder) for folder in folders if not folder.name.startswith(".")]


def data_choices(paths: AppPaths) -> list[str]:
    return [_shown(paths, folder) for folder in precomputed_sets(paths.datasets)]


def _widget(paths: AppPaths, field: FormField, value, lang: str):
    label, info = field_label(field.path, lang), hint(field, lang)
    if field.path in (MODEL_FIELD, DATA_FIELD):
        choices = model_choices(paths) if field.path == MODEL_FIELD else data_choices(paths)
        return gr.Dropdown(choices, value=value or None, label=label, info=info, allow_custom_value=True)
    if field.kind in ("bool", "section"):
        return gr.Checkbox(value=bool(value), label=label, info=info)
    if field.kind == "choice":
        choices = ([("—", "")] if field.optional else []) + [(str(c), c) for c in field.choices]
        return gr.Dropdown(choices, value=value if value is not None else "", label=label, info=info)
    if field.kind in ("int", "float"):
        # No minimum/maximum on the widget: gradio would refuse first, with its own message.
        return gr.Number(value=value, label=label, info=info, precision=0 if field.kind == "int" else None)
    lines = 3 if field.kind in ("lines", "mapping") else 1
    return gr.Textbox(value=value or "", label=label, info=info, lines=lines)


def section_of(path: str) -> str:
    return path.split(".")[0] if "." in path else "general"


def default_source(paths: AppPaths, configs: list[str]) -> str | None:
    """The template that fits this machine's card, when configs/ holds it."""
    name = TEMPLATES[memory_line.suggested_template(paths, memory_line.detect_card())]
    return name if name in configs else None


def folder_problems(paths: AppPaths, config: TrainerConfig, lang: str) -> list[str]:
    """What is wrong with the model and data folders a config names, in `lang` ([] when both are usable)."""
    problems = []
    # Jobs run in the GUI's root, so a relative folder means one there; anything else (an absolute
    # folder, a repo id in the local cache) is looked up as the trainer looks it up.
    source = config.model.model_source
    in_root = paths.root / source
    report = check_model_folder(in_root if not Path(source).is_absolute() and in_root.is_dir() else source)
    if not report.ok:
        details = t("memory.change.separator", lang).join(model_problem_text(line, lang) for line in report.problems)
        problems.append(t("adv.bad_model", lang, path=report.path, problems=details))
    data = Path(config.data.preprocessed_data_root)
    data = data if data.is_absolute() else paths.root / data
    if not data_folder_usable(data):
        problems.append(t("adv.bad_data", lang, path=data))
    return problems


def form_memory_text(paths: AppPaths, values: list, lang: str) -> str:
    """The memory line of the form as it stands, or why there is none (a value the schema refuses)."""
    try:
        config = config_from_values(values)
    except ConfigError:
        return t("memory.form_invalid", lang)
    return memory_line.config_memory_text(paths, config, lang, memory_line.detect_card())


def build(ui) -> None:
    lang = ui.language
    paths: AppPaths = ui.paths
    ui.tr(gr.Markdown(t("adv.intro", lang)), value="adv.intro")
    configs = actions.list_configs(paths)
    saved = ui.settings().get("advanced_config")
    initial = saved if saved in configs else default_source(paths, configs)
    with gr.Row():
        source = ui.tr(gr.Dropdown(configs, value=initial, label=t("adv.source", lang), scale=3), label="adv.source")
        load = ui.tr(gr.Button(t("adv.load", lang), scale=0), value="adv.load")

    fields = form_fields()
    initial_values = values_from_config(load_config(paths.configs / initial)) if initial else [
        None if f.kind in ("lines", "mapping", "dims", "text") else f.default for f in fields]
    widgets = []
    sections: dict[str, list[tuple[FormField, object]]] = {}
    for field, value in zip(fields, initial_values, strict=True):
        sections.setdefault(section_of(field.path), []).append((field, value))
    for section, members in sections.items():
        accordion = gr.Accordion(section_label(section, lang), open=section in ("optimization", "lora", "model", "data"))
        with ui.tr(accordion, label=lambda lang, s=section: section_label(s, lang)):
            with gr.Row(equal_height=False):
                for field, value in members:
                    widget = _widget(paths, field, value, lang)
                    labels = {"label": lambda lang, p=field.path: field_label(p, lang),
                              "info": lambda lang, f=field: hint(f, lang)}
                    if field.path == MODEL_FIELD:  # folders appear while the GUI runs: list them afresh
                        labels["choices"] = lambda lang: model_choices(paths)
                    if field.path == DATA_FIELD:
                        labels["choices"] = lambda lang: data_choices(paths)
                    ui.tr(widget, **labels)
                    widgets.append(widget)
    memory = gr.Markdown(form_memory_text(paths, list(initial_values), lang))
    with gr.Row():
        name = ui.tr(gr.Textbox("my_lora", label=t("adv.name", lang), scale=3), label="adv.name")
        save = ui.tr(gr.Button(t("adv.save", lang)), value="adv.save")
        start = ui.tr(gr.Button(t("adv.start", lang), variant="primary"), value="adv.start")
    result = gr.Markdown()
    banner = gr.HTML(elem_id="advanced-banner")
    job_id = gr.State(None)

    def load_values(config_name, lang):
        try:
            path = actions.config_file_for(paths, config_name or "")
            values = values_from_config(load_config(path))
        except (ConfigError, ValueError) as error:
            return [gr.skip()] * len(widgets) + [t("msg.invalid_config", lang, error=error)]
        ui.remember(advanced_config=path.name)
        return values + [t("msg.loaded_config", lang, path=path)]

    def save_form(values: list, config_name: str, lang: str, check_folders: bool = False):
        """(message, saved path or None): the schema's messages for a bad value, as they are."""
        try:
            config = config_from_values(values)
        except ConfigError as error:
            return t("msg.invalid_config", lang, error=error), None
        problems = folder_problems(paths, config, lang) if check_folders else []
        if problems:
            return "  \n".join(["❌ " + problem for problem in problems] + [t("adv.not_queued", lang)]), None
        try:
            path = actions.save_named_config(paths, config, config_name or "")
        except (ValueError, UnsafePathError):
            return t("msg.bad_name", lang, name=config_name), None
        ui.remember(advanced_config=path.name)
        return t("msg.saved_config", lang, path=path), path

    def save_values(*values):
        *values, config_name, lang = values
        message, path = save_form(list(values), config_name, lang)
        return message, gr.update(choices=actions.list_configs(paths), value=path.name) if path else gr.skip()

    def start_values(*values):
        *values, config_name, lang = values
        message, path = save_form(list(values), config_name, lang, check_folders=True)
        if path is None:
            return message, gr.skip(), gr.skip()
        choices = gr.update(choices=actions.list_configs(paths), value=path.name)
        try:
            job = actions.start_training(ui.runner, paths, path, tab=TAB)
        except DuplicateJobError as error:
            return message + "  \n" + t("msg.duplicate", lang, title=monitor.job_title(error.existing, lang)), choices, \
                gr.skip()
        return message, choices, job.id  # the banner below follows the job to its outcome

    def estimate(*values):
        *values, lang = values
        return form_memory_text(paths, list(values), lang)

    by_path = {field.path: widget for field, widget in zip(fields, widgets, strict=True)}
    for trigger in [by_path[path].change for path in MEMORY_FIELDS] + [ui.lang.change]:
        trigger(estimate, inputs=[*widgets, ui.lang], outputs=memory, api_visibility="private", show_progress="hidden")
    load.click(load_values, inputs=[source, ui.lang], outputs=[*widgets, result], api_name="load_config")
    save.click(save_values, inputs=[*widgets, name, ui.lang], outputs=[result, source], api_name="save_config")
    start.click(start_values, inputs=[*widgets, name, ui.lang], outputs=[result, source, job_id],
                api_name="start_training")
    timer = gr.Timer(tab_pipeline.POLL_S)
    timer.tick(lambda job, lang: tab_pipeline.tab_outcome_html(ui, job, TAB, lang), inputs=[job_id, ui.lang],
               outputs=banner, api_name="poll_advanced", show_progress="hidden")
