"""What a job looks like on the page: its outcome banner, progress bars, stage table and log.

Pure functions of a `Job`, the JSON events it printed and its log text, so every view (the
pipeline tab, Runs, Export, Dataset) shows the same words for the same state, and tests can
check them without a browser. The events follow the pipeline's contract: `pipeline_start`
(run folder, stages), `pipeline` (a stage's state), `progress` (done/total of a stage), the
trainer's `step` (step, total_steps, loss, steps_per_s, eta_s), `validation`, `checkpoint`, and
last `pipeline_end` (status, lora, comfyui_lora, checkpoint, stage, message).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from ltxtrainer.pipeline import STAGES
from ltxtrainer.ui.i18n import STRINGS, t
from ltxtrainer.ui.jobs import Job
from ltxtrainer.ui.runs import smoothed

# The job runner's names for an ended job, folded into what a person needs to know.
_OUTCOME_OF_STATUS = {"finished": "finished", "stopped": "stopped", "killed": "stopped", "failed": "failed",
                      "lost": "failed", "cancelled": "cancelled"}
EXIT_REFUSED = 2  # run_pipeline.py and the stage scripts: the request was refused before anything ran
_COLOURS = {  # (background, border) of the banner per outcome
    "queued": ("#f3f4f6", "#9ca3af"), "running": ("#eff6ff", "#3b82f6"), "stopping": ("#fffbeb", "#f59e0b"),
    "finished": ("#ecfdf5", "#10b981"), "stopped": ("#fffbeb", "#f59e0b"), "failed": ("#fef2f2", "#ef4444"),
    "refused": ("#fef2f2", "#ef4444"), "cancelled": ("#f3f4f6", "#9ca3af"),
}


@dataclass(frozen=True)
class Outcome:
    """Where a job stands, as the banner tells it."""

    state: str  # queued, running, stopping, finished, stopped, failed, refused, cancelled
    title: str
    message: str = ""
    run_dir: str | None = None
    lora: str | None = None
    comfyui_lora: str | None = None
    checkpoint: str | None = None
    stage: str | None = None
    outputs: list[str] = field(default_factory=list)


def job_title(job: Job, lang: str) -> str:
    """A job's name in the page's language, from what it was queued with (job.title is English)."""
    spec = job.meta.get("title") or {}
    key = spec.get("key")
    if key == "title.pipeline":
        stages = "+".join(t(f"step.{stage}", lang) for stage in spec.get("stages") or [])
        run = f" {spec['run']}" if spec.get("run") else ""
        return t(key, lang, project=spec.get("project"), size=spec.get("size"), stages=stages) + run
    if key in ("title.resume", "title.train", "title.caption", "title.export"):
        return t(key, lang, **{name: value for name, value in spec.items() if name != "key"})
    return job.title


def last_event(events: list[dict], name: str) -> dict | None:
    return next((event for event in reversed(events) if event.get("event") == name), None)


def run_dir_of(job: Job | None, events: list[dict]) -> Path | None:
    """The run folder: named by the pipeline's first line, else known when the job was queued."""
    if job is None:
        return None
    start = last_event(events, "pipeline_start")
    folder = (start or {}).get("run_dir") or job.meta.get("run_dir")
    return Path(folder) if folder else None


def _failure_reason(job: Job, events: list[dict], log: str) -> str:
    """The one paragraph that says why: the stage's error event, else the log's last lines."""
    error = last_event(events, "error")
    if error and error.get("message"):
        return str(error["message"])
    if job.message:
        return job.message
    human = [line for line in human_lines(log).splitlines() if line.strip() and not line.startswith("$ ")]
    return " ".join(human[-3:])


def job_outcome(job: Job, events: list[dict], log: str = "", lang: str = "en") -> Outcome:
    """The banner's facts; `pipeline_end` is trusted first, the exit status fills in the rest."""
    end = last_event(events, "pipeline_end")
    run_dir = run_dir_of(job, events)
    common = {"title": job_title(job, lang), "run_dir": str(run_dir) if run_dir else None}
    if job.status in ("queued", "running", "stopping"):
        return Outcome(state=job.status, **common)
    if end is not None:
        return Outcome(
            state=str(end.get("status") or "failed"), message=str(end.get("message") or ""),
            lora=end.get("lora"), comfyui_lora=end.get("comfyui_lora"), checkpoint=end.get("checkpoint"),
            stage=end.get("stage"), **common,
        )
    state = _OUTCOME_OF_STATUS.get(job.status, "failed")
    if state == "failed" and job.exit_code == EXIT_REFUSED:
        state = "refused"
    checkpoint = last_event(events, "checkpoint")
    outputs = [str(event["output"]) for event in events if event.get("event") == "export" and event.get("output")]
    if job.kind == "export" and state == "finished" and job.meta.get("output"):
        outputs = outputs or [job.meta["output"]]
    train_end = last_event(events, "train_end") or {}
    return Outcome(
        state=state,
        message=_failure_reason(job, events, log) if state in ("failed", "refused") else job.message,
        lora=train_end.get("lora"), checkpoint=(checkpoint or {}).get("path"), stage=job.kind, outputs=outputs,
        **common,
    )


def banner_html(outcome: Outcome | None, lang: str) -> str:
    """A coloured box that says what happened, in the words of the tab that started the job."""
    if outcome is None:
        return ""
    background, border = _COLOURS.get(outcome.state, _COLOURS["failed"])
    lines = [f"<strong>{html.escape(t(f'banner.{outcome.state}', lang, title=outcome.title))}</strong>"]
    if outcome.state in ("failed", "refused"):
        lines.insert(1, html.escape(outcome.message or t("banner.no_reason", lang)))
        if outcome.stage:
            lines.append(html.escape(t("banner.stage", lang, stage=outcome.stage)))
    elif outcome.state == "stopped":
        if outcome.checkpoint:
            lines.append(html.escape(t("banner.checkpoint", lang, path=outcome.checkpoint)))
        lines.append(html.escape(t("banner.continue", lang)))
    elif outcome.state == "finished":
        for key, value in (("banner.lora", outcome.lora), ("banner.comfyui", outcome.comfyui_lora)):
            if value:
                lines.append(html.escape(t(key, lang, path=value)))
        lines += [html.escape(t("banner.output", lang, path=path)) for path in outcome.outputs]
    if outcome.run_dir and outcome.state not in ("queued",):
        lines.append(html.escape(t("banner.run_dir", lang, path=outcome.run_dir)))
    body = "<br>".join(lines)
    return (f'<div class="ltxt-banner ltxt-{outcome.state}" data-state="{outcome.state}" '
            f'style="background:{background};border-left:6px solid {border};padding:10px 14px;border-radius:6px;'
            f'color:#111827;line-height:1.5;overflow-wrap:anywhere">{body}</div>')


# ---- progress ------------------------------------------------------------------------------------


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "–"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class StageProgress:
    name: str
    state: str = "pending"  # pending, running, done, skipped, failed
    done: int | None = None
    total: int | None = None
    rate: float | None = None  # items (or steps) per second
    eta_s: float | None = None
    message: str = ""
    code: str | None = None  # a fixed pipeline message the page says in the user's language
    values: dict = field(default_factory=dict)

    def said(self, lang: str) -> str:
        """The stage's message in `lang` when the pipeline named it, else as the stage script wrote it."""
        key = f"stage_msg.{self.code}"
        return t(key, lang, **self.values) if self.code and key in STRINGS else self.message

    @property
    def fraction(self) -> float:
        if self.state in ("done", "skipped"):
            return 1.0
        if self.done is not None and self.total:
            return min(1.0, max(0.0, self.done / self.total))
        return 0.0


def _rate(first: dict, last: dict) -> float | None:
    """Items per second between two progress events of one stage, from their timestamps."""
    elapsed = float(last.get("time") or 0) - float(first.get("time") or 0)
    items = (last.get("done") or 0) - (first.get("done") or 0)
    return items / elapsed if elapsed > 0 and items > 0 else None


def stage_progress(events: list[dict], job: Job | None = None) -> list[StageProgress]:
    """One entry per stage of the job, in order, with its count, rate and time left."""
    start = last_event(events, "pipeline_start")
    names = list((start or {}).get("stages") or [])
    stages: dict[str, StageProgress] = {name: StageProgress(name) for name in names}
    first_progress: dict[str, dict] = {}
    for event in events:
        kind = event.get("event")
        stage = event.get("stage") or ("train" if kind in ("step", "train_start", "validation", "checkpoint") else None)
        if not stage or stage == "pipeline":
            continue
        part = str(stage)
        stage = part.partition(":")[0]  # "preprocess:latents" is a part of preprocess, with its own count
        entry = stages.setdefault(stage, StageProgress(stage))
        if kind == "pipeline":
            entry.state = str(event.get("status") or entry.state)
            entry.message = str(event.get("message") or "")
            entry.code, entry.values = event.get("code"), dict(event.get("values") or {})
        elif kind == "progress":
            if first_progress.get(stage, {}).get("stage", part) != part:
                first_progress.pop(stage)  # the next part's rate starts afresh
            first_progress.setdefault(stage, {**event, "stage": part})
            entry.done, entry.total = event.get("done"), event.get("total")
            entry.rate = _rate(first_progress[stage], event)
            if entry.rate and entry.total is not None and entry.done is not None:
                entry.eta_s = (entry.total - entry.done) / entry.rate
            entry.state = "running" if entry.state == "pending" else entry.state
        elif kind == "step":
            entry.done, entry.total = event.get("step"), event.get("total_steps")
            entry.rate, entry.eta_s = event.get("steps_per_s"), event.get("eta_s")
            entry.state = "running" if entry.state == "pending" else entry.state
    if job is not None and job.kind != "pipeline" and job.done:  # a single script: its exit settles it
        for entry in stages.values():
            if entry.state == "running":
                entry.state = "done" if job.status == "finished" else "failed"
    ended = job is not None and job.done
    for entry in stages.values():
        if entry.state in ("done", "skipped") or ended:
            entry.eta_s = 0.0 if entry.state in ("done", "skipped") else None
    return list(stages.values())


def overall_progress(stages: list[StageProgress]) -> tuple[float, float | None]:
    """(fraction of the whole job, seconds left when the running stage knows its own)."""
    if not stages:
        return 0.0, None
    fraction = sum(stage.fraction for stage in stages) / len(stages)
    running = [stage for stage in stages if stage.state == "running"]
    if all(stage.state in ("done", "skipped") for stage in stages):
        return 1.0, 0.0
    eta = running[0].eta_s if running else None
    return fraction, eta


def _bar(fraction: float, colour: str = "#3b82f6") -> str:
    percent = round(100 * fraction, 1)
    return (f'<div style="background:#e5e7eb;border-radius:4px;height:12px;min-width:140px">'
            f'<div style="background:{colour};width:{percent}%;height:12px;border-radius:4px"></div></div>')


_STATE_COLOURS = {"done": "#10b981", "skipped": "#9ca3af", "failed": "#ef4444", "running": "#3b82f6", "pending": "#d1d5db"}


def progress_html(stages: list[StageProgress], lang: str) -> str:
    """An overall bar, then a table with one bar per stage (count, rate, time left, message)."""
    if not stages:
        return ""
    fraction, eta = overall_progress(stages)
    if fraction >= 1:
        overall = t("progress.complete", lang)
    elif eta is None:
        overall = t("progress.overall_no_eta", lang, percent=round(100 * fraction))
    else:
        overall = t("progress.overall", lang, percent=round(100 * fraction), eta=format_duration(eta))
    cell = 'style="padding:4px 8px;white-space:nowrap"'
    rows = []
    for stage in stages:
        label = t(f"step.{stage.name}", lang) if f"step.{stage.name}" in _STEP_LABELS else stage.name
        count = f"{stage.done} / {stage.total}" if stage.total else ""
        unit = t("progress.steps_per_s" if stage.name == "train" else "progress.items_per_s", lang)
        rate = f"{stage.rate:.2f} {unit}" if stage.rate else ""
        rows.append(
            f'<tr data-stage="{html.escape(stage.name)}" data-state="{html.escape(stage.state)}">'
            f"<td {cell}>{html.escape(label)}</td>"
            f"<td {cell}>{html.escape(t(f'status.{stage.state}', lang))}</td>"
            f'<td style="padding:4px 8px;width:30%">{_bar(stage.fraction, _STATE_COLOURS.get(stage.state, "#3b82f6"))}</td>'
            f"<td {cell}>{html.escape(count)}</td><td {cell}>{html.escape(rate)}</td>"
            f"<td {cell}>{html.escape(format_duration(stage.eta_s) if stage.state == 'running' else '')}</td>"
            f'<td style="padding:4px 8px;overflow-wrap:anywhere">{html.escape(stage.said(lang)[:200])}</td></tr>'
        )
    header = "".join(f'<th {cell} align="left">{html.escape(name)}</th>' for name in t("progress.columns", lang).split("|"))
    return (
        f'<div class="ltxt-progress"><div style="margin-bottom:6px"><strong>{html.escape(overall)}</strong></div>'
        f"{_bar(fraction, '#10b981' if fraction >= 1 else '#3b82f6')}"
        f'<table style="width:100%;margin-top:8px;border-collapse:collapse;table-layout:auto">'
        f"<thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


_STEP_LABELS = {f"step.{name}" for name in STAGES}  # every pipeline stage, the IC-LoRA reference stage included


# ---- the log --------------------------------------------------------------------------------------


def human_lines(text: str) -> str:
    """The log without its JSON event lines (they feed the bars and the plot, not people)."""
    kept = []
    for line in text.splitlines():
        start = line.find('{"event"')
        if start >= 0:
            try:
                json.loads(line[start:])
            except ValueError:
                pass
            else:
                line = line[:start].rstrip()  # a progress bar printed in front of a JSON line stays
                if not line:
                    continue
        kept.append(line)
    return "\n".join(kept)


def log_html(text: str, empty: str) -> str:
    """The log's newest lines at the bottom, scrolled there (column-reverse keeps the view at the end)."""
    body = html.escape(text) if text.strip() else html.escape(empty)
    return ('<div class="ltxt-log" style="display:flex;flex-direction:column-reverse;max-height:22em;overflow:auto;'
            'background:#111827;color:#e5e7eb;border-radius:6px;padding:8px">'
            f'<pre style="margin:0;white-space:pre-wrap;font-size:12px;line-height:1.4;color:#e5e7eb;background:transparent">'
            f"{body}</pre></div>")


# ---- the loss plot and the validation videos ---------------------------------------------------------


# The plot's two series. Their names stay the same in every language: gradio 6.31's LinePlot keeps
# the colour domain it first saw and draws no lines once the series names change (a language
# switch), so the plot's label says which colour is which instead of a legend.
LOSS_SERIES = ("loss", "smoothed")


def loss_frame(points: list[tuple[int, float]]) -> pd.DataFrame:
    """Long-format loss and its smoothed line for gr.LinePlot (numeric step and value columns)."""
    steps = [step for step, _ in points]
    losses = [loss for _, loss in points]
    frame = pd.DataFrame({
        "step": steps * 2,
        "value": losses + smoothed(losses),
        "series": [LOSS_SERIES[0]] * len(points) + [LOSS_SERIES[1]] * len(points),
    })
    return frame.astype({"step": "int64", "value": "float64"})


def file_url(path: Path) -> str:
    """Gradio's URL of a file under an allowed folder (relative, so a proxy's root path keeps working)."""
    return "gradio_api/file=" + quote(Path(path).resolve().as_posix(), safe="/:")


def gallery_html(items: list[tuple[Path, int, str]], lang: str) -> str:
    """Each validation video whole (no crop), with its step and prompt under it; not muted, so an
    LTX-2 sample plays its sound track with the controls."""
    if not items:
        return f'<div class="ltxt-gallery" style="color:#6b7280">{html.escape(t("gallery.empty", lang))}</div>'
    figures = []
    for video, step, prompt in items:
        caption = html.escape(t("gallery.caption", lang, step=step, prompt=prompt))
        figures.append(
            f'<figure style="margin:0"><video src="{html.escape(file_url(video))}" controls loop playsinline '
            f'preload="auto" style="width:100%;height:auto;object-fit:contain;background:#000;border-radius:4px">'
            f'</video><figcaption style="font-size:12px;line-height:1.3;overflow-wrap:anywhere">{caption}'
            "</figcaption></figure>"
        )
    return ('<div class="ltxt-gallery" style="display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));'
            f'gap:10px">{"".join(figures)}</div>')
