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
import torch
import yaml
from safetensors.torch import load_file

from ltxtrainer.training import checkpoints
from ltxtrainer.training.lora_io import RANK_ADAPTERS_ENV
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


def launch_two_ranks(config: Path, cwd: Path, ranks_dir: Path, *options: str, resume: bool = False):
    """scripts/train.py under `accelerate launch` on two gloo ranks, each writing its adapter per micro-step."""
    # `--cpu --num_processes 2` silently runs one process; this form gives two gloo ranks (FIELD_NOTES §6).
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", RANK_ADAPTERS_ENV: str(ranks_dir)}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", *options, "--num_processes", "2", "--num_machines", "1",
        "--dynamo_backend", "no", "--main_process_port", str(free_port()), TRAIN, str(config),
        *(["--resume"] if resume else []),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def rank_adapters(folder: Path, rank: int, micro_step: int) -> dict:
    return load_file(folder / f"rank{rank}_micro{micro_step:06d}.safetensors")


def assert_same_adapter(actual: dict, expected: dict, exact: bool = False) -> None:
    assert actual.keys() == expected.keys() and actual
    for key in expected:
        if exact:
            assert torch.equal(actual[key], expected[key]), key
        else:
            torch.testing.assert_close(actual[key].float(), expected[key].float(), rtol=1e-3, atol=1e-6)


# The shipped templates' precision; 4 samples deal evenly to 2 ranks. A constant learning rate, so a
# 2-step run resumed to 3 steps follows the 3-step run's schedule.
MULTI_PROCESS = {
    "optimization.steps": 3, "acceleration.mixed_precision_mode": "bf16", "optimization.scheduler_type": "constant",
}


@pytest.fixture()
def one_process_run(tiny_model_dir, dataset, tmp_path) -> tuple[Path, Path]:
    """One process, gradient accumulation 2: the same global batch as two ranks of batch 1.

    It runs as its own process with the ranks' thread count: in the test process, settings left by
    earlier tests could change the float rounding and flip the sign of Adam's first update where a
    gradient is almost zero (a 2 x lr difference that says nothing about the ranks).
    """
    ranks_dir = tmp_path / "one process ranks"
    output = tmp_path / "one process"
    config = write_config(tmp_path / "one.yaml", make_config(
        tiny_model_dir, dataset, output, **MULTI_PROCESS, **{"optimization.gradient_accumulation_steps": 2}
    ))
    env = {**os.environ, "OMP_NUM_THREADS": "1", RANK_ADAPTERS_ENV: str(ranks_dir)}
    result = subprocess.run([sys.executable, TRAIN, str(config)], env=env, capture_output=True, text=True,
                            timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return output, ranks_dir


def test_two_ddp_ranks_stay_identical_and_equal_one_process_with_the_same_global_batch(
    tiny_model_dir, dataset, tmp_path, one_process_run
):
    output, ranks_dir = tmp_path / "ddp", tmp_path / "ddp ranks"
    config = write_config(tmp_path / "ddp.yaml", make_config(tiny_model_dir, dataset, output, **MULTI_PROCESS))
    launch_two_ranks(config, tmp_path, ranks_dir, "--multi_gpu")
    start = next(event for event in events(output) if event["event"] == "train_start")
    assert start["processes"] == 2
    assert [e["step"] for e in events(output) if e["event"] == "step"] == [1, 2, 3]

    single_output, single_ranks = one_process_run
    for step in range(3):  # the adapter each rank starts step `step` with
        assert_same_adapter(rank_adapters(ranks_dir, 1, step), rank_adapters(ranks_dir, 0, step), exact=True)
        assert_same_adapter(rank_adapters(ranks_dir, 0, step), rank_adapters(single_ranks, 0, 2 * step))
    assert_same_adapter(
        load_file(output / "lora_weights.safetensors"), load_file(single_output / "lora_weights.safetensors")
    )


def test_the_fsdp2_config_launches_two_ranks_saves_a_whole_adapter_and_resumes_exactly(
    repo_root, tiny_model_dir, dataset, tmp_path, one_process_run
):
    """configs/accelerate/fsdp2.yaml as README gives it. On a CPU accelerate 1.15 runs an FSDP config as
    DDP (its FSDP branch needs a GPU backend), so here this checks the launch, the ranks, the whole
    adapter and an exact resume; the sharded path itself needs a GPU machine."""
    fsdp_config = repo_root / "configs" / "accelerate" / "fsdp2.yaml"
    settings = yaml.safe_load(fsdp_config.read_text(encoding="utf-8"))
    assert settings["distributed_type"] == "FSDP" and settings["fsdp_config"]["fsdp_version"] == 2
    from diffusers.models.transformers import transformer_ltx

    assert hasattr(transformer_ltx, settings["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"])

    output, ranks_dir = tmp_path / "fsdp", tmp_path / "fsdp ranks"
    stopped = write_config(tmp_path / "two.yaml", make_config(
        tiny_model_dir, dataset, output, **{**MULTI_PROCESS, "optimization.steps": 2}
    ))
    launch_two_ranks(stopped, tmp_path, ranks_dir, "--config_file", str(fsdp_config))
    finish = write_config(tmp_path / "three.yaml", make_config(tiny_model_dir, dataset, output, **MULTI_PROCESS))
    resumed = launch_two_ranks(finish, tmp_path, ranks_dir, "--config_file", str(fsdp_config), resume=True)
    assert "Resuming from" in resumed.stderr
    starts = [event for event in events(output) if event["event"] == "train_start"]
    assert [(e["processes"], e["start_step"]) for e in starts] == [(2, 0), (2, 2)]

    single_output, single_ranks = one_process_run
    assert_same_adapter(rank_adapters(ranks_dir, 1, 2), rank_adapters(ranks_dir, 0, 2), exact=True)
    assert_same_adapter(rank_adapters(ranks_dir, 0, 2), rank_adapters(single_ranks, 0, 4))
    saved, single = load_file(output / "lora_weights.safetensors"), load_file(single_output / "lora_weights.safetensors")
    assert {key: value.shape for key, value in saved.items()} == {key: value.shape for key, value in single.items()}
    assert_same_adapter(saved, single)


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


FSDP2_SHARDED_ADAPTER = """
import sys
import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from safetensors.torch import save_file
from ltxtrainer.config import config_from_dict
from ltxtrainer.models import ltx_video
from ltxtrainer.training.lora_io import adapter_state_dict
from ltxtrainer.training.model_setup import prepare_transformer
from tests.test_training import make_config

dist.init_process_group("gloo")
model_dir, output = sys.argv[1], sys.argv[2]
config = config_from_dict(make_config(model_dir, output, output))
torch.manual_seed(0)
transformer = prepare_transformer(ltx_video.load_transformer(model_dir), config, torch.device("cpu"))
with torch.no_grad():  # peft starts lora_B at zero; make every element tell
    for name, parameter in transformer.named_parameters():
        if "lora_" in name:
            parameter.copy_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(len(name))))
unsharded = adapter_state_dict(transformer)
for block in transformer.transformer_blocks:  # accelerate's TRANSFORMER_BASED_WRAP on LTXVideoTransformerBlock
    fully_shard(block)
fully_shard(transformer)
local = {name: p.to_local().shape[0] for name, p in transformer.named_parameters() if "lora_A" in name}
gathered = adapter_state_dict(transformer)
rank = dist.get_rank()
save_file(gathered, f"{output}/rank{rank}.safetensors")
if rank == 0:
    save_file(unsharded, f"{output}/unsharded.safetensors")
print("local lora_A rows", sorted(set(local.values())), flush=True)
dist.destroy_process_group()
"""


def test_under_fsdp2_every_rank_gathers_the_whole_adapter(repo_root, tiny_model_dir, tmp_path):
    """torch's fully_shard on two CPU gloo ranks (what accelerate's FSDP2 plugin applies on GPUs):
    each rank holds half of every adapter matrix, and `adapter_state_dict` returns them whole."""
    script = tmp_path / "fsdp2_adapter.py"
    script.write_text(FSDP2_SHARDED_ADAPTER, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo_root)}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
        str(script), str(tiny_model_dir), str(tmp_path),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=repo_root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "local lora_A rows [4]" in result.stdout  # rank 8 split over two ranks: really sharded
    unsharded = load_file(tmp_path / "unsharded.safetensors")
    for rank in range(2):
        assert_same_adapter(load_file(tmp_path / f"rank{rank}.safetensors"), unsharded, exact=True)
