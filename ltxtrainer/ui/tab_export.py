"""Tab 5, 转换为ComfyUI格式 / ComfyUI export: pick a LoRA under outputs/, convert, see where it went.

Converted files go to their own folder, outputs/comfyui/, as in the seed GUI; the conversion
runs as a job through the queue like every other script.
"""

from __future__ import annotations

import gradio as gr

from ltxtrainer.ui import actions, monitor
from ltxtrainer.ui.i18n import t
from ltxtrainer.ui.jobs import DuplicateJobError
from ltxtrainer.ui.runs import list_loras
from ltxtrainer.ui.tab_pipeline import POLL_S, refusal_html, tab_outcome_html
from ltxtrainer.ui.workspace import UnsafePathError

TAB = "export"


def build(ui) -> None:
    lang = ui.language
    with gr.Row():
        lora = ui.tr(gr.Dropdown(list_loras(ui.paths.outputs), label=t("exp.lora", lang), scale=4), label="exp.lora")
        refresh = ui.tr(gr.Button(t("common.refresh", lang), scale=0), value="common.refresh")
    typed = ui.tr(gr.Textbox(label=t("exp.path", lang), placeholder="APT_768x512x49/lora_weights.safetensors"),
                  label="exp.path")
    convert = ui.tr(gr.Button(t("exp.convert", lang), variant="primary"), value="exp.convert")
    message = gr.HTML(elem_id="export-message")
    banner = gr.HTML(elem_id="export-banner")
    job_id = gr.State(None)

    def convert_lora(chosen, typed_path, lang):
        title = t("exp.convert", lang)
        relative = (typed_path or "").strip() or chosen
        if not relative:
            return refusal_html(title, t("exp.no_lora", lang), lang), gr.skip()
        try:
            job = actions.export_lora(ui.runner, ui.paths, relative)
        except DuplicateJobError as error:
            return refusal_html(title, t("msg.duplicate", lang, title=monitor.job_title(error.existing, lang)), lang), gr.skip()
        except UnsafePathError as error:
            return refusal_html(title, error, lang), gr.skip()
        except FileNotFoundError:
            return refusal_html(title, t("exp.missing", lang, path=relative), lang), gr.skip()
        return t("exp.where", lang, path=job.meta["output"]), job.id

    refresh.click(lambda: gr.update(choices=list_loras(ui.paths.outputs)), outputs=lora, api_name="list_loras")
    ui.on_show(lora, lambda lang: gr.update(choices=list_loras(ui.paths.outputs)))
    convert.click(convert_lora, inputs=[lora, typed, ui.lang], outputs=[message, job_id], api_name="convert_lora")
    timer = gr.Timer(POLL_S)
    timer.tick(lambda job, lang: tab_outcome_html(ui, job, TAB, lang), inputs=[job_id, ui.lang], outputs=banner,
               api_name="poll_export", show_progress="hidden")
