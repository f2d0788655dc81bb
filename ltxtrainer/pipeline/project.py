"""Where a project's stages read and write, and how run folders are named and found."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from ltxtrainer.dataset_key import PRECOMPUTED, key_folder
from ltxtrainer.pipeline.request import (
    REFERENCE_FOLDER,
    PipelineError,
    PipelineOptions,
    check_project_name,
    check_run_name,
)

STATUS_FILE = "pipeline_status.json"
CONFIG_FILE = "training_config.yaml"  # the name scripts/train.py also writes into its output_dir
LORA_FILE = "lora_weights.safetensors"
DATASET_RECORDS_FILE = "dataset_stages.json"  # datasets/<project>/: what split, caption and preprocess last did


@dataclass(frozen=True)
class ProjectPaths:
    """A project's folders and one run's files.

    The run fields name the folder `run_name` under outputs/. Without a run name (`project_paths`
    called before the pipeline chose one) they name `<project>_<WxHxF>`, the folder older versions
    used; a caller that needs the folder a pipeline run trains in reads it from the pipeline's
    `pipeline_start` event.
    """

    raw_dir: Path
    scenes_dir: Path
    precomputed_dir: Path  # `.precomputed/`: one folder per data key inside (old data: latents/ directly)
    run_dir: Path
    config_file: Path
    status_file: Path
    lora_file: Path
    comfy_file: Path
    dataset_records: Path  # the dataset stages' records, shared by every run of the project
    dataset_status_file: Path  # the status of a pipeline run that trains nothing (no run folder)

    @property
    def run_name(self) -> str:
        return self.run_dir.name

    def data_folder(self, key: str) -> Path:
        return key_folder(self.scenes_dir, key)

    def computed_references(self, kind: str) -> Path:
        """`datasets/<project>/references_<kind>/`: the references the reference stage computes, beside
        the scenes (not among them, so the clips' own stages never take a reference for a clip)."""
        return self.scenes_dir.parent / f"references_{kind}"


def reference_folder(options: PipelineOptions, paths: ProjectPaths) -> Path | None:
    """Where this request's references are: the user's folder (kind folder), the computed ones, or
    None without IC-LoRA conditioning."""
    if not options.reference_video:
        return None
    if options.kind == REFERENCE_FOLDER:
        return Path(options.reference_dir)
    return paths.computed_references(options.kind)


def bucket_name(options: PipelineOptions) -> str:
    return f"{options.width}x{options.height}x{options.frames}"


def default_run_prefix(options: PipelineOptions) -> str:
    return f"{options.project}_{bucket_name(options)}"


def project_paths(options: PipelineOptions, run_name: str | None = None) -> ProjectPaths:
    """Where every stage of this project reads and writes (see the package docstring)."""
    name = check_project_name(options.project)
    run_name = check_run_name(run_name or options.run_name or default_run_prefix(options))
    raw_dir = Path(options.train_date_dir) / name
    project_dir = Path(options.work_dir) / name
    scenes_dir = project_dir / "scenes"
    run_dir = Path(options.outputs_dir) / run_name
    for root, path in ((options.train_date_dir, raw_dir), (options.work_dir, scenes_dir), (options.outputs_dir, run_dir)):
        if not path.resolve().is_relative_to(Path(root).resolve()):  # symlinks included
            raise PipelineError(f"Project {name!r} would leave {root} ({path.resolve()}); refused.")
    return ProjectPaths(
        raw_dir=raw_dir,
        scenes_dir=scenes_dir,
        precomputed_dir=scenes_dir / PRECOMPUTED,
        run_dir=run_dir,
        config_file=run_dir / CONFIG_FILE,
        status_file=run_dir / STATUS_FILE,
        lora_file=run_dir / LORA_FILE,
        comfy_file=run_dir / f"{run_name}_comfy.safetensors",
        dataset_records=project_dir / DATASET_RECORDS_FILE,
        dataset_status_file=project_dir / STATUS_FILE,
    )


def new_run_name(options: PipelineOptions, now: dt.datetime | None = None) -> str:
    """`<project>_<WxHxF>_<YYYYMMDD-HHMMSS>` in local time, with `-2`, `-3`... if that folder exists."""
    stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = f"{default_run_prefix(options)}_{stamp}"
    name, count = base, 1
    while (Path(options.outputs_dir) / name).exists():
        count += 1
        name = f"{base}-{count}"
    return name


def read_json(path: Path) -> dict:
    """A JSON object from a file we wrote, or {} when it is missing or torn (then it is rebuilt)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def project_runs(options: PipelineOptions) -> list[Path]:
    """The run folders of this project (a status file naming it, and a config), the one a pipeline
    process used last first (its status file is the newest)."""
    outputs = Path(options.outputs_dir)
    if not outputs.is_dir():
        return []
    runs = []
    for folder in outputs.iterdir():
        if not (folder / CONFIG_FILE).is_file():
            continue
        if read_json(folder / STATUS_FILE).get("project") == options.project:
            runs.append(folder)
    return sorted(runs, key=lambda folder: (folder / STATUS_FILE).stat().st_mtime_ns, reverse=True)
