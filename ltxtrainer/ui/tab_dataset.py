"""Tab 3, 数据集与标注 / Dataset and captions: watch each clip, fix its caption, re-caption one.

Captions are saved to the clip's .txt and captions.json together (the captioning stage reads
the .txt first, so a hand edit is never overwritten by a re-run).
"""

from __future__ import annotations

import gradio as gr

from ltxtrainer.pipeline import PipelineError
from ltxtrainer.ui import actions, monitor, tab_pipeline
from ltxtrainer.ui.i18n import t
from ltxtrainer.ui.jobs import DuplicateJobError
from ltxtrainer.ui.workspace import (
    UnsafePathError,
    clip_path,
    clip_reference,
    clips_folder,
    list_clips,
    read_caption,
    save_caption,
)

_REFUSED = (PipelineError, UnsafePathError, FileNotFoundError, ValueError)
TAB = "dataset"


def build(ui) -> None:
    lang = ui.language
    saved = ui.settings()
    with gr.Row():
        project = ui.remembered(
            ui.tr(gr.Dropdown(tab_pipeline.project_choices(ui, lang), value=tab_pipeline.preselected_project(ui, saved),
                              label=t("common.project", lang), scale=4), label="common.project"),
            "project", lambda saved, lang: {"choices": tab_pipeline.project_choices(ui, lang),
                                            "value": tab_pipeline.preselected_project(ui, saved)}, save=False,
        )
        refresh = ui.tr(gr.Button(t("common.refresh", lang), scale=0), value="common.refresh")
    folder = gr.Markdown()
    with gr.Row():
        with gr.Column(scale=1):
            clip = ui.tr(gr.Dropdown([], label=t("ds.clip", lang)), label="ds.clip")
            with gr.Row():
                preview = ui.tr(gr.Video(label=t("ds.preview", lang), interactive=False, height=280), label="ds.preview")
                reference = ui.tr(gr.Video(label=t("ds.reference", lang), interactive=False, height=280, visible=False,
                                           elem_id="dataset-reference"), label="ds.reference")
        with gr.Column(scale=1):
            caption = ui.tr(gr.Textbox(label=t("ds.caption", lang), lines=8), label="ds.caption")
            save = ui.tr(gr.Button(t("ds.save", lang), variant="primary"), value="ds.save")
            captioner = ui.tr(gr.Dropdown(tab_pipeline.captioner_choices(lang), value=saved.get("captioner", "api"),
                                          label=t("common.captioner", lang)),
                              choices=tab_pipeline.captioner_choices, label="common.captioner")
            api_base_url = ui.tr(gr.Textbox(saved.get("api_base_url", ""), label=t("common.api_base_url", lang)),
                                 label="common.api_base_url")
            api_model = ui.tr(gr.Textbox(saved.get("api_model", ""), label=t("common.api_model", lang)),
                              label="common.api_model")
            api_key = ui.tr(gr.Textbox("", type="password", label=t("common.api_key", lang),
                                       info=t("common.api_key_info", lang)), label="common.api_key",
                            info="common.api_key_info")
            recaption = ui.tr(gr.Button(t("ds.recaption", lang)), value="ds.recaption")
            message = gr.Markdown()
            banner = gr.HTML(elem_id="dataset-banner")
    job_id = gr.State(None)

    def show_project(name, lang):
        if not name:
            return "", gr.update(choices=[], value=None)
        try:
            clips = list_clips(ui.paths, name)
            where = t("ds.folder", lang, path=clips_folder(ui.paths, name))
        except _REFUSED as error:
            return t("msg.refused", lang, error=error), gr.update(choices=[], value=None)
        if not clips:
            where += "  \n" + t("ds.no_clips", lang)
        return where, gr.update(choices=clips, value=clips[0] if clips else None)

    def show_clip(name, clip_name, lang):
        """The clip, its caption, and beside it its IC-LoRA reference when it has one."""
        hidden = gr.update(value=None, visible=False)
        if not name or not clip_name:
            return None, "", hidden
        try:
            video, text = str(clip_path(ui.paths, name, clip_name)), read_caption(ui.paths, name, clip_name)
        except _REFUSED as error:
            return None, t("msg.refused", lang, error=error), hidden
        saved = ui.settings()
        found = clip_reference(ui.paths, name, clip_name, saved.get("reference_kind"), saved.get("reference_dir"))
        return video, text, gr.update(value=str(found), visible=True) if found else hidden

    def save_text(name, clip_name, text, lang):
        if not text or not text.strip():
            return t("ds.empty_caption", lang)
        try:
            path = save_caption(ui.paths, name, clip_name, text)
        except _REFUSED as error:
            return t("msg.refused", lang, error=error)
        return t("ds.saved", lang, path=path)

    def recaption_clip(name, clip_name, captioner, api_base_url, api_model, api_key, lang):
        if not name or not clip_name:
            return t("msg.no_project", lang), gr.skip()
        try:
            job = actions.recaption_clip(ui.runner, ui.paths, name, clip_name, captioner, api_base_url, api_model,
                                         api_key)
        except DuplicateJobError as error:
            return t("msg.duplicate", lang, title=monitor.job_title(error.existing, lang)), gr.skip()
        except _REFUSED as error:
            return t("msg.refused", lang, error=error), gr.skip()
        return "", job.id

    def fresh_projects(current, lang):
        names = [name for _, name in tab_pipeline.project_choices(ui, lang)]
        value = current if current in names else tab_pipeline.preselected_project(ui, ui.settings())
        return gr.update(choices=tab_pipeline.project_choices(ui, lang), value=value)

    refresh.click(fresh_projects, inputs=[project, ui.lang], outputs=project, api_visibility="private")
    def fresh_clips(name, current, lang):
        """The project's clips as they are now (split since the page opened?); the chosen one kept."""
        if not name:
            return gr.update()  # a project chosen by the same opening fills them through project.change
        try:
            clips = list_clips(ui.paths, name)
        except _REFUSED:
            return gr.update(choices=[], value=None)
        return gr.update(choices=clips, value=current if current in clips else (clips[0] if clips else None))

    ui.on_show(project, fresh_projects, [project])
    ui.on_show(clip, fresh_clips, [project, clip])
    project.change(show_project, inputs=[project, ui.lang], outputs=[folder, clip], api_name="list_clips",
                   show_progress="hidden")
    clip.change(show_clip, inputs=[project, clip, ui.lang], outputs=[preview, caption, reference], api_name="show_clip",
                show_progress="hidden")
    save.click(save_text, inputs=[project, clip, caption, ui.lang], outputs=message, api_name="save_caption")
    recaption.click(recaption_clip, inputs=[project, clip, captioner, api_base_url, api_model, api_key, ui.lang],
                    outputs=[message, job_id], api_name="recaption_clip")
    timer = gr.Timer(tab_pipeline.POLL_S)
    timer.tick(lambda job, lang: tab_pipeline.tab_outcome_html(ui, job, TAB, lang), inputs=[job_id, ui.lang], outputs=banner,
               api_name="poll_dataset", show_progress="hidden")
