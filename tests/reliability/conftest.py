"""Fixtures of the reliability suite: every test records what it tried, what the user saw and what was kept.

The three facts go into the JUnit XML as test properties (`record_property`), which is what
`scripts/reliability_report.py` turns into docs/reliability.md, so the table is always the outcome
of a real run and never prose written by hand.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

# Windows has no SIGKILL, SIGXFSZ or resource limits; process.kill() there is TerminateProcess, whose
# exit code no test can tell from a crash.
POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals (SIGKILL, SIGXFSZ) "
                                "and resource limits, which Windows lacks")
TRAIN = str(REPO / "scripts" / "train.py")


@pytest.fixture
def outcome(record_property, tmp_path_factory) -> Callable[..., None]:
    """`outcome(fault=..., tried=..., happened=..., kept=...)`: one row of the reliability report.

    The session's temporary folder is shortened to `<tmp>` so the report reads the same on every run.
    """
    base = str(tmp_path_factory.getbasetemp())

    def record(*, fault: str, tried: str, happened: str, kept: str) -> None:
        for name, value in (("fault", fault), ("tried", tried), ("happened", happened), ("kept", kept)):
            record_property(name, " ".join(str(value).replace(base, "<tmp>").split()))

    return record


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def last_line(text: str) -> str:
    """The message a user reads last on stderr (progress-bar redraws dropped)."""
    lines = [line.split("\r")[-1].strip() for line in text.splitlines()]
    return next((line for line in reversed(lines) if line), "")


def start_training(config: Path, *extra: str, preexec: Callable[[], None] | None = None) -> subprocess.Popen:
    """scripts/train.py as a user starts it, stdout (JSON progress) and stderr piped."""
    return subprocess.Popen(
        [sys.executable, TRAIN, str(config), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, encoding="utf-8", cwd=config.parent, preexec_fn=preexec,
    )


def wait_for_step(process: subprocess.Popen, at_least: int = 1) -> dict | None:
    """Read JSON lines until a step event numbered `at_least` or more; None when the process ended first."""
    for line in process.stdout:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "step" and event["step"] >= at_least:
            return event
    return None


def hard_kill(process: subprocess.Popen) -> str:
    """SIGKILL (no handler, no cleanup: a power cut or the OOM killer); returns what it wrote on stderr."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    return process.communicate(timeout=60)[1]
