"""The GPU-only paths of the trainer, on the tiny model: they are skipped where no CUDA device is.

Run them on a GPU machine with `./run.sh test tests/test_gpu.py`: bf16 adapters under autocast,
fp16 with accelerate's gradient scaler, deferred loss reads, diffusers' block offload, the 8-bit T5
and the validation videos rendered and decoded on the GPU. Each run starts from a shipped template,
shrunk as tests/test_templates.py shrinks it, with its validation (step 0 included) on.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from ltxtrainer.config import config_from_dict
from ltxtrainer.training.trainer import run_training
from tests.precomputed import write_sample
from tests.test_templates import CONFIGS, sample_videos, shrink
from tests.test_training import step_losses

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture()
def clips(tmp_path):
    for index in range(2):
        write_sample(tmp_path / "data", f"clip{index}", frames=2, height=2, width=2, seed=index)
    return tmp_path / "data"


def _step_records(output_dir) -> list[dict]:
    lines = (output_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [record for record in map(json.loads, lines) if record["event"] == "step"]


@pytest.mark.parametrize(
    ("template", "acceleration"),
    [
        ("ltx_13b_lora_template.yaml", {}),
        ("ltx_13b_lora_template.yaml", {"mixed_precision_mode": "fp16"}),
        ("ltx_13b_lora_template.yaml", {"block_offload": True}),
        ("ltx_13b_lora_int8-quanto_template.yaml", {"load_text_encoder_in_8bit": True}),
    ],
    ids=["bf16", "fp16-scaler", "block-offload", "int8-8bit-t5"],
)
def test_trains_and_validates_on_the_gpu_and_logs_every_step_once(tiny_model_dir, clips, tmp_path, template, acceleration):
    data = shrink(yaml.safe_load((CONFIGS / template).read_text(encoding="utf-8")), tiny_model_dir, clips,
                  tmp_path / "run", steps=6)
    data["acceleration"].update(acceleration)
    result = run_training(config_from_dict(data))
    assert result.final_step == 6 and result.lora_path.is_file()
    assert sample_videos(tmp_path / "run", 0) and sample_videos(tmp_path / "run", 6)
    records = _step_records(tmp_path / "run")
    assert [record["step"] for record in records] == list(range(1, 7))
    assert all(map(torch.isfinite, map(torch.tensor, step_losses(tmp_path / "run"))))
    assert all(record["peak_memory_bytes"] > 0 for record in records)


def test_gpu_adapters_run_under_autocast_with_fp32_weights(tiny_model_dir, clips, tmp_path):
    from ltxtrainer.config import config_from_dict
    from ltxtrainer.models import ltx_video
    from ltxtrainer.training.model_setup import (
        _adapter_forward_in_autocast,
        prepare_transformer,
        trainable_parameters,
    )
    from tests.test_training import make_config

    config = config_from_dict(make_config(
        tiny_model_dir, clips, tmp_path / "run", **{"acceleration.mixed_precision_mode": "bf16"}
    ))
    cuda = torch.device("cuda")
    transformer = prepare_transformer(ltx_video.load_transformer(tiny_model_dir, dtype=torch.bfloat16), config, cuda)
    layer = transformer.transformer_blocks[0].attn1.to_q
    assert layer.forward.__func__ is _adapter_forward_in_autocast and not layer.cast_input_dtype_enabled
    assert {parameter.dtype for parameter in trainable_parameters(transformer)} == {torch.float32}
    output = layer(torch.randn(1, 8, layer.in_features, device=cuda, dtype=torch.bfloat16))
    assert output.dtype == torch.bfloat16


def test_benchmark_runs_on_the_gpu():
    from ltxtrainer.benchmark import BenchmarkOptions, run_benchmark

    report = run_benchmark(BenchmarkOptions(model="tiny", width=128, height=128, frames=9, steps=2, warmup=1))
    assert report["device"] == torch.cuda.get_device_name(0) and report["peak_memory_bytes"] > 0
    assert report["step_time_s"] > 0 and report["plain_step_time_s"] > 0
