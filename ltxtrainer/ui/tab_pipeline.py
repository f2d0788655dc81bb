"""Tab 1, 一键训练流水线 / One-click pipeline: choose a project and a size, start, watch.

The monitor below the form follows the server's current job (whichever tab started it), so a
refreshed or reopened page shows the running job, its stages, log, loss curve and samples.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from ltxtrainer.pipeline import TEMPLATES
from ltxtrainer.ui import actions, memory_line
from ltxtrainer.ui.i18n import t
from ltxtrainer.ui.jobs import Job
from ltxtrainer.ui.runs import (
    METRICS_FILE,
    loss_points,
    progress_summary,
    read_jsonl,
    read_pipeline_status,
    sample_videos,
)
from ltxtrainer.ui.workspace import list_projects

CAPTIONERS = ("api", "llava", "qwen", "demo")
STEP_KEYS = {step: f"step.{step}" for step in actions.PIPELINE_STEPS}
POLL_S = 1.5
MAX_VIDEOS = 8


def project_choices(ui, lang: str) -> list[tuple[str, str]]:
    return [(t("common.project_choice", lang, name=p.name, clips=p.clips, duration=p.duration_s), p.name)
            for p in list_projects(ui.paths)]


def resolution_choices(lang: str) -> list[tuple[str, str]]:
    return [(f"[{t(key, lang)}] {w}x{h}", f"{w}x{h}") for key, w, h in actions.RESOLUTIONS]


def captioner_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(f"captioner.{name}", lang), name) for name in CAPTIONERS]


def template_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(f"template.{name}", lang), name) for name in TEMPLATES]


def step_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(key, lang), step) for step, key in STEP_KEYS.items()]


def memory_text(ui, template: str, resolution: str, frames, lang: str) -> str:
    """The memory line: the template's estimate against the detected card, in `lang`."""
    return memory_line.memory_text(ui.paths, template, resolution, frames, lang, memory_line.detect_card())


# ---- the monitor -------------------------------------------------------------------------------


def _eta(seconds) -> str:
    if not seconds:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def job_line(ui, job: Job | None, lang: str) -> str:
    if job is None:
        return t("job.none", lang)
    line = t("job.line", lang, title=job.title, status=t(f"status.{job.status}", lang))
    queued = len(ui.runner.queue())
    return line + (" " + t("job.queue", lang, count=queued) if queued else "")


def stages_table(job: Job | None, lang: str) -> str:
    if job is None or not job.meta.get("run_dir"):
        return ""
    status = read_pipeline_status(Path(job.meta["run_dir"])) if job.kind == "pipeline" else {}
    stages = status.get("stages") or {}
    if not stages:
        return ""
    rows = [t("stages.header", lang)]
    for stage, entry in stages.items():
        state = entry.get("status", "pending")
        label = t(f"step.{stage}", lang) if f"step.{stage}" in STEP_KEYS.values() or stage == "export" else stage
        message = str(entry.get("message") or "").replace("|", "/").replace("\n", " ")[:160]
        rows.append(f"| {label} | {t(f'status.{state}', lang) if state else ''} | {message} |")
    return "\n".join(rows)


def progress_text(summary: dict, lang: str) -> str:
    lines = []
    if summary["stage"] and summary["total"]:
        lines.append(t("job.stage", lang, stage=summary["stage"], done=summary["done"], total=summary["total"]))
    if summary["step"] is not None and summary["loss"] is not None:
        lines.append(t("job.step", lang, step=summary["step"], total=summary["total_steps"], loss=summary["loss"],
                       eta=_eta(summary["eta_s"])))
    if summary["error"]:
        lines.append(t("job.error", lang, message=summary["error"]))
    return "  \n".join(lines)


def loss_frame(job: Job | None, events: list[dict]) -> pd.DataFrame:
    """Loss by step from the run's metrics.jsonl (all of a resumed run), else from the job's log."""
    records = read_jsonl(Path(job.meta["run_dir"]) / METRICS_FILE) if job and job.meta.get("run_dir") else []
    points = loss_points(records or events)
    return pd.DataFrame(points, columns=["step", "loss"])


def videos_of(job: Job | None) -> list[tuple[str, str]]:
    if job is None or not job.meta.get("run_dir"):
        return []
    by_step = sample_videos(Path(job.meta["run_dir"]))
    return [(str(video), f"step {step}") for step in sorted(by_step, reverse=True) for video in by_step[step]][:MAX_VIDEOS]


def poll(ui, lang: str, shown_videos: list, shown_points: int):
    """Everything the monitor shows; the plot and gallery only when they changed (no flicker)."""
    job = ui.runner.current()
    events = ui.runner.events(job.id) if job else []
    frame = loss_frame(job, events)
    videos = videos_of(job)
    video_paths = [path for path, _ in videos]
    return (
        job_line(ui, job, lang),
        stages_table(job, lang),
        progress_text(progress_summary(events), lang),
        ui.runner.read_log(job.id) if job else "",
        frame if len(frame) != shown_points else gr.skip(),
        videos if video_paths != shown_videos else gr.skip(),
        video_paths,
        len(frame),
    )


def stop_message(ui, lang: str) -> str:
    job = ui.runner.current()
    outcome = ui.runner.stop(job.id) if job and not job.done else "nothing"
    return t(f"msg.{outcome}", lang)


# ---- the tab -----------------------------------------------------------------------------------


def build(ui) -> None:
    lang = ui.language
    saved = ui.settings()
    with gr.Row():
        project = ui.tr(gr.Dropdown(project_choices(ui, lang), value=saved.get("project"), label=t("common.project", lang),
                                    scale=4), label="common.project")
        refresh = ui.tr(gr.Button(t("common.refresh", lang), scale=0), value="common.refresh")
    with gr.Row():
        resolution = ui.tr(
            gr.Dropdown(resolution_choices(lang), value=saved.get("resolution", "768x512"), allow_custom_value=True,
                        label=t("pipe.resolution", lang), info=t("pipe.resolution_info", lang)),
            choices=resolution_choices, label="pipe.resolution", info="pipe.resolution_info",
        )
        frames = ui.tr(gr.Dropdown(list(actions.FRAME_COUNTS), value=int(saved.get("frames", 49)),
                                   label=t("pipe.frames", lang), info=t("pipe.frames_info", lang)),
                       label="pipe.frames", info="pipe.frames_info")
        template = ui.tr(gr.Dropdown(template_choices(lang), value=saved.get("template") or memory_line.suggested_template(
                                         ui.paths, memory_line.detect_card()),
                                     label=t("pipe.template", lang)), choices=template_choices, label="pipe.template")
    steps = ui.tr(gr.CheckboxGroup(step_choices(lang), value=saved.get("steps", list(actions.PIPELINE_STEPS)),
                                   label=t("pipe.steps", lang)), choices=step_choices, label="pipe.steps")
    with gr.Row():
        captioner = ui.tr(gr.Dropdown(captioner_choices(lang), value=saved.get("captioner", "api"),
                                      label=t("common.captioner", lang)), choices=captioner_choices,
                          label="common.captioner")
        api_base_url = ui.tr(gr.Textbox(saved.get("api_base_url", "https://api.moonshot.cn/v1"),
                                        label=t("common.api_base_url", lang)), label="common.api_base_url")
        api_model = ui.tr(gr.Textbox(saved.get("api_model", "moonshot-v1-8k-vision-preview"),
                                     label=t("common.api_model", lang)), label="common.api_model")
        api_key = ui.tr(gr.Textbox("", type="password", label=t("common.api_key", lang),
                                   info=t("common.api_key_info", lang)), label="common.api_key", info="common.api_key_info")
    memory = gr.Markdown(memory_text(ui, template.value, resolution.value, frames.value, lang))
    with gr.Row():
        start = ui.tr(gr.Button(t("pipe.start", lang), variant="primary"), value="pipe.start")
        stop = ui.tr(gr.Button(t("pipe.stop", lang), variant="stop"), value="pipe.stop")
    message = gr.Markdown()

    job_status = gr.Markdown()
    with gr.Row():
        stages = gr.Markdown()
        progress = gr.Markdown()
    log = ui.tr(gr.Textbox(label=t("pipe.log", lang), lines=14, max_lines=14, autoscroll=True, interactive=False),
                label="pipe.log")
    with gr.Row():
        loss = ui.tr(gr.LinePlot(pd.DataFrame(columns=["step", "loss"]), x="step", y="loss",
                                 label=t("pipe.loss", lang), height=260), label="pipe.loss")
        videos = ui.tr(gr.Gallery(label=t("pipe.videos", lang), columns=2, height=260), label="pipe.videos")
    shown_videos = gr.State([])
    shown_points = gr.State(-1)

    def refresh_projects(lang):
        return gr.update(choices=project_choices(ui, lang))

    def estimate(template, resolution, frames, lang):
        return memory_text(ui, template, resolution, frames, lang)

    def start_job(project, resolution, frames, steps, template, captioner, api_base_url, api_model, api_key, lang):
        if not project:
            return t("msg.no_project", lang)
        if not steps:
            return t("msg.no_steps", lang)
        ui.remember(project=project, resolution=resolution, frames=int(frames), steps=list(steps), template=template,
                    captioner=captioner, api_base_url=api_base_url, api_model=api_model)
        try:
            job = actions.start_pipeline(
                ui.runner, ui.paths, project=project, resolution=resolution, frames=int(frames), steps=list(steps),
                template=template, captioner=captioner, api_base_url=api_base_url, api_model=api_model,
                api_key=api_key,
            )
        except ValueError as error:
            return t("msg.refused", lang, error=error)
        return t("msg.queued", lang, title=job.title)

    form = [project, resolution, frames, steps, template, captioner, api_base_url, api_model, api_key, ui.lang]
    refresh.click(refresh_projects, inputs=ui.lang, outputs=project, api_name="list_projects")
    # ui.lang changes on the language switch and when a page opens with the remembered language
    for trigger in (template.change, resolution.change, frames.change, ui.lang.change):
        trigger(estimate, inputs=[template, resolution, frames, ui.lang], outputs=memory, api_name=False)
    start.click(start_job, inputs=form, outputs=message, api_name="start_pipeline")
    stop.click(lambda lang: stop_message(ui, lang), inputs=ui.lang, outputs=message, api_name="stop_job")

    monitor = [job_status, stages, progress, log, loss, videos, shown_videos, shown_points]
    timer = gr.Timer(POLL_S)
    timer.tick(lambda lang, v, n: poll(ui, lang, v, n), inputs=[ui.lang, shown_videos, shown_points], outputs=monitor,
               api_name="poll_job", show_progress="hidden")
