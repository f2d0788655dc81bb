"""Progress reporting shared by every stage: human lines on stderr, JSON lines on stdout.

The GUI draws progress bars and loss curves from the JSON lines (one object per line, always
with an "event" key) instead of parsing prose, and people read the stderr lines and bars.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def emit(event: str, **fields: Any) -> None:
    """Print one machine-readable JSON line on stdout and flush it at once."""
    record = {"event": event, "time": round(time.time(), 3), **fields}
    sys.stdout.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def say(message: str) -> None:
    """A human-readable line on stderr (never parsed by the GUI)."""
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()


def track(items: Iterable[T], stage: str, total: int | None = None, unit: str = "item") -> Iterator[T]:
    """Iterate with a tqdm bar on stderr and a `progress` JSON line per item on stdout."""
    items = list(items) if total is None else items
    total = len(items) if total is None else total  # type: ignore[arg-type]
    emit("progress", stage=stage, done=0, total=total)
    with tqdm(items, total=total, desc=stage, unit=unit, file=sys.stderr, dynamic_ncols=True) as bar:
        for done, item in enumerate(bar, start=1):
            yield item
            emit("progress", stage=stage, done=done, total=total)
