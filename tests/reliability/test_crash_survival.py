"""Crashes lose nothing: SIGKILL at random points, a full disk while saving, running out of GPU memory."""

from __future__ import annotations

import json
import random
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ltxtrainer.config import config_from_dict
from ltxtrainer.training import checkpoints
from ltxtrainer.training.lora_io import LORA_FILE
from ltxtrainer.training.trainer import TrainingFailed, run_training
from tests.precomputed import write_sample
from tests.reliability.conftest import (
    POSIX_ONLY,
    hard_kill,
    last_line,
    start_training,
    wait_for_step,
    write_config,
)
from tests.test_training import make_config

if sys.platform != "win32":  # no resource module on Windows; the tests using it are POSIX_ONLY
    import resource

STEPS = 30


@pytest.fixture
def dataset(tmp_path) -> Path:
    data = tmp_path / "数据 集"
    for index in range(3):
        write_sample(data, f"clip{index}", frames=2, height=2, width=2, seed=index)
    return data


def assert_every_checkpoint_loads(output: Path) -> list[int]:
    """Each folder taken as a checkpoint is whole: state.json, a readable LoRA, a loadable training state."""
    steps = []
    for step, folder in checkpoints.list_checkpoints(output):
        state = json.loads((folder / checkpoints.STATE_FILE).read_text(encoding="utf-8"))
        assert state["step"] == step
        assert load_file(str(folder / LORA_FILE)), folder
        training = torch.load(folder / checkpoints.TRAINING_STATE_FILE, map_location="cpu", weights_only=True)
        assert training["step"] == step
        steps.append(step)
    partials = sorted((output / checkpoints.CHECKPOINTS_DIR).glob(".*.partial"))
    assert not {p.name for p in partials} & {f.name for _, f in checkpoints.list_checkpoints(output)}
    return steps


def kill_during_save(process, output: Path, deadline_s: float) -> bool:
    """SIGKILL the moment a staging folder exists (a save in progress); True when one was seen."""
    root = output / checkpoints.CHECKPOINTS_DIR
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and process.poll() is None:
        if root.is_dir() and any(root.glob(".step_*.partial")):
            process.send_signal(signal.SIGKILL)
            return True
        time.sleep(0.0005)
    return False


@POSIX_ONLY
def test_sigkill_at_random_points_then_resume_matches_an_uninterrupted_run(tiny_model_dir, dataset, tmp_path, outcome):
    common = {"optimization.steps": STEPS, "checkpoints.interval": 1, "checkpoints.keep_last_n": -1,
              "lora.dropout": 0.1}
    straight = run_training(config_from_dict(make_config(tiny_model_dir, dataset, tmp_path / "straight", **common)))

    output = tmp_path / "killed run"
    config = write_config(tmp_path / "config.yaml", make_config(tiny_model_dir, dataset, output, **common))
    # Seeded random kill points: a number of steps after the run's first step plus a fraction of a step, so
    # they land at different phases of the loop however fast this machine happens to be.
    chance = random.Random(2024)
    later = [(chance.randint(1, 4), chance.uniform(0.0, 0.15)) for _ in range(2)]
    kills = []
    for attempt, point in enumerate([None, *later]):  # None: timed to land inside a checkpoint save
        process = start_training(config, *(["--resume"] if attempt else []))
        first = wait_for_step(process, at_least=3 if point is None else 1)
        assert first is not None, process.communicate()[1][-2000:]
        if point is None:
            assert kill_during_save(process, output, deadline_s=30), "no save was caught in progress"
            kills.append("during a checkpoint save")
        else:
            steps_after, delay = point
            assert wait_for_step(process, at_least=first["step"] + steps_after) is not None
            time.sleep(delay)
            kills.append(f"{delay:.2f} s after step {first['step'] + steps_after}")
        stderr = hard_kill(process)
        assert process.returncode == -signal.SIGKILL, stderr[-2000:]
        if attempt:
            assert "Resuming from" in stderr
        saved = assert_every_checkpoint_loads(output)
        assert saved and max(saved) < STEPS

    latest = checkpoints.list_checkpoints(output)[-1][0]
    process = start_training(config, "--resume")
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-2000:]
    assert f"Resuming from {checkpoints.checkpoint_dir(output, latest)} at step {latest}" in stderr
    assert not list((output / checkpoints.CHECKPOINTS_DIR).glob(".*.partial"))
    assert_every_checkpoint_loads(output)

    expected, actual = load_file(str(straight.lora_path)), load_file(str(output / LORA_FILE))
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key].float(), expected[key].float(), rtol=1e-3, atol=1e-5)
    outcome(
        fault="Training killed with SIGKILL (3 times), then --resume",
        tried=f"scripts/train.py, {STEPS} steps, a checkpoint every step; kills: " + ", ".join(kills),
        happened=f"each kill left only complete checkpoints; the last resume said: {last_line_with(stderr, 'Resuming')}",
        kept=f"every checkpoint folder loads; final LoRA equals an uninterrupted run's ({len(expected)} tensors, "
        "rtol 1e-3)",
    )


def last_line_with(text: str, word: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if word in line), "")


def _limit_file_size(limit: int):
    def apply() -> None:
        # A full disk, seen from the writer: writes past the limit fail with EFBIG (OSError), not a signal.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.fixture(scope="module")
def disk_full_run(tiny_model_dir, tmp_path_factory) -> dict:
    """Train 2 steps, then resume with writes capped at 20 kB so the step-3 checkpoint cannot be written."""
    root = tmp_path_factory.mktemp("disk full")
    dataset = root / "data"
    write_sample(dataset, "clip", frames=2, height=2, width=2, seed=0)
    output = root / "run"
    first = make_config(tiny_model_dir, dataset, output, **{"optimization.steps": 2, "checkpoints.interval": 1})
    process = start_training(write_config(root / "first.yaml", first))
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-2000:]
    before = {path.name: path.read_bytes() for path in checkpoints.checkpoint_dir(output, 2).iterdir()}

    more = make_config(tiny_model_dir, dataset, output, **{"optimization.steps": 6, "checkpoints.interval": 1})
    # 20 kB: the config and metrics lines still fit, a LoRA file (37 kB) or optimizer state (98 kB) does not.
    process = start_training(write_config(root / "more.yaml", more), "--resume", preexec=_limit_file_size(20_000))
    _, stderr = process.communicate(timeout=300)
    return {"output": output, "before": before, "returncode": process.returncode, "stderr": stderr}


@POSIX_ONLY
def test_disk_full_while_saving_keeps_the_previous_checkpoint(disk_full_run, outcome):
    output, stderr = disk_full_run["output"], disk_full_run["stderr"]
    assert disk_full_run["returncode"] != 0, stderr[-2000:]
    assert max(step for step, _ in checkpoints.list_checkpoints(output)) == 2
    after = {path.name: path.read_bytes() for path in checkpoints.checkpoint_dir(output, 2).iterdir()}
    assert after == disk_full_run["before"]
    assert not list((output / checkpoints.CHECKPOINTS_DIR).glob(".*"))  # the staging folder was removed
    assert_every_checkpoint_loads(output)
    outcome(
        fault="Disk full while saving a checkpoint: nothing lost",
        tried="resume at step 2 under RLIMIT_FSIZE=20 kB (SIGXFSZ ignored), so the step-3 save's writes fail",
        happened=f"exit {disk_full_run['returncode']}; last line: {last_line(stderr)}",
        kept="checkpoint step_000002 byte-identical and loadable; no staging folder left",
    )


@POSIX_ONLY
def test_disk_full_while_saving_says_so_in_one_paragraph(disk_full_run, outcome):
    stderr = disk_full_run["stderr"]
    outcome(
        fault="Disk full while saving a checkpoint: the message",
        tried="the same run as above; the user reads stderr",
        happened=f"exit {disk_full_run['returncode']}; last line: {last_line(stderr)}",
        kept="(see the row above)",
    )
    message = last_line_with(stderr, "Could not save")
    assert disk_full_run["returncode"] == 1
    assert "Traceback" not in stderr
    assert "Could not save the checkpoint of step 3" in message and "previous checkpoint is intact" in message
    assert "Free disk space" in message and "--resume" in message


def test_out_of_gpu_memory_names_the_memory_settings_and_saves_completed_steps(
    tiny_model_dir, dataset, tmp_path, outcome
):
    from diffusers import LTXVideoTransformer3DModel

    calls = [0]

    def run_out_of_memory_at_step_4(module, args, output):
        if isinstance(module, LTXVideoTransformer3DModel):
            calls[0] += 1
            if calls[0] == 4:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    output = tmp_path / "run"
    config = config_from_dict(make_config(tiny_model_dir, dataset, output, **{"optimization.steps": 8}))
    # A global hook: run_training loads its own transformer, and this is the only way in without mocking it.
    hook = torch.nn.modules.module.register_module_forward_hook(run_out_of_memory_at_step_4)
    try:
        with pytest.raises(TrainingFailed) as raised:
            run_training(config)
    finally:
        hook.remove()
    message = str(raised.value)
    assert "Out of GPU memory at step 4" in message
    assert "quantization" in message and "gradient_checkpointing" in message and "smaller resolution bucket" in message
    assert [step for step, _ in checkpoints.list_checkpoints(output)] == [3]
    assert_every_checkpoint_loads(output)
    end = [json.loads(line) for line in (output / "metrics.jsonl").read_text(encoding="utf-8").splitlines()][-1]
    assert end == {**end, "event": "train_end", "status": "out_of_memory", "step": 3}

    resumed = run_training(
        config_from_dict(make_config(tiny_model_dir, dataset, output, **{"optimization.steps": 5})), resume=True
    )
    assert resumed.final_step == 5
    outcome(
        fault="Out of GPU memory inside a step",
        tried="torch.OutOfMemoryError raised from a forward hook on the transformer at step 4 of 8",
        happened=f"TrainingFailed: {message}",
        kept="checkpoint of the 3 completed steps, loadable; --resume continued from it to the end",
    )
