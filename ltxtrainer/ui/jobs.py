"""The job runner: one subprocess at a time, a queue behind it, and every job's state on disk.

A training run outlives browser tabs and sometimes the GUI server itself, so nothing about a job
lives only in memory. Each job is a folder `<jobs_dir>/<id>/` holding `job.json` (its state) and
`log.txt`, into which the child writes its stdout and stderr directly (a file, not a pipe: a
pipe would break, and block the child, the moment the server goes away). The child is started
under a small supervisor (`python -m ltxtrainer.ui.jobs supervise ...`) that waits for it and
writes its exit code to `exit_code`; so a restarted server finds a finished job's real result,
and keeps following one that is still running by its pid.

Stopping is Ctrl+C semantics: the first Stop writes the job's stop file (`<job>/stop`, named to
the job in `LTXT_STOP_FILE`, see `ltxtrainer.stopfile`) and, on POSIX, also sends SIGINT to the
job's process group (the supervisor leads a new session), so `train.py` (and `run_pipeline.py`
with its stage child) saves a checkpoint and exits 130. A second Stop kills the group. On Windows
the job runs on a hidden console of its own (CREATE_NO_WINDOW), so closing the launcher's window,
whose close event reaches every process attached to it, no longer ends a training; no console
signal reaches it there either, which is why the stop file exists.

Secrets (an API key) are passed only in the child's environment, never written to job.json or
the log; a queued job that needs one cannot survive a server restart and is cancelled then.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ltxtrainer.atomic import write_text_atomic
from ltxtrainer.stopfile import STOP_FILE_ENV, request_stop

JOB_FILE = "job.json"
LOG_FILE = "log.txt"
EXIT_FILE = "exit_code"
STOP_FILE = "stop"
EXIT_STOPPED = 130  # what train.py and run_pipeline.py return after a clean stop

ACTIVE = ("running", "stopping")
ENDED = ("finished", "failed", "stopped", "killed", "cancelled", "lost")
_POLL_S = 0.3




@dataclass
class Job:
    id: str
    kind: str  # "pipeline", "train", "caption", "export", ...
    title: str
    argv: list[str]
    cwd: str
    meta: dict = field(default_factory=dict)  # what the views need: project, run_dir, status file, ...
    status: str = "queued"  # queued, running, stopping, then one of ENDED
    created: float = 0.0
    started: float | None = None
    ended: float | None = None
    pid: int | None = None
    exit_code: int | None = None
    stop_requests: int = 0
    message: str = ""
    needs_secret: bool = False

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def done(self) -> bool:
        return self.status in ENDED


class DuplicateJobError(ValueError):
    """The same command is already queued or running; a second copy would only redo its work."""

    def __init__(self, existing: Job):
        super().__init__(f"the same job is already {existing.status}: {existing.title}")
        self.existing = existing


def status_from_exit(exit_code: int | None, stop_requests: int) -> str:
    """Name a finished job's outcome from its exit code (None: it vanished without one)."""
    if exit_code == 0:
        return "finished"
    if exit_code == EXIT_STOPPED:
        return "stopped"
    if stop_requests >= 2:
        return "killed"
    if exit_code is None:
        return "lost"
    if stop_requests and exit_code < 0:
        return "stopped"
    return "failed"


def pid_alive(pid: int) -> bool:
    """Whether a process still runs; a zombie (exited, not yet reaped) counts as gone."""
    if os.name == "nt":
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    status = Path(f"/proc/{pid}/status")
    if status.is_file():
        for line in status.read_text(errors="replace").splitlines():
            if line.startswith("State:"):
                return "Z" not in line
    return True


def interrupt_group(pid: int, stop_file: Path) -> None:
    """Ctrl+C for the job's whole process group: the stage scripts save and exit 130.

    The stop file reaches every process of the job on every platform; SIGINT also reaches a child
    that does not poll it (a stage between steps, a library call). Windows has no console in
    common with a detached job, so the file is all there is.
    """
    request_stop(stop_file)
    if os.name != "nt":
        os.killpg(pid, signal.SIGINT)


def kill_group(pid: int) -> None:
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(pid)], capture_output=True, check=False)
    else:
        os.killpg(pid, signal.SIGKILL)


def read_log_tail(path: Path, max_lines: int = 200, max_bytes: int = 256_000) -> str:
    """The last lines of a log, with tqdm's carriage-return redraws collapsed to the final state."""
    if not path.is_file():
        return ""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - max_bytes))
        data = handle.read()
    text = data.decode("utf-8", errors="replace")
    lines = [line.rsplit("\r", 1)[-1] if "\r" in line.rstrip("\r") else line.rstrip("\r") for line in text.split("\n")]
    if size > max_bytes:
        lines = lines[1:]  # the first line was cut in the middle
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines[-max_lines:])


def parse_events(text: str) -> list[dict]:
    """The JSON progress lines (objects with an "event" key) among a log's lines."""
    events = []
    for line in text.splitlines():
        # stdout and stderr share the log, so a progress bar (stderr, no newline) can stand in front
        # of a JSON line from stdout on the same line.
        start = line.find('{"event"')
        if start < 0:
            continue
        line = line[start:].strip()
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "event" in record:
            events.append(record)
    return events


class JobRunner:
    """Runs queued jobs one after another in a worker thread; all state is in `jobs_dir`."""

    def __init__(self, jobs_dir: str | Path, *, start_worker: bool = True):
        self.jobs_dir = Path(jobs_dir)
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._jobs: dict[str, Job] = {}
        self._processes: dict[str, subprocess.Popen] = {}
        self._secrets: dict[str, dict[str, str]] = {}
        self._event_cache: dict[str, tuple[int, list[dict]]] = {}
        self._load()
        self._worker = threading.Thread(target=self._work, name="ltxtrainer-jobs", daemon=True)
        if start_worker:
            self._worker.start()

    # ---- public --------------------------------------------------------------------------------
    def submit(
        self,
        kind: str,
        title: str,
        argv: list[str],
        cwd: str | Path,
        meta: dict | None = None,
        secret_env: dict[str, str] | None = None,
    ) -> Job:
        """Queue a command; it starts as soon as no other job runs.

        Raises DuplicateJobError when the identical command (same argv and folder) is already
        queued or running: a second click on Start must not train the same thing twice.
        """
        job = Job(
            id=time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6],
            kind=kind,
            title=title,
            argv=[str(part) for part in argv],
            cwd=str(cwd),
            meta=dict(meta or {}),
            created=time.time(),
            needs_secret=bool(secret_env),
        )
        with self._lock:
            for existing in self._jobs.values():
                if existing.status in ("queued", *ACTIVE) and existing.argv == job.argv and existing.cwd == job.cwd:
                    raise DuplicateJobError(Job(**asdict(existing)))
            self._jobs[job.id] = job
            if secret_env:
                self._secrets[job.id] = dict(secret_env)
            self._save(job)
        self._wake.set()
        return job

    def stop(self, job_id: str) -> str:
        """Cancel a queued job, interrupt a running one, kill one already interrupted.

        Returns what was done: "cancelled", "interrupted", "killed" or "nothing".
        """
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.done:
                return "nothing"
            if job.status == "queued":
                self._finish(job, "cancelled", None, "cancelled before it started")
                return "cancelled"
            job.stop_requests += 1
            job.status = "stopping"
            self._save(job)
            pid = job.pid
        if pid is None:
            return "nothing"
        try:
            if job.stop_requests == 1:
                interrupt_group(pid, self.jobs_dir / job_id / STOP_FILE)
                return "interrupted"
            kill_group(pid)
            return "killed"
        except (ProcessLookupError, PermissionError, OSError):
            return "nothing"

    def cancel(self, job_id: str) -> bool:
        """Take a job out of the queue before it starts; False when it is no longer queued."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.status != "queued":
                return False
            self._finish(job, "cancelled", None, "cancelled before it started")
            return True

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else Job(**asdict(job))

    def jobs(self) -> list[Job]:
        """Every known job, newest first."""
        with self._lock:
            return sorted((Job(**asdict(j)) for j in self._jobs.values()), key=lambda j: j.created, reverse=True)

    def current(self, kind: str | None = None) -> Job | None:
        """The running job, else the oldest queued one, else the newest job (of `kind` if given)."""
        jobs = [job for job in self.jobs() if kind is None or job.kind == kind]
        for wanted in (ACTIVE, ("queued",)):
            matching = [job for job in jobs if job.status in wanted]
            if matching:
                return matching[-1]
        return jobs[0] if jobs else None

    def queue(self) -> list[Job]:
        """Queued jobs, the next to start first."""
        return [job for job in reversed(self.jobs()) if job.status == "queued"]

    def log_path(self, job_id: str) -> Path:
        return self.jobs_dir / job_id / LOG_FILE

    def read_log(self, job_id: str, max_lines: int = 200) -> str:
        return read_log_tail(self.log_path(job_id), max_lines=max_lines)

    def events(self, job_id: str) -> list[dict]:
        """Every JSON progress line the job printed so far (read incrementally)."""
        path = self.log_path(job_id)
        if not path.is_file():
            return []
        with self._lock:
            offset, events = self._event_cache.get(job_id, (0, []))
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
        complete = data.rfind(b"\n") + 1  # leave a half-written last line for the next read
        events = events + parse_events(data[:complete].decode("utf-8", errors="replace"))
        with self._lock:
            self._event_cache[job_id] = (offset + complete, events)
        return list(events)

    def wait(self, job_id: str, timeout: float) -> Job:
        """Block until the job ended (or the timeout passed); used by tests and scripts."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(job_id)
            if job is None or job.done:
                break
            time.sleep(_POLL_S)
        return self.get(job_id)  # type: ignore[return-value]

    def close(self) -> None:
        """Stop following jobs; running children go on (a new runner picks them up)."""
        self._closing.set()
        self._wake.set()
        if self._worker.is_alive():
            self._worker.join(timeout=5)

    # ---- persistence ---------------------------------------------------------------------------
    def _save(self, job: Job) -> None:
        write_text_atomic(self.jobs_dir / job.id / JOB_FILE, json.dumps(asdict(job), ensure_ascii=False, indent=2))

    def _load(self) -> None:
        """Read every job folder; settle jobs whose process ended while no runner watched."""
        for file in sorted(self.jobs_dir.glob(f"*/{JOB_FILE}")):
            try:
                job = Job(**json.loads(file.read_text(encoding="utf-8")))
            except (ValueError, TypeError):
                continue
            self._jobs[job.id] = job
            if job.status == "queued" and job.needs_secret:
                self._finish(job, "cancelled", None, "the server restarted before it started; its API key is not kept")
            elif job.active:
                self._settle_if_ended(job)

    def _settle_if_ended(self, job: Job) -> bool:
        exit_file = self.jobs_dir / job.id / EXIT_FILE
        process = self._processes.get(job.id)
        if exit_file.is_file():
            code = int(exit_file.read_text(encoding="utf-8").strip() or "1")
        elif process is not None and process.poll() is not None:
            code = None if process.returncode < 0 or job.stop_requests >= 2 else process.returncode
        elif process is None and (job.pid is None or not pid_alive(job.pid)):
            code = None
        else:
            return False
        if process is not None and process.poll() is None:
            return False  # the supervisor is still closing; its exit comes in a moment
        self._processes.pop(job.id, None)
        self._finish(job, status_from_exit(code, job.stop_requests), code, "")
        return True

    def _finish(self, job: Job, status: str, exit_code: int | None, message: str) -> None:
        job.status = status
        job.exit_code = exit_code
        job.ended = time.time()
        job.message = message
        self._secrets.pop(job.id, None)
        self._save(job)

    # ---- the worker ----------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._closing.is_set():
            with self._lock:
                active = [job for job in self._jobs.values() if job.active]
                for job in active:
                    self._settle_if_ended(job)
                still_active = any(job.active for job in self._jobs.values())
                queued = sorted((j for j in self._jobs.values() if j.status == "queued"), key=lambda j: j.created)
                if not still_active and queued:
                    self._launch(queued[0])
            self._wake.wait(_POLL_S)
            self._wake.clear()

    def _launch(self, job: Job) -> None:
        folder = self.jobs_dir / job.id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / STOP_FILE).unlink(missing_ok=True)  # a Stop of an earlier attempt is no request for this one
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONUTF8": "1", "PYTHONIOENCODING": "utf-8",
               STOP_FILE_ENV: str(folder / STOP_FILE)}
        env.update(self._secrets.get(job.id, {}))
        command = [sys.executable, "-m", "ltxtrainer.ui.jobs", "supervise", str(folder), "--", *job.argv]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")]))
        options: dict = {}
        if os.name == "nt":
            # Its own hidden console: closing the launcher's window must not end the training.
            # (DETACHED_PROCESS would give no console at all, and every console child of the job
            # would then open a window of its own.)
            options["creationflags"] = (
                subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW  # type: ignore[attr-defined]
            )
        else:
            options["start_new_session"] = True
        with open(folder / LOG_FILE, "ab") as log:
            log.write(f"$ {subprocess.list2cmdline(job.argv)}\n".encode())
            log.flush()
            try:
                process = subprocess.Popen(
                    command, cwd=job.cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    **options,
                )
            except OSError as error:
                self._finish(job, "failed", None, f"could not start: {error}")
                return
        self._processes[job.id] = process
        job.status = "running"
        job.pid = process.pid
        job.started = time.time()
        self._save(job)


_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def supervise(job_dir: Path, argv: list[str]) -> int:
    """Run the job's command and record its exit code, surviving the GUI server.

    The supervisor shares the child's process group, so the GUI's Ctrl+C reaches it too; a
    Python-level handler (not SIG_IGN, which a child would inherit across exec) lets it ignore
    that and wait while the child saves its checkpoint.
    """
    for name in ("SIGINT", "SIGBREAK"):
        signum = getattr(signal, name, None)
        if signum is not None:
            signal.signal(signum, lambda *_: None)
    try:
        code = subprocess.call(argv)
    except OSError as error:
        print(f"could not start {argv[0]}: {error}", file=sys.stderr, flush=True)
        code = 127
    write_text_atomic(job_dir / EXIT_FILE, f"{code}\n")
    return code


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "supervise" and sys.argv[3] == "--":
        sys.exit(supervise(Path(sys.argv[2]), sys.argv[4:]))
    print("usage: python -m ltxtrainer.ui.jobs supervise JOB_DIR -- COMMAND...", file=sys.stderr)
    sys.exit(2)
