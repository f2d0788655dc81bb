"""The GUI's job runner: real child processes, a real queue, state that survives a server restart."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from types import SimpleNamespace

import pytest

from ltxtrainer.ui import monitor
from ltxtrainer.ui.jobs import JOB_FILE, DuplicateJobError, JobRunner, parse_events, read_log_tail
from ltxtrainer.ui.runs import loss_points
from ltxtrainer.ui.tab_pipeline import own_job

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


def test_an_identical_second_start_is_refused_while_the_first_is_queued_or_running(runner, tmp_path):
    blocker = runner.submit("test", "blocker", python(STUBBORN), cwd=tmp_path)
    wait_for(lambda: runner.get(blocker.id).status == "running")
    with pytest.raises(DuplicateJobError) as running_copy:
        runner.submit("test", "blocker again", python(STUBBORN), cwd=tmp_path)
    assert running_copy.value.existing.id == blocker.id
    queued = runner.submit("test", "queued", python("print(1)"), cwd=tmp_path)
    with pytest.raises(DuplicateJobError):
        runner.submit("test", "queued again", python("print(1)"), cwd=tmp_path)
    assert [job.id for job in runner.queue()] == [queued.id]
    runner.submit("test", "other", python("print(2)"), cwd=tmp_path)  # a different command queues
    assert len(runner.queue()) == 2


def test_cancel_takes_only_a_queued_job_out_of_the_queue(runner, tmp_path):
    blocker = runner.submit("test", "blocker", python(STUBBORN), cwd=tmp_path)
    queued = runner.submit("test", "queued", python("print('must not run')"), cwd=tmp_path)
    wait_for(lambda: runner.get(blocker.id).status == "running")
    assert runner.cancel(blocker.id) is False  # running: Stop, not cancel
    assert runner.cancel(queued.id) is True
    assert runner.cancel(queued.id) is False
    assert runner.get(queued.id).status == "cancelled" and runner.queue() == []
    # once cancelled, the same command may be queued again
    again = runner.submit("test", "queued", python("print('must not run')"), cwd=tmp_path)
    assert runner.get(again.id).status == "queued"


# A stand-in for run_pipeline.py's JSON contract: pipeline_start, a training stage, and on Ctrl+C
# pipeline_end "stopped" with the checkpoint and exit 130.
PIPELINE_LIKE = textwrap.dedent(
    """
    import json, signal, sys, time
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    def emit(**fields):
        print(json.dumps(fields), flush=True)
    emit(event="pipeline_start", project="APT", run_name="APT_run", run_dir="/runs/APT_run",
         status_file="/runs/APT_run/pipeline_status.json", stages=["split", "train", "export"], resume=False)
    emit(event="pipeline", stage="split", status="done", message="8 scenes")
    emit(event="pipeline", stage="train", status="running", message="running train.py")
    for step in range(1, 100000):
        emit(event="step", step=step, total_steps=1000, loss=str(1.0 / step), steps_per_s=2.0, eta_s=(1000 - step) / 2)
        print(f"train step {step}", file=sys.stderr, flush=True)
        if stop:
            emit(event="checkpoint", step=step, path="/runs/APT_run/checkpoints/step_%06d" % step)
            emit(event="pipeline_end", status="stopped", run_name="APT_run", run_dir="/runs/APT_run", lora=None,
                 comfyui_lora=None, checkpoint="/runs/APT_run/checkpoints/step_%06d" % step, stage="train",
                 message="Stopped at step %d; continue with --run-name APT_run --resume." % step)
            sys.exit(130)
        time.sleep(0.05)
    """
)


def test_a_stopped_jobs_outcome_stays_with_its_tab_after_the_next_job_starts(runner, tmp_path):
    page = SimpleNamespace(runner=runner)  # what own_job reads of the page: its runner
    started = runner.submit("pipeline", "APT 64x64x25", python(PIPELINE_LIKE), cwd=tmp_path, meta={"tab": "pipeline"})
    following = runner.submit("export", "export", python("import time; time.sleep(0.5)"), cwd=tmp_path,
                              meta={"tab": "export"})
    wait_for(lambda: any(e["event"] == "step" for e in runner.events(started.id)))
    running = monitor.stage_progress(runner.events(started.id), runner.get(started.id))
    assert [(stage.name, stage.state) for stage in running] == [("split", "done"), ("train", "running"),
                                                                ("export", "pending")]
    assert running[1].total == 1000 and running[1].rate == 2.0 and running[1].eta_s is not None

    assert runner.stop(started.id) == "interrupted"
    wait_for(lambda: runner.get(following.id).status != "queued")  # the queue moves on at once
    job = own_job(page, None, "pipeline")  # a reloaded page: no job id in the session
    assert job.id == started.id and job.status == "stopped"
    outcome = monitor.job_outcome(job, runner.events(job.id), runner.read_log(job.id))
    assert outcome.state == "stopped" and outcome.checkpoint.startswith("/runs/APT_run/checkpoints/step_")
    assert outcome.run_dir == "/runs/APT_run"
    for lang, word in (("zh", "已停止"), ("en", "Stopped")):
        banner = monitor.banner_html(outcome, lang)
        assert word in banner and outcome.checkpoint in banner and 'data-state="stopped"' in banner
    log = monitor.human_lines(runner.read_log(job.id))
    assert "train step 1" in log and '"event"' not in log
    points = monitor.loss_frame(loss_points(runner.events(job.id)))  # losses printed as strings
    assert str(points["value"].dtype) == "float64" and set(points["series"]) == {"loss", "smoothed"}
