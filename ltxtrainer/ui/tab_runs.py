"""Tab 4, 训练监控 / Runs: every run under outputs/, its loss curve and samples, Resume.

Read from the runs' own files, so runs started from the command line or by an earlier server
show up as well.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from ltxtrainer.pipeline import PipelineError
from ltxtrainer.ui import actions
from ltxtrainer.ui.i18n import t
from ltxtrainer.ui.runs import METRICS_FILE, list_runs, loss_points, read_jsonl, sample_videos
from ltxtrainer.ui.workspace import UnsafePathError, safe_join


def active_run_dirs(ui) -> set[Path]:
    return {Path(job.meta["run_dir"]) for job in ui.runner.jobs() if job.active and job.meta.get("run_dir")}


def runs_table(ui, lang: str) -> pd.DataFrame:
    columns = t("runs.columns", lang).split("|")
    rows = [
        [run.name, t(f"status.{run.status}", lang) if f"status.{run.status}" else run.status,
         f"{run.step} / {run.total_steps or '?'}", t("runs.yes" if run.can_resume else "runs.no", lang)]
        for run in list_runs(ui.paths.outputs, active_run_dirs(ui))
    ]
    return pd.DataFrame(rows, columns=columns)


def run_names(ui) -> list[str]:
    return [run.name for run in list_runs(ui.paths.outputs, active_run_dirs(ui))]


def build(ui) -> None:
    lang = ui.language
    with gr.Row():
        run = ui.tr(gr.Dropdown(run_names(ui), label=t("runs.run", lang), scale=4), label="runs.run")
        refresh = ui.tr(gr.Button(t("common.refresh", lang), scale=0), value="common.refresh")
    table = ui.tr(gr.Dataframe(runs_table(ui, lang), label=t("runs.table", lang), interactive=False),
                  label="runs.table")
    with gr.Row():
        loss = ui.tr(gr.LinePlot(pd.DataFrame(columns=["step", "loss"]), x="step", y="loss",
                                 label=t("pipe.loss", lang), height=260), label="pipe.loss")
        with gr.Column():
            step = ui.tr(gr.Dropdown([], label=t("runs.step", lang)), label="runs.step")
            videos = ui.tr(gr.Gallery(label=t("pipe.videos", lang), columns=2, height=220), label="pipe.videos")
    resume = ui.tr(gr.Button(t("runs.resume", lang), variant="primary"), value="runs.resume")
    message = gr.Markdown()

    def refresh_runs(lang):
        return gr.update(choices=run_names(ui)), runs_table(ui, lang)

    def show_run(name, lang):
        if not name:
            return pd.DataFrame(columns=["step", "loss"]), gr.update(choices=[], value=None), "", []
        try:
            folder = safe_join(ui.paths.outputs, name)
        except UnsafePathError as error:
            return gr.skip(), gr.skip(), t("msg.refused", lang, error=error), []
        points = loss_points(read_jsonl(folder / METRICS_FILE))
        steps = sorted(sample_videos(folder), reverse=True)
        return (pd.DataFrame(points, columns=["step", "loss"]), gr.update(choices=steps, value=steps[0] if steps else None),
                "", [])

    def show_videos(name, chosen_step):
        if not name or chosen_step is None:
            return []
        try:
            folder = safe_join(ui.paths.outputs, name)
        except UnsafePathError:
            return []
        return [str(path) for path in sample_videos(folder).get(int(chosen_step), [])]

    def resume_run(name, lang):
        runs = {r.name: r for r in list_runs(ui.paths.outputs, active_run_dirs(ui))}
        if name not in runs or not runs[name].can_resume:
            return t("runs.not_resumable", lang)
        try:
            job = actions.resume_run(ui.runner, ui.paths, name)
        except (UnsafePathError, PipelineError, ValueError, OSError) as error:
            return t("msg.refused", lang, error=error)
        return t("msg.queued", lang, title=job.title)

    refresh.click(refresh_runs, inputs=ui.lang, outputs=[run, table], api_name="list_runs")
    run.change(show_run, inputs=[run, ui.lang], outputs=[loss, step, message, videos], api_name="show_run")
    step.change(show_videos, inputs=[run, step], outputs=videos, api_name=False)
    resume.click(resume_run, inputs=[run, ui.lang], outputs=message, api_name="resume_run")
