"""The adapters' precision: fp32 next to a bf16 base on a CPU, bf16 under autocast on a GPU.

The GPU setup (`run_adapters_in_autocast`) is run here on the CPU's autocast: what it changes
(which tensors the adapters read and keep, in which dtype they compute) does not depend on the
device.
"""

from __future__ import annotations

import copy

import pytest
import torch

from ltxtrainer.benchmark import BenchmarkOptions, build_random_transformer, random_batch, trainer_config
from ltxtrainer.memory import MODEL_SHAPES
from ltxtrainer.models import ltx_video
from ltxtrainer.training.model_setup import (
    adapters_in_low_precision,
    prepare_transformer,
    run_adapters_in_autocast,
    trainable_parameters,
)

CPU = torch.device("cpu")
SHAPE = MODEL_SHAPES["tiny"]


def _config(**options):
    return trainer_config(BenchmarkOptions(model="tiny", rank=8, **options))


def _lora_model(seed: int = 0) -> torch.nn.Module:
    """The tiny transformer in bf16 with seeded adapter weights, B not zero (a fresh adapter changes
    nothing, which would hide a wrong forward)."""
    transformer = prepare_transformer(build_random_transformer(SHAPE, torch.bfloat16, CPU), _config(), CPU)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in transformer.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return transformer


def _inputs() -> dict:
    batch = random_batch(SHAPE, 256, 256, 17, 1)
    return {
        "hidden_states": batch["latents"].bfloat16(), "encoder_hidden_states": batch["prompt_embeds"].bfloat16(),
        "timestep": torch.tensor([500.0]), "encoder_attention_mask": batch["prompt_attention_mask"],
        "num_frames": batch["num_frames"], "height": batch["height"], "width": batch["width"],
        "rope_interpolation_scale": ltx_video.rope_interpolation_scale(batch["fps"]), "return_dict": False,
    }


def _base_output(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    model.disable_adapters()
    try:
        with torch.no_grad():
            return model(**inputs)[0].float()
    finally:
        model.enable_adapters()


def test_adapters_compute_in_low_precision_only_on_a_gpu_with_a_low_precision_base():
    cuda = torch.device("cuda")
    assert adapters_in_low_precision(_config(), cuda)
    assert adapters_in_low_precision(_config(mixed_precision="fp16"), cuda)
    assert not adapters_in_low_precision(_config(), CPU)
    assert not adapters_in_low_precision(_config(mixed_precision="no"), cuda)
    full = _config()
    full.model.training_mode = "full"
    assert not adapters_in_low_precision(full, cuda)


def test_the_cpu_setup_runs_without_autocast_and_keeps_fp32_adapters():
    model = _lora_model()
    layer = model.transformer_blocks[0].attn1.to_q
    assert layer.cast_input_dtype_enabled and "forward" not in vars(layer)
    assert {parameter.dtype for parameter in trainable_parameters(model)} == {torch.float32}
    output = model(**_inputs())[0]
    assert output.dtype == torch.bfloat16  # the base ran in its own dtype, as at inference


def test_autocast_adapters_compute_what_fp32_adapters_compute_and_train_in_fp32():
    inputs = _inputs()
    fp32_adapters, autocast_adapters = _lora_model(), _lora_model()
    run_adapters_in_autocast(autocast_adapters, "cpu", torch.bfloat16)
    base = _base_output(fp32_adapters, inputs)

    outputs, gradients = [], []
    for model in (fp32_adapters, autocast_adapters):
        output = model(**inputs)[0].float()
        output.pow(2).mean().backward()
        outputs.append(output.detach())
        gradients.append(torch.cat([parameter.grad.flatten() for parameter in trainable_parameters(model)]))
        assert {parameter.grad.dtype for parameter in trainable_parameters(model)} == {torch.float32}

    lora_effect = (outputs[0] - base).norm()
    assert lora_effect > 0.1 * base.norm()  # the adapters matter in this test
    assert (outputs[1] - outputs[0]).norm() < 0.05 * lora_effect
    cosine = torch.nn.functional.cosine_similarity(gradients[0], gradients[1], dim=0)
    assert cosine > 0.99


def test_autocast_adapters_survive_a_deepcopy():
    """The wrapped forward is a bound method: a copy must run its own weights, not the original's."""
    original = _lora_model()
    run_adapters_in_autocast(original, "cpu", torch.bfloat16)
    duplicate = copy.deepcopy(original)
    with torch.no_grad():
        for name, parameter in duplicate.named_parameters():
            if "lora_B" in name:
                parameter.zero_()
    inputs = _inputs()
    with torch.no_grad():
        original_output = original(**inputs)[0].float()
        duplicate_output = duplicate(**inputs)[0].float()
    assert torch.allclose(duplicate_output, _base_output(duplicate, inputs))
    assert not torch.allclose(original_output, duplicate_output)


@pytest.mark.parametrize(("autocast", "copies"), [(True, 0), (False, 1)], ids=["gpu-setup", "cpu-setup"])
def test_only_fp32_adapters_keep_an_fp32_copy_of_their_input(autocast, copies):
    """What the memory estimator assumes: under autocast an adapter keeps the bf16 input the
    frozen layer was given; fp32 adapters keep an fp32 copy of it."""
    model = _lora_model()
    if autocast:
        run_adapters_in_autocast(model, "cpu", torch.bfloat16)
    width = SHAPE["num_attention_heads"] * SHAPE["attention_head_dim"]
    layer_input = torch.randn(1, 64, width, dtype=torch.bfloat16)
    fp32_inputs = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dtype == torch.float32 and tensor.numel() == layer_input.numel():  # linear saves a 2-D view
            fp32_inputs.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model.transformer_blocks[0].attn1.to_q(layer_input)
    assert len(fp32_inputs) == copies
