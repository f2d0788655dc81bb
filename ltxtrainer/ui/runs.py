"""What the GUI shows about training runs, read from the files the stages write.

A run folder is anything under outputs/ holding `metrics.jsonl` or `training_config.yaml`.
Everything here reads files only (metrics.jsonl, pipeline_status.json, samples/, checkpoints/),
so the views are right even for runs started from the command line or by an earlier server.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from ltxtrainer.pipeline import CONFIG_FILE, STATUS_FILE

# The trainer's file names (ltxtrainer.training.trainer / checkpoints), repeated here because
# importing those modules imports torch, which would add seconds to every GUI start.
METRICS_FILE = "metrics.jsonl"
SAMPLES_DIR = "samples"
CHECKPOINT_STATES = "checkpoints/step_*/state.json"
_STEP_FOLDER = re.compile(r"^step_(\d+)$")
_HIDDEN_OR_EXPORTS = (".jobs", ".ui", "comfyui")


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines file; a half-written last line (a run in progress) is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def loss_points(events: list[dict]) -> list[tuple[int, float]]:
    """(step, loss) of every "step" event; a resumed run's repeated steps keep the latest value.

    Values become floats here: a loss written as a string (or a NaN) would otherwise turn the
    plot's y axis into one category per value.
    """
    points: dict[int, float] = {}
    for event in events:
        if event.get("event") != "step" or event.get("loss") is None:
            continue
        try:
            loss = float(event["loss"])
            step = int(event["step"])
        except (TypeError, ValueError, KeyError):
            continue
        if loss == loss and abs(loss) != float("inf"):
            points[step] = loss
    return sorted(points.items())


def smoothed(values: list[float], weight: float = 0.9) -> list[float]:
    """An exponential moving average, debiased at the start (as TensorBoard's smoothing slider)."""
    result, average = [], 0.0
    for count, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        result.append(average / (1 - weight**count))
    return result


def sample_prompts(run_dir: Path) -> list[str]:
    """The run's validation prompts (samples/step_N/prompt_II_JJ.mp4 is prompt II)."""
    try:
        data = yaml.safe_load((Path(run_dir) / CONFIG_FILE).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return []
    prompts = (data.get("validation") or {}).get("prompts") or [] if isinstance(data, dict) else []
    return [str(prompt) for prompt in prompts]


_PROMPT_FILE = re.compile(r"^prompt_(\d+)_\d+$")


def gallery_items(run_dir: Path, limit: int = 8) -> list[tuple[Path, int, str]]:
    """(video, step, prompt) of the newest validation videos first."""
    prompts = sample_prompts(run_dir)
    items = []
    for step, videos in sorted(sample_videos(run_dir).items(), reverse=True):
        for video in videos:
            match = _PROMPT_FILE.match(video.stem)
            index = int(match.group(1)) if match else -1
            items.append((video, step, prompts[index] if 0 <= index < len(prompts) else video.stem))
    return items[:limit]


def sample_videos(run_dir: Path) -> dict[int, list[Path]]:
    """Validation videos by step, from samples/step_N/*.mp4."""
    root = Path(run_dir) / SAMPLES_DIR
    found: dict[int, list[Path]] = {}
    if root.is_dir():
        for folder in root.iterdir():
            match = _STEP_FOLDER.match(folder.name)
            if match and folder.is_dir():
                videos = sorted(folder.glob("*.mp4"))
                if videos:
                    found[int(match.group(1))] = videos
    return dict(sorted(found.items()))


def read_pipeline_status(run_dir: Path) -> dict:
    path = Path(run_dir) / STATUS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


@dataclass(frozen=True)
class RunSummary:
    name: str  # path relative to outputs/, forward slashes
    path: Path
    status: str  # finished, stopped, out_of_memory, running, incomplete, not_started
    step: int
    total_steps: int | None
    can_resume: bool


def run_status(run_dir: Path, active_run_dirs: set[Path]) -> tuple[str, int, int | None]:
    """(status, last step, total steps) from the run's metrics.jsonl and the running jobs."""
    events = read_jsonl(Path(run_dir) / METRICS_FILE)
    step, total, status = 0, None, "not_started"
    for event in events:
        kind = event.get("event")
        if kind == "train_start":
            total, status = event.get("total_steps"), "incomplete"
        elif kind == "step":
            step, total = int(event.get("step", step)), event.get("total_steps", total)
        elif kind == "train_end":
            status, step = str(event.get("status", "finished")), int(event.get("step", step))
    if Path(run_dir).resolve() in active_run_dirs:
        status = "running"
    return status, step, total


def list_runs(outputs: Path, active_run_dirs: set[Path] | None = None) -> list[RunSummary]:
    active = {Path(p).resolve() for p in (active_run_dirs or set())}
    if not outputs.is_dir():
        return []
    folders = set()
    for marker in (METRICS_FILE, CONFIG_FILE):
        for file in outputs.rglob(marker):
            relative = file.parent.relative_to(outputs)
            if relative.parts and relative.parts[0] in _HIDDEN_OR_EXPORTS or "checkpoints" in relative.parts:
                continue
            folders.add(file.parent)
    runs = []
    for folder in sorted(folders):
        status, step, total = run_status(folder, active)
        resumable = (
            status in ("stopped", "out_of_memory", "incomplete")
            and (folder / CONFIG_FILE).is_file()
            and any(folder.glob(CHECKPOINT_STATES))
        )
        runs.append(RunSummary(folder.relative_to(outputs).as_posix(), folder, status, step, total, resumable))
    return runs


def list_loras(outputs: Path) -> list[str]:
    """LoRA files under outputs/ (relative paths), final ones before checkpoints; exports excluded."""
    if not outputs.is_dir():
        return []
    found = []
    for file in outputs.rglob("*.safetensors"):
        relative = file.relative_to(outputs)
        if relative.parts[0] in _HIDDEN_OR_EXPORTS or file.stem.endswith("_comfy"):
            continue
        if "lora" in file.name.lower():
            found.append(relative.as_posix())
    return sorted(found, key=lambda name: ("checkpoints/" in name, name))


def comfy_export_path(exports_dir: Path, lora_relative: str) -> Path:
    """A readable, unique file name in the export folder for a LoRA under outputs/."""
    parts = [part for part in Path(lora_relative).parent.parts if part != "checkpoints"]
    stem = "_".join(parts) if parts else Path(lora_relative).stem
    return exports_dir / f"{stem}_comfy.safetensors"
