"""Crash-safe writes: a temporary file in the same folder, fsync, then an atomic rename.

A run killed (or a disk filling up) in the middle of a save must never leave a half-written file
under the final name; the previous version stays intact until the new one is complete.

On Windows a rename onto (or of) a file another process holds open fails with PermissionError
until that process lets go: the GUI rereads status files every 1.5 s, and ComfyUI, an antivirus
scanner or OneDrive briefly open whatever appears in a folder. Renames here therefore retry for a
few seconds before giving up.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# About 5 s in all: longer than a reader's or a scanner's hold on a file, short enough that a
# folder that really is not writable is reported while the user still watches.
RENAME_RETRY_DELAYS_S = (0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.0, 1.0)


def replace_with_retry(source: str | Path, target: str | Path) -> None:
    """`os.replace(source, target)`, retried while another process holds one of them open (Windows)."""
    for delay in RENAME_RETRY_DELAYS_S:
        try:
            os.replace(source, target)
            return
        except PermissionError:
            time.sleep(delay)
    os.replace(source, target)  # the last try: its PermissionError is the caller's to report


def _fsync_dir(folder: Path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Call `writer(temp_path)`, fsync the result and rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    temp = Path(temp_name)
    try:
        writer(temp)
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        replace_with_retry(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda temp: temp.write_text(text, encoding="utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return write_atomic(path, lambda temp: temp.write_bytes(data))


def commit_directory(staging: Path, final: Path) -> Path:
    """Atomically publish a fully written `staging` folder as `final` (which must not exist)."""
    for file in staging.rglob("*"):
        if file.is_file():
            with open(file, "rb+") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(staging)
    if final.exists():
        shutil.rmtree(final)
    replace_with_retry(staging, final)
    _fsync_dir(final.parent)
    return final
