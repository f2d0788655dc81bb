"""A stop request as a file, for processes that no console signal can reach.

On Windows the GUI starts jobs detached from its console (so closing the launcher window does not
kill a training), and a detached process receives no Ctrl+C or Ctrl+Break. The job runner
therefore names a file in the environment variable `LTXT_STOP_FILE` of the job it starts; every
process of that job (the pipeline and the stage scripts it starts inherit the variable) treats the
file's appearance exactly like a first Ctrl+C: finish the current step, save, exit with 130. The
same path runs on Linux, where the GUI also sends SIGINT, so the tests exercise it everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

STOP_FILE_ENV = "LTXT_STOP_FILE"


def stop_file() -> Path | None:
    """The stop file this process watches, or None when it was not started by the job runner."""
    value = os.environ.get(STOP_FILE_ENV)
    return Path(value) if value else None


def stop_requested() -> bool:
    """True once the job's stop file exists (a cheap stat; call it once per step or per item)."""
    path = stop_file()
    return path is not None and path.exists()


def request_stop(path: str | Path) -> None:
    """Ask the job watching `path` to stop after its current step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("stop\n", encoding="utf-8")
