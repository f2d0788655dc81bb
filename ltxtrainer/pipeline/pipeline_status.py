"""The status file of one pipeline run and the project's records of its dataset stages.

`pipeline_status.json` (in the run folder, or in `datasets/<project>/` when nothing trains) is
rewritten atomically at every change, so the GUI never reads half a file. `dataset_stages.json`
in `datasets/<project>/` remembers what split, caption and preprocess last finished and from
which inputs, for every run of the project: a new run folder does not redo the dataset's work.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from ltxtrainer.atomic import write_text_atomic
from ltxtrainer.pipeline.project import ProjectPaths, read_json
from ltxtrainer.pipeline.request import DATASET_STAGES, STAGES, PipelineOptions
from ltxtrainer.progress import emit


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def _write(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


class DatasetRecords:
    """`{stage, "reference:<kind>" or "preprocess:<key>": {"fingerprint", "done_at", "artefacts"}}` for the
    dataset stages: one record per reference kind and per data key, so switching back finds its work done."""

    def __init__(self, path: Path):
        self.path = path
        self.data = read_json(path)

    @staticmethod
    def name(stage: str, key: str | None) -> str:
        """`key`: the reference kind (reference) or the data key (preprocess); the other stages have one record."""
        return f"{stage}:{key}" if stage in ("reference", "preprocess") else stage

    def done(self, stage: str, key: str | None = None) -> dict | None:
        record = self.data.get(self.name(stage, key))
        return record if isinstance(record, dict) and record.get("fingerprint") and record.get("done_at") else None

    def record(self, stage: str, key: str | None, fingerprint: str, done_at: str, artefacts: dict) -> None:
        self.data[self.name(stage, key)] = {"fingerprint": fingerprint, "done_at": done_at, "artefacts": artefacts}
        _write(self.path, self.data)


class RunStatus:
    """One pipeline process's `pipeline_status.json`: the request, each stage's state, the run's data."""

    def __init__(self, options: PipelineOptions, paths: ProjectPaths, requested: tuple[str, ...], trains: bool):
        self.path = paths.status_file if trains else paths.dataset_status_file
        self.previous = read_json(self.path) if trains else {}
        previous_stages = self.previous.get("stages", {})
        self.data: dict[str, Any] = {
            "project": options.project,
            "run_name": paths.run_name if trains else None,
            "resolution": f"{options.width}x{options.height}x{options.frames}",
            "config_template": options.config_template,
            "captioner": options.captioner,
            "requested": list(requested),
            "resume": options.resume,
            "state": "running",
            "started_at": now(),
            "finished_at": None,
            "error": None,
            # the data the run trains on: filled in once it is known, kept from the run's earlier records
            "data_key": self.previous.get("data_key"),
            "precomputed_dir": self.previous.get("precomputed_dir"),
            "data_manifest_sha256": self.previous.get("data_manifest_sha256"),
            "paths": {
                "raw_dir": str(paths.raw_dir), "scenes_dir": str(paths.scenes_dir),
                "run_dir": str(paths.run_dir) if trains else None,
                "config": str(paths.config_file) if trains else None,
            },
            "stages": {},
        }
        for stage in STAGES:
            old = previous_stages.get(stage, {})
            entry = {"status": "pending", "started_at": None, "finished_at": None, "message": "", "artefacts": {}}
            if stage not in requested:
                entry.update(status="skipped", message="not requested")
                if stage not in DATASET_STAGES:  # a later run still knows the run's own stages were done
                    for kept in ("fingerprint", "done_at", "artefacts"):
                        if kept in old:
                            entry[kept] = old[kept]
            self.data["stages"][stage] = entry
        self.save()

    def previous_done(self, stage: str) -> dict | None:
        """The run's last record of `stage` (train or export) if it finished."""
        old = self.previous.get("stages", {}).get(stage, {})
        return old if old.get("fingerprint") and old.get("done_at") else None

    def set_data(self, data_key: str | None, precomputed_dir: Path, manifest_sha256: str | None) -> None:
        self.data.update(data_key=data_key, precomputed_dir=str(precomputed_dir), data_manifest_sha256=manifest_sha256)
        self.save()

    def update(self, stage: str, code: str | None = None, values: dict | None = None, **fields: Any) -> None:
        """Record a stage's change and announce it; `code` and `values` name a fixed message (the English
        `message` stays in the file and the log) so the GUI can say it in the user's language."""
        self.data["stages"][stage].update(fields)
        self.save()
        emit("pipeline", stage=stage, status=self.data["stages"][stage]["status"],
             message=self.data["stages"][stage]["message"], code=code, values=values or {})

    def finish(self, state: str, error: dict | None = None) -> None:
        self.data.update(state=state, finished_at=now(), error=error)
        self.save()

    def save(self) -> None:
        _write(self.path, self.data)
