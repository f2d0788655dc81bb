"""Running one stage script as a child process: its output streamed through, its stop requests honoured.

Each stage runs as its own script (`scripts/<stage>.py`) in a child process, so a crash, a CUDA
out-of-memory or a leaked model in one stage can never poison the next, and the GUI can show and
stop exactly what a person would run by hand. The children's JSON lines are passed through to our
stdout (with a "stage" field added where a line lacks one) and their stderr lines to our stderr
prefixed with `[stage]`.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass

from ltxtrainer.pipeline.request import REPO_ROOT, SCRIPTS_DIR, STAGE_SCRIPTS, PipelineOptions
from ltxtrainer.stopfile import stop_requested

# How often the pipeline looks for the job's stop file while a stage runs.
STOP_FILE_POLL_S = 0.5


@dataclass
class StageResult:
    returncode: int
    error_event: str | None
    stderr_lines: list[str]


class Redactor:
    """Replaces the API key wherever a child might echo it, before anything is printed or stored."""

    def __init__(self, secret: str | None):
        self.secret = secret if secret and len(secret) >= 4 else None

    def __call__(self, text: str) -> str:
        return text.replace(self.secret, "***") if self.secret else text


_print_lock = threading.Lock()


def _forward_stdout(stream, stage: str, redact: Redactor, errors: list[str]) -> None:
    """Pass JSON lines through (tagging them with the stage); anything else goes to stderr."""
    for raw in iter(stream.readline, b""):
        line = redact(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        with _print_lock:
            if isinstance(record, dict) and "event" in record:
                record.setdefault("stage", stage)
                if record["event"] == "error" and record.get("message"):
                    errors.append(str(record["message"]))
                sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
                sys.stdout.flush()
            else:
                sys.stderr.write(f"[{stage}] {line}\n")
                sys.stderr.flush()


_LINE = re.compile(r"([^\r\n]*)(\r\n|\n|\r)")


def _forward_stderr(stream, stage: str, redact: Redactor, tail: deque[str]) -> None:
    """Prefix each line; progress-bar redraws (carriage returns) stay redraws and stay out of `tail`."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending, after_redraw = "", False
    while True:
        chunk = stream.read1(65536)
        pending += decoder.decode(chunk, final=not chunk)
        consumed = 0
        with _print_lock:
            for match in _LINE.finditer(pending):
                text, end = redact(match.group(1)), match.group(2)
                if end == "\r" and chunk and match.end() == len(pending):
                    break  # maybe the first half of a Windows "\r\n": wait for the next chunk
                consumed = match.end()
                if end == "\r":  # tqdm writes "\r<bar>" again and again: each piece is a redraw
                    if text:
                        sys.stderr.write(f"\r[{stage}] {text}")
                    after_redraw = True
                    continue
                sys.stderr.write(("\r" if after_redraw else "") + f"[{stage}] {text}\n")
                if not after_redraw:  # a bar's final state is not a message
                    tail.append(text)
                after_redraw = False
            if not chunk and pending[consumed:]:
                sys.stderr.write(f"[{stage}] {redact(pending[consumed:])}\n")
                tail.append(redact(pending[consumed:]))
            sys.stderr.flush()
        pending = pending[consumed:]
        if not chunk:
            return


def error_paragraph(lines: list[str]) -> str:
    """The one readable paragraph at the end of a failed stage's stderr, never a traceback wall."""
    lines = [line.rstrip() for line in lines]
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("Traceback (most recent call last)"):
            after = [line for line in lines[index + 1 :] if line.strip() and not line.startswith((" ", "\t"))]
            if after:
                return after[-1].strip()
    while lines and not lines[-1].strip():
        lines.pop()
    paragraph: list[str] = []
    for line in reversed(lines):
        if not line.strip():
            break
        indented = line.startswith((" ", "\t"))
        if not indented and paragraph and not paragraph[0].startswith((" ", "\t")):
            break
        paragraph.insert(0, line)
    return "\n".join(paragraph[-20:]).strip()


class StopForwarder:
    """Ctrl+C, the GUI's Stop or SIGTERM stops the pipeline: the running stage stops (the trainer
    saves a checkpoint and exits 130) and no further stage starts.

    Stages stay in our process group, so a terminal's Ctrl+C, the GUI's group-wide SIGINT /
    CTRL_BREAK_EVENT and its final SIGKILL reach them directly; forwarding those as well would
    deliver them twice, and the trainer takes a second signal as "kill now". SIGTERM is forwarded
    on POSIX because it usually targets one process (`kill PID`, `docker stop`); Windows has no
    catchable SIGTERM from outside.

    The job's stop file (`ltxtrainer.stopfile`, for jobs no console signal reaches) counts as a
    first Ctrl+C too: the running stage inherits the variable and stops itself, and `requested`
    turns true so no further stage starts.
    """

    def __init__(self) -> None:
        self.requested = False
        self.child: subprocess.Popen | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        self.requested = True
        child = self.child
        if signum == getattr(signal, "SIGTERM", None) and os.name != "nt" and child is not None and child.poll() is None:
            child.send_signal(signum)

    def poll(self) -> bool:
        """True once a signal came or the stop file appeared."""
        if not self.requested and stop_requested():
            self.requested = True
        return self.requested

    def __enter__(self) -> StopForwarder:
        if threading.current_thread() is threading.main_thread():  # signals can only be caught there
            for name in ("SIGINT", "SIGTERM", "SIGBREAK"):
                signum = getattr(signal, name, None)
                if signum is not None:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def run_stage_process(
    stage: str, arguments: list[str], env: dict[str, str], redact: Redactor, stop: StopForwarder
) -> StageResult:
    """Run `scripts/<stage script> arguments...` with our interpreter, streaming its output through."""
    command = [sys.executable, str(SCRIPTS_DIR / STAGE_SCRIPTS[stage]), *arguments]
    child = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO_ROOT
    )
    stop.child = child
    errors: list[str] = []
    tail: deque[str] = deque(maxlen=200)
    readers = [
        threading.Thread(target=_forward_stdout, args=(child.stdout, stage, redact, errors), daemon=True),
        threading.Thread(target=_forward_stderr, args=(child.stderr, stage, redact, tail), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        while True:
            try:
                returncode = child.wait(timeout=STOP_FILE_POLL_S)
                break
            except subprocess.TimeoutExpired:
                stop.poll()  # the child sees the same file and stops itself; we only stop what follows
    finally:
        stop.child = None
    for reader in readers:
        reader.join()
    return StageResult(returncode, errors[-1] if errors else None, list(tail))


def child_environment(options: PipelineOptions) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONUTF8="1", PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1")
    if options.api_key:
        env[options.api_key_env] = options.api_key
    return env


