"""The GUI's job runner: real child processes, a real queue, state that survives a server restart."""

from __future__ import annotations

import json
import sys
import textwrap
import time

import pytest

from ltxtrainer.ui.jobs import JOB_FILE, JobRunner, parse_events, read_log_tail

# A stand-in for train.py's stop protocol: JSON step lines, Ctrl+C -> "checkpoint", exit 130.
TRAINER_LIKE = textwrap.dedent(
    """
    import json, signal, sys, time
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    if hasattr(signal, "SIGBREAK"):
        signal.signal(signal.SIGBREAK, lambda *_: stop.append(1))
    for step in range(1, 100000):
        print(json.dumps({"event": "step", "step": step, "loss": 1.0 / step}), flush=True)
        print(f"训练 step {step}", file=sys.stderr, flush=True)
        if stop:
            print(json.dumps({"event": "checkpoint", "step": step}), flush=True)
            sys.exit(130)
        time.sleep(0.05)
    """
)

STUBBORN = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(600)\n"


def wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def runner(tmp_path):
    runner = JobRunner(tmp_path / "jobs 任务")
    yield runner
    for job in runner.jobs():
        if job.active:
            runner.stop(job.id)
            runner.stop(job.id)
    runner.close()


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_finished_job_keeps_its_log_and_progress_events(runner, tmp_path):
    code = "import json,sys\nprint(json.dumps({'event':'progress','stage':'split','done':1,'total':2}))\nprint('人类 line', file=sys.stderr)"
    job = runner.submit("test", "demo", python(code), cwd=tmp_path)
    ended = runner.wait(job.id, timeout=60)
    assert ended.status == "finished" and ended.exit_code == 0
    assert "人类 line" in runner.read_log(job.id)
    assert runner.events(job.id)[0]["stage"] == "split"


def test_failing_job_reports_failure_and_the_queue_runs_jobs_one_at_a_time(runner, tmp_path):
    first = runner.submit("test", "fails", python("import sys, time; time.sleep(0.5); sys.exit(3)"), cwd=tmp_path)
    second = runner.submit("test", "after", python("print('second')"), cwd=tmp_path)
    assert runner.get(second.id).status in ("queued", "running")
    first_done = runner.wait(first.id, timeout=60)
    second_done = runner.wait(second.id, timeout=60)
    assert first_done.status == "failed" and first_done.exit_code == 3
    assert second_done.status == "finished"
    assert second_done.started >= first_done.ended


def test_stop_interrupts_like_ctrl_c_then_a_second_stop_kills(runner, tmp_path):
    job = runner.submit("train", "trainer", python(TRAINER_LIKE), cwd=tmp_path)
    wait_for(lambda: any(e["event"] == "step" for e in runner.events(job.id)))
    assert runner.stop(job.id) == "interrupted"
    stopped = runner.wait(job.id, timeout=60)
    assert stopped.status == "stopped" and stopped.exit_code == 130
    assert runner.events(job.id)[-1]["event"] == "checkpoint"

    stubborn = runner.submit("train", "ignores ctrl+c", python(STUBBORN), cwd=tmp_path)
    wait_for(lambda: "ready" in runner.read_log(stubborn.id))
    assert runner.stop(stubborn.id) == "interrupted"
    assert runner.stop(stubborn.id) == "killed"
    assert runner.wait(stubborn.id, timeout=60).status == "killed"


def test_cancelling_a_queued_job_never_starts_it(runner, tmp_path):
    blocker = runner.submit("test", "blocker", python(STUBBORN), cwd=tmp_path)
    queued = runner.submit("test", "queued", python("print('must not run')"), cwd=tmp_path)
    wait_for(lambda: runner.get(blocker.id).status == "running")
    assert runner.stop(queued.id) == "cancelled"
    runner.stop(blocker.id)
    runner.stop(blocker.id)
    runner.wait(blocker.id, timeout=60)
    assert runner.get(queued.id).status == "cancelled"
    assert "must not run" not in runner.read_log(queued.id)


def test_a_restarted_server_shows_running_and_finished_jobs_and_can_stop_them(tmp_path):
    jobs_dir = tmp_path / "jobs"
    first = JobRunner(jobs_dir)
    done = first.submit("test", "quick", python("print('finished before restart')"), cwd=tmp_path)
    first.wait(done.id, timeout=60)
    running = first.submit("train", "long", python(TRAINER_LIKE), cwd=tmp_path)
    wait_for(lambda: first.events(running.id))
    first.close()  # the server goes away; the child keeps running and logging

    second = JobRunner(jobs_dir)
    try:
        assert second.get(done.id).status == "finished"
        assert "finished before restart" in second.read_log(done.id)
        assert second.get(running.id).status == "running"
        steps_before = len(second.events(running.id))
        wait_for(lambda: len(second.events(running.id)) > steps_before)
        assert second.stop(running.id) == "interrupted"
        stopped = second.wait(running.id, timeout=60)
        assert stopped.status == "stopped" and stopped.exit_code == 130
    finally:
        second.close()
    third = JobRunner(jobs_dir, start_worker=False)
    assert third.get(running.id).status == "stopped"
    assert "训练 step 1" in third.read_log(running.id)


def test_secrets_reach_the_child_but_never_the_disk(runner, tmp_path):
    code = "import os; print('key length', len(os.environ['LTXT_TEST_KEY']))"
    job = runner.submit("caption", "api", python(code), cwd=tmp_path, secret_env={"LTXT_TEST_KEY": "sk-secret-123"})
    runner.wait(job.id, timeout=60)
    assert "key length 13" in runner.read_log(job.id)
    folder = runner.jobs_dir / job.id
    for file in folder.iterdir():
        assert "sk-secret-123" not in file.read_text(encoding="utf-8", errors="replace")
    assert json.loads((folder / JOB_FILE).read_text(encoding="utf-8"))["needs_secret"] is True


def test_queued_job_with_a_secret_is_cancelled_after_a_restart(tmp_path):
    jobs_dir = tmp_path / "jobs"
    first = JobRunner(jobs_dir, start_worker=False)  # never runs anything: the job stays queued
    job = first.submit("caption", "api", python("print(1)"), cwd=tmp_path, secret_env={"K": "v"})
    first.close()
    second = JobRunner(jobs_dir, start_worker=False)
    assert second.get(job.id).status == "cancelled"
    assert "API key" in second.get(job.id).message


def test_log_tail_collapses_progress_bar_redraws(tmp_path):
    log = tmp_path / "log.txt"
    log.write_bytes(b"start\ntrain  10%\rtrain  50%\rtrain 100%\n{\"event\": \"step\", \"step\": 1}\nnot json {\n")
    assert read_log_tail(log).splitlines() == ["start", "train 100%", '{"event": "step", "step": 1}', "not json {"]
    assert parse_events(read_log_tail(log)) == [{"event": "step", "step": 1}]
