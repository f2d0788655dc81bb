"""scripts/train.py as users run it: exit codes, Ctrl+C, and two processes under accelerate."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ltxtrainer.training import checkpoints
from tests.precomputed import write_sample
from tests.test_training import make_config

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "scripts" / "train.py")


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def events(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def dataset(tmp_path) -> Path:
    data = tmp_path / "数据 集"
    for index in range(4):
        write_sample(data, f"clip{index}", frames=2, height=2, width=2, seed=index)
    return data


def test_two_processes_under_accelerate_launch_train_with_ddp(tiny_model_dir, dataset, tmp_path):
    output = tmp_path / "run"
    config = write_config(
        tmp_path / "config.yaml", make_config(tiny_model_dir, dataset, output, **{"optimization.steps": 4})
    )
    # `--cpu --num_processes 2` silently runs one process; this form gives two gloo ranks (FIELD_NOTES §6).
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), TRAIN, str(config),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    start = next(event for event in events(output) if event["event"] == "train_start")
    assert start["processes"] == 2
    assert (output / "lora_weights.safetensors").is_file()
    assert [e["step"] for e in events(output) if e["event"] == "step"] == [1, 2, 3, 4]


@pytest.mark.skipif(sys.platform == "win32", reason="Windows cannot send SIGINT to a child (Popen.send_signal "
                    "raises); the stop-file path that Windows uses is tests/test_windows.py's")
def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(tiny_model_dir, dataset, tmp_path):
    output = tmp_path / "run"
    config = write_config(
        tmp_path / "config.yaml", make_config(tiny_model_dir, dataset, output, **{"optimization.steps": 100000})
    )
    process = subprocess.Popen(
        [sys.executable, TRAIN, str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        for line in process.stdout:  # wait until training really runs
            if json.loads(line).get("event") == "step":
                break
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr[-2000:]
    assert "--resume" in stderr and "Traceback" not in stderr
    saved = checkpoints.list_checkpoints(output)
    assert saved and saved[-1][0] >= 1
    stopped_at = saved[-1][0]

    finish = write_config(
        tmp_path / "finish.yaml",
        make_config(tiny_model_dir, dataset, output, **{"optimization.steps": stopped_at + 3}),
    )
    result = subprocess.run(
        [sys.executable, TRAIN, str(finish), "--resume"], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Resuming from" in result.stderr
    steps = [e["step"] for e in events(output) if e["event"] == "step"]
    assert steps[-3:] == [stopped_at + 1, stopped_at + 2, stopped_at + 3]


def test_user_errors_exit_1_with_a_paragraph_not_a_traceback(tiny_model_dir, dataset, tmp_path):
    bad = make_config(tiny_model_dir, dataset, tmp_path / "run")
    bad["optimization"]["scheduler_type"] = "cosin"
    result = subprocess.run(
        [sys.executable, TRAIN, str(write_config(tmp_path / "bad.yaml", bad))], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "optimization.scheduler_type" in result.stderr and "Traceback" not in result.stderr

    broken_model = tmp_path / "broken model"
    shutil.copytree(tiny_model_dir, broken_model)
    shard = sorted((broken_model / "transformer").glob("*-00002-of-*.safetensors"))[0]
    shard.unlink()
    config = write_config(tmp_path / "c.yaml", make_config(broken_model, dataset, tmp_path / "run2"))
    result = subprocess.run([sys.executable, TRAIN, str(config)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert shard.name in result.stderr and "Traceback" not in result.stderr
    assert not checkpoints.list_checkpoints(tmp_path / "run2")
