"""Services going away mid-run: the caption API breaking down, the GUI server restarting under a training job."""

from __future__ import annotations

import json
import sys
import threading
import time

import pytest

from ltxtrainer.captioning import caption_clips
from ltxtrainer.training import checkpoints
from ltxtrainer.ui.jobs import JobRunner
from tests.precomputed import write_sample
from tests.reliability.conftest import REPO, last_line, write_config
from tests.test_captioning_api import Answer, ChatServer, captioner_for, completion, make_clips
from tests.test_training import make_config


def test_caption_api_down_mid_run_keeps_captions_and_a_rerun_finishes_the_rest(tmp_path, outcome):
    healthy = threading.Event()

    def answer(index: int, request: dict) -> Answer:
        if index < 2 or healthy.is_set():
            return completion(f"A square moves, caption {index}.")
        if index % 2:
            return 500, {"Content-Type": "application/json"}, b'{"error": {"message": "upstream exploded"}}'
        return 200, {"Content-Type": "application/json"}, b'{"choices": [{"message": garbage'

    server = ChatServer(answer)
    clips_dir = tmp_path / "片段 clips"
    make_clips(clips_dir, 4)
    try:
        with captioner_for(server) as captioner:
            first = caption_clips(clips_dir, captioner)
        kept = json.loads((clips_dir / "captions.json").read_text(encoding="utf-8"))
        healthy.set()
        requests_before = len(server.requests)
        with captioner_for(server) as captioner:
            second = caption_clips(clips_dir, captioner)
        rerun_requests = len(server.requests) - requests_before
    finally:
        server.close()
    assert first.captioned == ["clip_0.mp4", "clip_1.mp4"]
    assert [clip for clip, _ in first.failed] == ["clip_2.mp4", "clip_3.mp4"]
    assert "2 of 4 clips failed; re-run to finish them" in first.summary()
    assert all("HTTP 500" in reason or "not a chat completion" in reason for _, reason in first.failed)
    assert [entry["media_path"] for entry in kept] == ["clip_0.mp4", "clip_1.mp4"]
    assert second.skipped == ["clip_0.mp4", "clip_1.mp4"] and second.complete
    assert rerun_requests == 2, "the re-run must ask only for the two missing captions"
    final = json.loads((clips_dir / "captions.json").read_text(encoding="utf-8"))
    assert [entry["caption"] for entry in final][:2] == [entry["caption"] for entry in kept]
    assert len(final) == 4 and all((clips_dir / f"clip_{i}.txt").is_file() for i in range(4))
    outcome(
        fault="Caption API down mid-run (HTTP 500 and truncated JSON)",
        tried="the caption stage on 4 clips; the local server answers the first 2, then fails; then a re-run",
        happened=f"{first.summary()}; " + "; ".join(f"{clip}: {reason}" for clip, reason in first.failed),
        kept=f"captions.json and .txt of the 2 captions made; the re-run sent {rerun_requests} requests and finished",
    )


def step_lines(log: str) -> int:
    return log.count('"event": "step"')


@pytest.fixture(scope="module")
def restarted_gui(tiny_model_dir, tmp_path_factory) -> dict:
    """scripts/train.py run by one JobRunner, followed after a "restart" by a second one, then stopped."""
    root = tmp_path_factory.mktemp("gui restart")
    data = root / "data"
    for index in range(2):
        write_sample(data, f"clip{index}", frames=2, height=2, width=2, seed=index)
    output = root / "run"
    config = write_config(root / "config.yaml", make_config(tiny_model_dir, data, output, **{"optimization.steps": 100000}))
    jobs_dir = root / "jobs 任务"
    before = JobRunner(jobs_dir)
    job = before.submit("train", "训练 run", [sys.executable, str(REPO / "scripts" / "train.py"), str(config)], cwd=root)
    after = None
    try:
        wait_until(lambda: step_lines(before.read_log(job.id)) > 0, 120)
        before.close()  # the GUI server goes away; the training process must not
        after = JobRunner(jobs_dir)
        status_after_restart = after.get(job.id).status
        seen = step_lines(after.read_log(job.id, max_lines=100000))
        wait_until(lambda: step_lines(after.read_log(job.id, max_lines=100000)) > seen + 1, 120)
        stop_answer = after.stop(job.id)
        stopped = after.wait(job.id, timeout=120)
        return {
            "output": output, "status_after_restart": status_after_restart, "stop_answer": stop_answer,
            "stopped": stopped, "log": after.read_log(job.id, max_lines=100000), "events": after.events(job.id),
        }
    finally:
        runner = after or before
        if runner.get(job.id).active:  # never leave a training process behind
            runner.stop(job.id)
            runner.stop(job.id)
            runner.wait(job.id, timeout=30)
        runner.close()


def test_gui_server_restart_while_training_shows_status_and_logs(restarted_gui, outcome):
    stopped, log = restarted_gui["stopped"], restarted_gui["log"]
    assert restarted_gui["status_after_restart"] == "running"
    assert restarted_gui["stop_answer"] == "interrupted"
    assert stopped.status == "stopped" and stopped.exit_code == 130, log[-2000:]
    assert "--resume" in log
    assert checkpoints.list_checkpoints(restarted_gui["output"])
    outcome(
        fault="GUI server restarted while a training job runs",
        tried="a JobRunner starts scripts/train.py and is closed after the first step; a new JobRunner opens the "
        "same jobs dir, waits for more steps and presses Stop",
        happened=f"status after the restart: '{restarted_gui['status_after_restart']}'; the log kept growing; Stop -> "
        f"'{stopped.status}', exit {stopped.exit_code}; log ends: {last_line(log)}",
        kept="job.json and the whole log in the jobs dir; a checkpoint of the stopped run",
    )


def test_gui_job_progress_events_survive_the_progress_bar(restarted_gui, outcome):
    metrics = (restarted_gui["output"] / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    steps_done = sum(json.loads(line)["event"] == "step" for line in metrics)
    steps_seen = sum(event["event"] == "step" for event in restarted_gui["events"])
    outcome(
        fault="GUI progress of a real training job",
        tried="JobRunner.events() of the scripts/train.py job above, against its metrics.jsonl",
        happened=f"the runner parsed {steps_seen} step events; the run wrote {steps_done}",
        kept="metrics.jsonl has every step",
    )
    assert steps_seen == steps_done


def wait_until(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except ValueError:  # max() of no steps yet
            pass
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")
