"""Tab 4, 训练监控 / Runs: every run under outputs/, its loss curve and samples, Resume.

Read from the runs' own files, so runs started from the command line or by an earlier server
show up as well. The chosen run's plot and videos follow it live while it trains; Resume
continues it through the pipeline (so the ComfyUI export follows) and its outcome is shown here.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from ltxtrainer.pipeline import PipelineError
from ltxtrainer.ui import actions, monitor
from ltxtrainer.ui.i18n import t
from ltxtrainer.ui.jobs import DuplicateJobError
from ltxtrainer.ui.runs import list_runs
from ltxtrainer.ui.tab_pipeline import POLL_S, loss_and_videos, loss_plot, own_job, refusal_html
from ltxtrainer.ui.workspace import UnsafePathError, safe_join

TAB = "runs"
MAX_VIDEOS = 12


def active_run_dirs(ui) -> set[Path]:
    """Run folders of running jobs, as named when queued or by the pipeline's first line."""
    folders = set()
    for job in ui.runner.jobs():
        if job.active:
            folder = monitor.run_dir_of(job, ui.runner.events(job.id))
            if folder is not None:
                folders.add(folder)
    return folders


def runs_table(ui, lang: str) -> pd.DataFrame:
    columns = t("runs.columns", lang).split("|")
    rows = [
        [run.name, t(f"status.{run.status}", lang), f"{run.step} / {run.total_steps or '?'}",
         t("runs.yes" if run.can_resume else "runs.no", lang)]
        for run in list_runs(ui.paths.outputs, active_run_dirs(ui))
    ]
    return pd.DataFrame(rows, columns=columns)


def run_names(ui) -> list[str]:
    return [run.name for run in list_runs(ui.paths.outputs, active_run_dirs(ui))]


def run_view(ui, name: str | None, lang: str):
    """(loss frame, gallery html) of a run under outputs/; empty for no or an unsafe name."""
    folder = None
    if name:
        try:
            folder = safe_join(ui.paths.outputs, name)
        except UnsafePathError:
            folder = None
    if folder is None:
        return None, monitor.gallery_html([], lang)
    return loss_and_videos(folder, [], lang)


def build(ui) -> None:
    lang = ui.language
    with gr.Row():
        run = ui.tr(gr.Dropdown(run_names(ui), label=t("runs.run", lang), scale=4), label="runs.run")
        refresh = ui.tr(gr.Button(t("common.refresh", lang), scale=0), value="common.refresh")
    table = ui.tr(gr.Dataframe(runs_table(ui, lang), label=t("runs.table", lang), interactive=False, wrap=False),
                  label="runs.table")
    resume = ui.tr(gr.Button(t("runs.resume", lang), variant="primary"), value="runs.resume")
    message = gr.HTML(elem_id="runs-message")
    banner = gr.HTML(elem_id="runs-banner")
    progress = gr.HTML(elem_id="runs-progress")
    with gr.Row():
        with gr.Column():
            loss = loss_plot(ui, lang, "runs-loss")
        with gr.Column():
            videos = gr.HTML(elem_id="runs-videos")
    job_id = gr.State(None)
    shown = gr.State({})

    def refresh_runs(name, lang):
        """New runs in the list and table, and the chosen run's plot and videos read again."""
        frame, gallery = run_view(ui, name, lang)
        return gr.update(choices=run_names(ui)), runs_table(ui, lang), frame, gallery

    def show_run(name, lang):
        frame, gallery = run_view(ui, name, lang)
        return frame, gallery

    def resume_run(name, lang):
        title = t("runs.resume", lang)
        runs = {r.name: r for r in list_runs(ui.paths.outputs, active_run_dirs(ui))}
        if name not in runs or not runs[name].can_resume:
            return refusal_html(title, t("runs.not_resumable", lang), lang), gr.skip()
        try:
            job = actions.resume_run(ui.runner, ui.paths, name, tab=TAB)
        except DuplicateJobError as error:
            return refusal_html(title, t("msg.duplicate", lang, title=monitor.job_title(error.existing, lang)), lang), gr.skip()
        except (UnsafePathError, PipelineError, ValueError, OSError) as error:
            return refusal_html(title, error, lang), gr.skip()
        return "", job.id

    def follow(name, lang, job_id, seen):
        """The resume job's banner and bars; the chosen run's plot and videos when they changed."""
        job = own_job(ui, job_id, TAB)
        events = ui.runner.events(job.id) if job else []
        outcome = monitor.job_outcome(job, events, ui.runner.read_log(job.id), lang) if job else None
        frame, gallery = run_view(ui, name, lang)
        now = {"run": name, "points": 0 if frame is None else len(frame), "videos": gallery, "lang": lang,
               "job": job.status if job else None}
        fresh = now["run"] != seen.get("run") or lang != seen.get("lang")
        return (
            monitor.banner_html(outcome, lang),
            monitor.progress_html(monitor.stage_progress(events, job), lang) if job else "",
            frame if fresh or now["points"] != seen.get("points") else gr.skip(),
            gallery if fresh or now["videos"] != seen.get("videos") else gr.skip(),
            runs_table(ui, lang) if fresh or now["job"] != seen.get("job") else gr.skip(),
            now,
        )

    def fresh_runs(current, lang):
        """The runs as they are now; keep the chosen one, else the run of the newest job started here."""
        names = run_names(ui)
        if current not in names:
            job = own_job(ui, None, TAB)
            folder = monitor.run_dir_of(job, ui.runner.events(job.id)) if job else None
            current = folder.name if folder is not None and folder.name in names else None
        return gr.update(choices=names, value=current)

    ui.on_show(run, fresh_runs, [run])
    ui.on_show(table, lambda lang: runs_table(ui, lang))
    refresh.click(refresh_runs, inputs=[run, ui.lang], outputs=[run, table, loss, videos], api_name="list_runs")
    run.change(show_run, inputs=[run, ui.lang], outputs=[loss, videos], api_name="show_run", show_progress="hidden")
    resume.click(resume_run, inputs=[run, ui.lang], outputs=[message, job_id], api_name="resume_run")
    timer = gr.Timer(POLL_S)
    timer.tick(follow, inputs=[run, ui.lang, job_id, shown], outputs=[banner, progress, loss, videos, table, shown],
               api_name="poll_runs", show_progress="hidden")
