"""Tab 5, 转换为ComfyUI格式 / ComfyUI export: pick a LoRA under outputs/, convert, see where it went.

Converted files go to their own folder, outputs/comfyui/, as in the seed GUI; the conversion
runs as a job through the queue like every other script.
"""

from __future__ import annotations

import gradio as gr

from ltxtrainer.ui import actions
from ltxtrainer.ui.i18n import t
from ltxtrainer.ui.runs import list_loras
from ltxtrainer.ui.workspace import UnsafePathError


def build(ui) -> None:
    lang = ui.language
    with gr.Row():
        lora = ui.tr(gr.Dropdown(list_loras(ui.paths.outputs), label=t("exp.lora", lang), scale=4), label="exp.lora")
        refresh = ui.tr(gr.Button(t("common.refresh", lang), scale=0), value="common.refresh")
    typed = ui.tr(gr.Textbox(label=t("exp.path", lang), placeholder="APT_768x512x49/lora_weights.safetensors"),
                  label="exp.path")
    convert = ui.tr(gr.Button(t("exp.convert", lang), variant="primary"), value="exp.convert")
    message = gr.Markdown()

    def convert_lora(chosen, typed_path, lang):
        relative = (typed_path or "").strip() or chosen
        if not relative:
            return t("exp.no_lora", lang)
        try:
            job = actions.export_lora(ui.runner, ui.paths, relative)
        except UnsafePathError as error:
            return t("msg.refused", lang, error=error)
        except FileNotFoundError:
            return t("exp.missing", lang, path=relative)
        return t("msg.queued", lang, title=job.title) + "  \n" + t("exp.where", lang, path=job.meta["output"])

    refresh.click(lambda: gr.update(choices=list_loras(ui.paths.outputs)), outputs=lora, api_name="list_loras")
    convert.click(convert_lora, inputs=[lora, typed, ui.lang], outputs=message, api_name="convert_lora")
