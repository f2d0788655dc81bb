"""The training core on the tiny models, CPU: learning, LoRA-only updates, quantization, resume, buckets."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file

from ltxtrainer.config import config_from_dict
from ltxtrainer.data import BucketBatchOrder, DatasetError, PrecomputedDataset
from ltxtrainer.training import checkpoints
from ltxtrainer.training.lora_io import LTXTRAINER_METADATA_KEY
from ltxtrainer.training.trainer import run_training
from tests.precomputed import write_sample

REPO = Path(__file__).resolve().parents[1]


def make_config(model_dir: Path, data_dir: Path, output_dir: Path, validation: bool = False, **overrides) -> dict:
    """configs/tiny_demo.yaml (the templates' settings at tiny size) for these folders.

    `validation=True` keeps the template's validation as users run it (a video before the first
    step and every interval); without it validation is off, for tests about something else, where
    a render would cost time and add transformer calls. Checkpoints are off unless overridden.
    """
    data = yaml.safe_load((REPO / "configs" / "tiny_demo.yaml").read_text(encoding="utf-8"))
    data["model"]["model_source"] = str(model_dir)
    data["data"]["preprocessed_data_root"] = str(data_dir)
    data["output_dir"] = str(output_dir)
    if not validation:
        data["validation"]["interval"] = None
    data["checkpoints"]["interval"] = None
    for dotted, value in overrides.items():
        section, _, field = dotted.rpartition(".")
        target = data
        for part in section.split(".") if section else []:
            target = target.setdefault(part, {})
        target[field] = value
    return data


def train(model_dir, data_dir, output_dir, resume=False, validation=False, **overrides):
    config = make_config(model_dir, data_dir, output_dir, validation=validation, **overrides)
    return run_training(config_from_dict(config), resume=resume)


def step_losses(output_dir: Path) -> list[float]:
    lines = (output_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [record["loss"] for record in map(json.loads, lines) if record["event"] == "step"]


@pytest.fixture()
def one_clip(tmp_path) -> Path:
    write_sample(tmp_path / "data", "clip", frames=2, height=2, width=2, seed=0)
    return tmp_path / "data"


@pytest.mark.parametrize(
    ("mode", "extra", "ratio"),
    [
        ("full", {"optimization.learning_rate": 1e-3}, 0.5),
        ("lora", {"optimization.learning_rate": 5e-3, "lora.rank": 32, "lora.alpha": 32,
                  "lora.target_modules": ["to_k", "to_q", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"]}, 0.7),
    ],
)
def test_overfitting_one_clip_lowers_the_loss_clearly(tiny_model_dir, one_clip, tmp_path, mode, extra, ratio):
    """At a fixed noise level the velocity target is learnable exactly, so memorising one clip shows."""
    output = tmp_path / "run"
    train(
        tiny_model_dir, one_clip, output,
        **{
            "model.training_mode": mode, "optimization.steps": 300, "optimization.scheduler_type": "constant",
            "optimization.first_frame_conditioning_p": 0.0, "flow_matching.timestep_sampling_mode": "uniform",
            "flow_matching.timestep_sampling_params": {"min_value": 0.5, "max_value": 0.5}, **extra,
        },
    )
    losses = step_losses(output)
    assert len(losses) == 300
    initial, final = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert final < ratio * initial, (initial, final)


def test_lora_mode_changes_only_adapter_weights_and_the_file_loads_in_diffusers(tiny_model_dir, one_clip, tmp_path):
    from diffusers import LTXPipeline

    from ltxtrainer.models import ltx_video

    base = {k: v.clone() for k, v in ltx_video.load_transformer(tiny_model_dir).state_dict().items()}
    result = train(tiny_model_dir, one_clip, tmp_path / "run", **{"optimization.steps": 5, "lora.alpha": 16})
    lora = load_file(str(result.lora_path))
    assert lora and all(key.startswith("transformer.transformer_blocks.") and ".lora_" in key for key in lora)
    assert any(value.abs().sum() > 0 for key, value in lora.items() if "lora_B" in key)

    pipe = LTXPipeline.from_pretrained(tiny_model_dir, local_files_only=True)
    after_training_base = pipe.transformer.state_dict()
    assert all(torch.equal(after_training_base[k], base[k]) for k in base)  # the base on disk is untouched

    def transformer_output():
        torch.manual_seed(0)
        hidden = torch.randn(1, 8, 16)
        text = torch.randn(1, 4, 32)
        with torch.no_grad():
            return pipe.transformer(
                hidden_states=hidden, encoder_hidden_states=text, timestep=torch.tensor([500.0]),
                encoder_attention_mask=torch.ones(1, 4, dtype=torch.bool), num_frames=2, height=2, width=2,
                rope_interpolation_scale=(8 / 24, 32, 32), return_dict=False,
            )[0]

    before = transformer_output()
    pipe.load_lora_weights(str(result.lora_path), adapter_name="trained")
    after = transformer_output()
    assert not torch.allclose(before, after)
    # alpha / rank = 16 / 8 is folded into lora_B, so every diffusers version (those before 0.35 ignore
    # the metadata) loads it at scaling 1; our own record keeps the trained rank and alpha.
    layer = pipe.transformer.transformer_blocks[0].attn1.to_q
    assert layer.scaling["trained"] == pytest.approx(1.0)
    with safe_open(str(result.lora_path), "pt") as handle:
        record = json.loads(handle.metadata()[LTXTRAINER_METADATA_KEY])
    assert record["folded"] and record["alpha"] == 16 and record["rank"] == 8


def test_trainer_changes_only_adapter_parameters_in_memory(tiny_model_dir, one_clip, tmp_path):
    from ltxtrainer.models import ltx_video
    from ltxtrainer.training.model_setup import prepare_transformer, trainable_parameters
    from ltxtrainer.training.optim import build_optimizer

    config = config_from_dict(make_config(tiny_model_dir, one_clip, tmp_path / "run"))
    transformer = prepare_transformer(ltx_video.load_transformer(tiny_model_dir), config, torch.device("cpu"))
    names = {name for name, p in transformer.named_parameters() if p.requires_grad}
    assert names and all("lora_" in name for name in names)
    before = {name: p.detach().clone() for name, p in transformer.named_parameters()}
    optimizer = build_optimizer(trainable_parameters(transformer), config, torch.device("cpu"))
    for _ in range(3):
        out = transformer(
            hidden_states=torch.randn(1, 8, 16), encoder_hidden_states=torch.randn(1, 4, 32),
            timestep=torch.tensor([300.0]), encoder_attention_mask=torch.ones(1, 4, dtype=torch.bool),
            num_frames=2, height=2, width=2, rope_interpolation_scale=(1 / 3, 32, 32), return_dict=False,
        )[0]
        out.pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = {name for name, p in transformer.named_parameters() if not torch.equal(p, before[name])}
    assert changed and changed <= names


def test_int8_quanto_trains_and_the_base_stays_quantized(tiny_model_dir, one_clip, tmp_path):
    from optimum.quanto import QLinear

    from ltxtrainer.models import ltx_video
    from ltxtrainer.training.model_setup import prepare_transformer

    overrides = {"acceleration.quantization": "int8-quanto", "optimization.steps": 4}
    config = config_from_dict(make_config(tiny_model_dir, one_clip, tmp_path / "q", **overrides))
    transformer = prepare_transformer(ltx_video.load_transformer(tiny_model_dir), config, torch.device("cpu"))
    base_layer = transformer.transformer_blocks[0].attn1.to_q.base_layer
    assert isinstance(base_layer, QLinear) and "int8" in str(base_layer.weight_qtype)
    assert not base_layer.weight.requires_grad

    result = train(tiny_model_dir, one_clip, tmp_path / "run", **overrides)
    assert result.final_step == 4 and result.lora_path.is_file()
    assert all(map(torch.isfinite, map(torch.tensor, step_losses(tmp_path / "run"))))


def test_stop_and_resume_equals_an_uninterrupted_run(tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    for index in range(3):
        write_sample(data, f"clip{index}", frames=2, height=2, width=2, seed=index)
    common = {
        "optimization.steps": 8, "optimization.batch_size": 2, "optimization.gradient_accumulation_steps": 2,
        "lora.dropout": 0.1, "checkpoints.keep_last_n": -1,
    }
    straight = train(tiny_model_dir, data, tmp_path / "straight", **common)

    interrupted = tmp_path / "interrupted"
    train(tiny_model_dir, data, interrupted, **common, **{"checkpoints.interval": 3})
    # Pretend the run died right after step 3: only that checkpoint survives.
    for step, folder in checkpoints.list_checkpoints(interrupted):
        if step != 3:
            shutil.rmtree(folder)
    (interrupted / "lora_weights.safetensors").unlink()
    resumed = train(tiny_model_dir, data, interrupted, resume=True, **common, **{"checkpoints.interval": 3})
    assert resumed.final_step == 8

    expected, actual = load_file(str(straight.lora_path)), load_file(str(resumed.lora_path))
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key].float(), expected[key].float(), rtol=1e-3, atol=1e-5)
    assert step_losses(interrupted)[-5:] == pytest.approx(step_losses(tmp_path / "straight")[-5:], rel=1e-4)


def test_two_buckets_train_in_one_run(tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    write_sample(data, "landscape/a", frames=2, height=2, width=3, seed=1)
    write_sample(data, "landscape/b", frames=2, height=2, width=3, seed=2)
    write_sample(data, "portrait/c", frames=2, height=3, width=2, seed=3)
    dataset = PrecomputedDataset(data)
    assert set(dataset.buckets) == {(2, 2, 3), (2, 3, 2)}
    order = BucketBatchOrder(dataset.buckets, batch_size=2, seed=0)
    seen = {dataset.samples[order.batch(step)[0]].bucket for step in range(6)}
    assert seen == set(dataset.buckets)
    for step in range(6):  # each batch is drawn from a single bucket
        assert len({dataset.samples[i].bucket for i in order.batch(step)}) == 1
    result = train(tiny_model_dir, data, tmp_path / "run", **{"optimization.steps": 6, "optimization.batch_size": 2})
    assert result.final_step == 6
    start = json.loads((tmp_path / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert sorted(map(tuple, start["buckets"])) == [(2, 2, 3), (2, 3, 2)]


def test_batch_order_splits_work_between_ranks():
    import random

    buckets = {(2, 2, 2): list(range(5)), (2, 2, 3): list(range(5, 8))}
    ranks = [BucketBatchOrder(buckets, batch_size=2, seed=1, rank=r, world=2) for r in range(2)]
    assert ranks[0].batches_per_epoch == ranks[1].batches_per_epoch == 2
    epoch = [r.batch(step) for r in ranks for step in range(2)]
    # Three whole batches of 2 (each bucket's odd one sits out), the third wrapped round to even the ranks.
    assert all(len(batch) == 2 for batch in epoch) and len({i for batch in epoch for i in batch}) == 6
    covered = {i for r in ranks for step in range(40) for i in r.batch(step)}
    assert covered == set(range(8))
    # A pure function of (seed, epoch, rank): asked out of order, after the global generators moved,
    # a fresh order repeats it, and another seed changes it.
    later = [ranks[1].batch(step) for step in (7, 3, 0)]
    random.seed(99)
    torch.manual_seed(99)
    assert [BucketBatchOrder(buckets, 2, seed=1, rank=1, world=2).batch(step) for step in (7, 3, 0)] == later
    other_seed = BucketBatchOrder(buckets, 2, seed=2, rank=1, world=2)
    assert [other_seed.batch(step) for step in range(8)] != [ranks[1].batch(step) for step in range(8)]


def test_mismatched_precomputed_files_are_named(tmp_path):
    data = tmp_path / "data"
    write_sample(data, "good", frames=2, height=2, width=2, seed=0)
    bad = data / ".precomputed" / "latents" / "bad.pt"
    torch.save({"latents": torch.zeros(5, 16), "num_frames": 2, "height": 2, "width": 2, "fps": 24.0}, bad)
    with pytest.raises(DatasetError, match="bad.pt"):
        PrecomputedDataset(data)
    bad.unlink()
    write_sample(data, "other", frames=2, height=2, width=2, seed=0)
    with pytest.raises(DatasetError, match="channels"):
        PrecomputedDataset(data, expected_channels=128)
    with pytest.raises(DatasetError, match="preprocess_dataset.py"):
        PrecomputedDataset(tmp_path / "nothing")


def test_training_inputs_match_what_the_pipeline_feeds_the_transformer(tiny_model_dir, tmp_path):
    """The transformer sees the same latent layout and micro-conditions in training and inference."""
    from diffusers import LTXPipeline

    from ltxtrainer.models import ltx_video
    from ltxtrainer.training.trainer import _training_loss

    pipe = LTXPipeline.from_pretrained(tiny_model_dir, local_files_only=True)
    seen: list[dict] = []
    hook = pipe.transformer.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs), with_kwargs=True)
    width, height, frames, fps = 96, 64, 17, 24
    pipe(prompt="a red square", width=width, height=height, num_frames=frames, frame_rate=fps,
         num_inference_steps=2, guidance_scale=1.0, output_type="latent")
    inference = seen.pop()

    latent_frames, latent_height, latent_width = ltx_video.latent_size(width, height, frames)
    video = torch.randn(1, 3, frames, height, width)
    with torch.no_grad():
        encoded = pipe.vae.encode(video).latent_dist.mode()
    packed = ltx_video.pack_latents(
        ltx_video.normalize_latents(encoded, pipe.vae.latents_mean, pipe.vae.latents_std, pipe.vae.config.scaling_factor)
    )
    batch = {
        "latents": packed, "num_frames": latent_frames, "height": latent_height, "width": latent_width, "fps": float(fps),
        "prompt_embeds": inference["encoder_hidden_states"], "prompt_attention_mask": inference["encoder_attention_mask"],
    }
    config = config_from_dict(make_config(tiny_model_dir, tmp_path, tmp_path / "run"))
    _training_loss(pipe.transformer, batch, config, micro_step=0, rank=0, device=torch.device("cpu"), dtype=torch.float32)
    hook.remove()
    training = seen.pop()
    assert training["hidden_states"].shape == inference["hidden_states"].shape
    for key in ("num_frames", "height", "width"):
        assert training[key] == inference[key]
    assert tuple(training["rope_interpolation_scale"]) == pytest.approx(tuple(inference["rope_interpolation_scale"]))


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Two tiny clips shared by the option matrix (the tests only read them)."""
    root = tmp_path_factory.mktemp("clips")
    for index in range(2):
        write_sample(root, f"clip{index}", frames=2, height=2, width=2, seed=index)
    return root


@contextlib.contextmanager
def the_trained_transformer():
    """Yields a list that receives the transformer the trainer builds, as it runs its first forward.

    A global forward hook: run_training loads its own transformer, and this is the only way to look
    at it without replacing any part of the trainer.
    """
    from diffusers import LTXVideoTransformer3DModel

    seen: list = []

    def keep(module, args, output):
        if isinstance(module, LTXVideoTransformer3DModel) and not seen:
            seen.append(module)

    hook = torch.nn.modules.module.register_module_forward_hook(keep)
    try:
        yield seen
    finally:
        hook.remove()


def base_layer(transformer) -> torch.nn.Module:
    return transformer.transformer_blocks[0].attn1.to_q.base_layer


MATRIX = [  # every quantization with bf16, both precisions, checkpointing on and off with bf16
    ("none", "bf16", True), ("int8-quanto", "bf16", False), ("int4-quanto", "bf16", True),
    ("int2-quanto", "bf16", False), ("fp8-quanto", "bf16", True), ("none", "no", False), ("int8-quanto", "no", True),
]
QTYPES = {"int8-quanto": "qint8", "int4-quanto": "qint4", "int2-quanto": "qint2", "fp8-quanto": "qfloat8_e4m3fn"}


@pytest.mark.parametrize(("quantization", "precision", "checkpointing"), MATRIX,
                         ids=["-".join(map(str, case)) for case in MATRIX])
def test_precision_quantization_and_checkpointing_train_as_asked(
    tiny_model_dir, clips, tmp_path, quantization, precision, checkpointing
):
    from optimum.quanto import QLinear

    output = tmp_path / "run"
    with the_trained_transformer() as seen:
        result = train(tiny_model_dir, clips, output, validation=True, **{
            "optimization.steps": 2, "acceleration.quantization": quantization,
            "acceleration.mixed_precision_mode": precision, "optimization.enable_gradient_checkpointing": checkpointing,
        })
    assert result.final_step == 2 and (output / "samples" / "step_000000" / "prompt_00_00.mp4").is_file()
    transformer = seen[0]
    assert transformer.is_gradient_checkpointing is checkpointing
    layer = base_layer(transformer)
    if quantization == "none":
        assert type(layer) is torch.nn.Linear
        assert layer.weight.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
    else:
        assert isinstance(layer, QLinear) and layer.weight_qtype.name == QTYPES[quantization]
    assert transformer.proj_in.weight.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)


def test_fp16_on_a_cpu_says_it_trains_in_full_precision(tiny_model_dir, clips, tmp_path, capsys):
    with the_trained_transformer() as seen:
        result = train(tiny_model_dir, clips, tmp_path / "run", validation=True,
                       **{"optimization.steps": 2, "acceleration.mixed_precision_mode": "fp16"})
    assert result.final_step == 2
    assert "fp16 mixed precision needs a GPU; training in full precision on the CPU." in capsys.readouterr().err
    assert base_layer(seen[0]).weight.dtype == torch.float32


def test_adamw8bit_is_bitsandbytes_8bit_adamw(tiny_model_dir, clips, tmp_path):
    from bitsandbytes.optim import AdamW8bit

    from ltxtrainer.models import ltx_video
    from ltxtrainer.training.trainer import build_training_parts

    overrides = {"optimization.steps": 2, "optimization.optimizer_type": "adamw8bit"}
    config = config_from_dict(make_config(tiny_model_dir, clips, tmp_path / "run", **overrides))
    _, optimizer, _, trained = build_training_parts(ltx_video.load_transformer(tiny_model_dir), config, torch.device("cpu"))
    assert isinstance(optimizer, AdamW8bit) and optimizer.param_groups[0]["params"] == trained
    assert train(tiny_model_dir, clips, tmp_path / "run", **overrides).final_step == 2


def test_fused_adamw_except_under_block_offload_on_a_gpu(tiny_model_dir, clips, tmp_path):
    """The CUDA branch needs no CUDA to be chosen: the device is a parameter."""
    from ltxtrainer.training.optim import build_optimizer

    parameters = [torch.nn.Parameter(torch.zeros(4))]
    for offload, device, fused in [(False, "cpu", True), (True, "cpu", True), (False, "cuda", True), (True, "cuda", False)]:
        config = config_from_dict(make_config(tiny_model_dir, clips, tmp_path, **{"acceleration.block_offload": offload}))
        optimizer = build_optimizer(parameters, config, torch.device(device))
        assert bool(optimizer.defaults["fused"]) is fused, (offload, device)
        assert optimizer.defaults["foreach"] is (None if fused else False)


def test_block_offload_on_a_cpu_says_it_changes_nothing(tiny_model_dir, clips, tmp_path, capsys):
    result = train(tiny_model_dir, clips, tmp_path / "run", **{"optimization.steps": 2, "acceleration.block_offload": True})
    assert result.final_step == 2
    assert "acceleration.block_offload streams blocks to a CUDA GPU" in capsys.readouterr().err


def test_the_gpu_setup_of_block_offload_and_autocast_adapters_trains_on_a_cpu(tiny_model_dir, clips, tmp_path):
    """The GPU's way (group offload hooks, adapters under autocast) needs no CUDA to run: forced here."""
    from ltxtrainer.models import ltx_video
    from ltxtrainer.training.model_setup import (
        _adapter_forward_in_autocast,
        prepare_transformer,
        trainable_parameters,
    )

    config = config_from_dict(make_config(tiny_model_dir, clips, tmp_path, **{"acceleration.block_offload": True}))
    cpu = torch.device("cpu")
    transformer = prepare_transformer(
        ltx_video.load_transformer(tiny_model_dir, dtype=torch.bfloat16), config, cpu, gpu_setup=True
    )
    block = transformer.transformer_blocks[0]
    assert "group_offloading" in block._diffusers_hook.hooks  # diffusers' block-level offload is on
    assert block.attn1.to_q.forward.__func__ is _adapter_forward_in_autocast
    output = transformer(
        hidden_states=torch.randn(1, 8, 16, dtype=torch.bfloat16),
        encoder_hidden_states=torch.randn(1, 4, 32, dtype=torch.bfloat16), timestep=torch.tensor([300.0]),
        encoder_attention_mask=torch.ones(1, 4, dtype=torch.bool), num_frames=2, height=2, width=2,
        rope_interpolation_scale=(1 / 3, 32, 32), return_dict=False,
    )[0]
    output.float().pow(2).mean().backward()
    gradients = [parameter.grad for parameter in trainable_parameters(transformer)]
    assert all(g is not None and g.dtype == torch.float32 for g in gradients)
    assert any(g.abs().sum() > 0 for g in gradients)


def test_compile_compiles_every_transformer_block(tiny_model_dir, clips, tmp_path):
    """inductor builds C++ kernels for the CPU (gcc is on every machine): ~30-60 s, the slowest case here."""
    with the_trained_transformer() as seen:
        result = train(tiny_model_dir, clips, tmp_path / "run", **{
            "optimization.steps": 2, "acceleration.compile_with_inductor": True,
            "optimization.enable_gradient_checkpointing": False,  # recompiles the checkpointed blocks: 2x the time
        })
    assert result.final_step == 2
    assert all(block._compiled_call_impl is not None for block in seen[0].transformer_blocks)


def test_a_reference_trainer_config_trains_unchanged_but_for_paths(tiny_model_dir, one_clip, tmp_path):
    """The spring-2025 generation, 8-bit T5 flag and validation included (its 2B configs: test_templates)."""
    from tests.test_config import REFERENCE_SPRING_2025
    from tests.test_templates import shrink

    output = tmp_path / "run"
    data = shrink(yaml.safe_load(REFERENCE_SPRING_2025), tiny_model_dir, one_clip / ".precomputed", output, steps=2)
    assert data["acceleration"]["load_text_encoder_in_8bit"] and data["validation"]["interval"] == 250
    result = run_training(config_from_dict(data))
    assert result.final_step == 2 and result.lora_path.is_file()
    assert (output / "samples" / "step_000002" / "prompt_00_00.mp4").is_file()


def test_validation_renders_text_and_image_to_video_samples(tiny_model_dir, one_clip, tmp_path):
    from PIL import Image

    from ltxtrainer.media import probe_video

    image = tmp_path / "第一帧 image.png"
    Image.new("RGB", (80, 48), (200, 30, 30)).save(image)
    train(
        tiny_model_dir, one_clip, tmp_path / "run",
        **{
            "optimization.steps": 2, "validation.interval": 2, "validation.prompts": ["a red square", "a red square moves"],
            "validation.images": [None, str(image)], "validation.video_dims": [64, 32, 9],
            "validation.inference_steps": 2, "validation.videos_per_prompt": 2,
        },
    )
    videos = sorted((tmp_path / "run" / "samples" / "step_000002").glob("*.mp4"))
    assert [v.name for v in videos] == ["prompt_00_00.mp4", "prompt_00_01.mp4", "prompt_01_00.mp4", "prompt_01_01.mp4"]
    info = probe_video(videos[-1])
    assert (info.width, info.height, info.num_frames) == (64, 32, 9)
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert any(e["event"] == "validation" and e["step"] == 2 for e in events)


def test_step_losses_are_reported_once_each_in_step_order():
    """On the CPU a loss is ready at once; on a GPU the same queue defers reading it (no sync)."""
    from ltxtrainer.training.trainer import _StepLosses

    losses = _StepLosses()
    losses.put(1, torch.tensor(0.5), 1e-4)
    losses.put(2, torch.tensor(0.25, dtype=torch.float64), 2e-4)
    assert losses.take() == [(1, 0.5, 1e-4), (2, 0.25, 2e-4)]
    assert losses.take(wait=True) == []
    losses.put(3, torch.tensor(1.5), 3e-4)
    assert losses.take(wait=True) == [(3, 1.5, 3e-4)]


def test_attention_backend_is_a_checked_choice(tiny_model_dir, one_clip, tmp_path):
    """PyTorch's own attention by default; a named diffusers backend is used, an unknown or unusable
    one is refused by name before anything trains."""
    from ltxtrainer.config import ConfigError

    with the_trained_transformer() as seen:
        result = train(tiny_model_dir, one_clip, tmp_path / "math", **{
            "optimization.steps": 2, "acceleration.attention_backend": "_native_math",
        })
    assert result.final_step == 2
    attentions = [block.attn1 for block in seen[0].transformer_blocks] + [block.attn2 for block in seen[0].transformer_blocks]
    assert {attention.processor._attention_backend for attention in attentions} == {"_native_math"}
    with pytest.raises(ConfigError, match="acceleration.attention_backend.*allowed: .*flash"):
        train(tiny_model_dir, one_clip, tmp_path / "typo", **{"acceleration.attention_backend": "flsh"})
    with pytest.raises(ConfigError, match="'xformers' is not usable here"):
        train(tiny_model_dir, one_clip, tmp_path / "missing", **{"acceleration.attention_backend": "xformers"})
    assert not (tmp_path / "missing" / "lora_weights.safetensors").exists()


def test_validation_prompts_meet_the_model_at_the_datasets_text_length_and_weight_dtype(tiny_model_dir, tmp_path):
    """T5 runs without a mask, so validation must pad prompts as the dataset's captions were padded."""
    data = tmp_path / "data"
    write_sample(data, "clip", frames=2, height=2, width=2, seed=0, text_length=40)
    from diffusers import LTXVideoTransformer3DModel

    calls: list[dict] = []

    def record(module, args, kwargs):
        if not torch.is_grad_enabled():  # validation only
            calls.append(kwargs)

    def watch(module, args):
        # The transformer is called with keywords only; global hooks do not see them, its own hooks do.
        if isinstance(module, LTXVideoTransformer3DModel) and not getattr(module, "_test_watched", False):
            module._test_watched = True
            module.register_forward_pre_hook(record, with_kwargs=True)

    hook = torch.nn.modules.module.register_module_forward_pre_hook(watch)
    try:
        train(tiny_model_dir, data, tmp_path / "run", validation=True, **{"optimization.steps": 1})
    finally:
        hook.remove()
    assert calls
    for kwargs in calls:
        assert kwargs["encoder_hidden_states"].shape[1] == 40
        assert kwargs["encoder_hidden_states"].dtype == kwargs["hidden_states"].dtype == torch.bfloat16


def test_a_timestep_conditioned_vae_decodes_with_the_examples_noise(tiny_model_dir, tmp_path):
    from diffusers import AutoencoderKLLTXVideo

    from ltxtrainer.config import ValidationConfig
    from ltxtrainer.models import ltx_video
    from ltxtrainer.models.tiny import VAE_CONFIG
    from ltxtrainer.training.validation import DECODE_TIMESTEP, encode_validation_prompts, sample_videos

    validation = ValidationConfig(prompts=["a red square"], video_dims=(64, 64, 9), inference_steps=2, frame_rate=24.0)
    cpu = torch.device("cpu")
    inputs = encode_validation_prompts(str(tiny_model_dir), validation, cpu, max_sequence_length=16)
    vae = AutoencoderKLLTXVideo(**{**VAE_CONFIG, "timestep_conditioning": True}).eval()
    decode_timesteps = []
    hook = vae.decoder.register_forward_pre_hook(lambda module, args: decode_timesteps.append(args[1]))
    videos = sample_videos(
        ltx_video.load_transformer(tiny_model_dir), vae, ltx_video.load_scheduler(tiny_model_dir), inputs, validation,
        tmp_path / "samples", cpu, torch.float32,
    )
    hook.remove()
    assert len(videos) == 1 and videos[0].is_file()
    assert decode_timesteps and torch.allclose(decode_timesteps[0].float(), torch.tensor(DECODE_TIMESTEP))


def test_8bit_t5_encodes_validation_prompts_when_its_device_allows(tiny_model_dir):
    """bitsandbytes' 8-bit T5 is the GPU branch; it needs no CUDA to run, so it is forced on the CPU here."""
    from bitsandbytes.nn import Linear8bitLt

    from ltxtrainer.config import ValidationConfig
    from ltxtrainer.models import ltx_video
    from ltxtrainer.training.validation import encode_validation_prompts

    encoder = ltx_video.load_text_encoder(tiny_model_dir, load_in_8bit=True)
    assert isinstance(encoder.encoder.block[0].layer[0].SelfAttention.q, Linear8bitLt)
    validation = ValidationConfig(prompts=["a red square"])
    cpu = torch.device("cpu")
    full = encode_validation_prompts(str(tiny_model_dir), validation, cpu, 16, load_in_8bit=True)  # CPU: flag ignored
    eight = encode_validation_prompts(str(tiny_model_dir), validation, cpu, 16, load_in_8bit=True, use_8bit_on=("cpu",))
    assert not torch.equal(full.prompt_embeds, eight.prompt_embeds)  # the quantized encoder ran
    cosine = torch.nn.functional.cosine_similarity(full.prompt_embeds.flatten(), eight.prompt_embeds.flatten(), dim=0)
    assert cosine > 0.99


def test_validation_after_the_loop_when_the_steps_end_between_intervals(tiny_model_dir, one_clip, tmp_path):
    train(tiny_model_dir, one_clip, tmp_path / "run", validation=True, **{
        "optimization.steps": 3, "validation.interval": 2, "validation.skip_initial_validation": True,
    })
    samples = sorted(path.name for path in (tmp_path / "run" / "samples").iterdir())
    assert samples == ["step_000002", "step_000003"]


def test_out_of_memory_in_the_first_validation_is_a_readable_failure(tiny_model_dir, one_clip, tmp_path):
    from diffusers import LTXVideoTransformer3DModel

    from ltxtrainer.training.trainer import TrainingFailed

    def out_of_memory_while_rendering(module, args, output):
        if isinstance(module, LTXVideoTransformer3DModel) and not torch.is_grad_enabled():
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    hook = torch.nn.modules.module.register_module_forward_hook(out_of_memory_while_rendering)
    try:
        with pytest.raises(TrainingFailed, match="while rendering the validation videos of step 0.*validation.video_dims"):
            train(tiny_model_dir, one_clip, tmp_path / "run", validation=True, **{"optimization.steps": 2})
    finally:
        hook.remove()
    end = json.loads((tmp_path / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()[-1])
    assert end["event"] == "train_end" and end["status"] == "out_of_memory" and end["step"] == 0


def test_load_checkpoint_latest_a_lora_file_or_a_missing_path(tiny_model_dir, one_clip, tmp_path):
    from ltxtrainer.training.trainer import TrainingFailed

    first = train(tiny_model_dir, one_clip, tmp_path / "first", **{"optimization.steps": 2})

    # 'latest': this run's own latest checkpoint, as --resume
    latest = train(tiny_model_dir, one_clip, tmp_path / "first", **{
        "optimization.steps": 3, "model.load_checkpoint": "latest",
    })
    steps = [json.loads(line) for line in (tmp_path / "first" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert latest.final_step == 3 and [r["step"] for r in steps if r["event"] == "step"] == [1, 2, 3]

    # a LoRA file: a new run starts from its weights (a learning rate of ~0 keeps them)
    warm = train(tiny_model_dir, one_clip, tmp_path / "warm", **{
        "optimization.steps": 1, "optimization.learning_rate": 1e-12, "model.load_checkpoint": str(first.lora_path),
    })
    expected, actual = load_file(str(first.lora_path)), load_file(str(warm.lora_path))
    assert any(value.abs().sum() > 0 for key, value in expected.items() if "lora_B" in key)
    for key in expected:
        torch.testing.assert_close(actual[key].float(), expected[key].float(), rtol=1e-4, atol=1e-6)

    with pytest.raises(TrainingFailed, match="cannot start this run.*lora.rank"):
        train(tiny_model_dir, one_clip, tmp_path / "other", **{
            "optimization.steps": 1, "lora.rank": 4, "model.load_checkpoint": str(first.lora_path),
        })
    missing = tmp_path / "没有 missing.safetensors"
    with pytest.raises(TrainingFailed, match="does not exist"):
        train(tiny_model_dir, one_clip, tmp_path / "missing", **{"model.load_checkpoint": str(missing)})


@pytest.mark.parametrize(
    ("change", "message"),
    [({"lora.rank": 4}, "(?s)Cannot resume from .*size mismatch"), ({"model.training_mode": "full"}, "mode")],
    ids=["rank", "mode"],
)
def test_resuming_with_another_rank_or_mode_is_refused_by_name(tiny_model_dir, one_clip, tmp_path, change, message):
    from ltxtrainer.training.checkpoints import CheckpointError

    train(tiny_model_dir, one_clip, tmp_path / "run", **{"optimization.steps": 2})
    with pytest.raises(CheckpointError, match=message):
        train(tiny_model_dir, one_clip, tmp_path / "run", resume=True, **{"optimization.steps": 3, **change})


def test_an_unexpected_error_leaves_its_traceback_in_error_log(tiny_model_dir, one_clip, tmp_path, capsys):
    """A defect is not passed off as the user's mistake: one line, and the full report in a file."""
    from diffusers import LTXVideoTransformer3DModel

    from ltxtrainer.training.run import EXIT_FAILED, train_from_file

    def a_defect(module, args, output):
        if isinstance(module, LTXVideoTransformer3DModel):
            raise TypeError("unsupported operand type(s) for +: 'Tensor' and 'NoneType'")

    output = tmp_path / "运行 run"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(make_config(tiny_model_dir, one_clip, output, **{"optimization.steps": 2})),
                      encoding="utf-8")
    hook = torch.nn.modules.module.register_module_forward_hook(a_defect)
    try:
        assert train_from_file(config) == EXIT_FAILED
    finally:
        hook.remove()
    log = output / "error.log"
    stderr = capsys.readouterr().err.strip().splitlines()[-1]
    assert stderr.startswith("Training did not finish: unexpected error TypeError") and str(log) in stderr
    report = log.read_text(encoding="utf-8")
    assert report.startswith("Traceback") and "a_defect" in report and "unsupported operand" in report


def test_a_users_mistake_is_one_paragraph_without_an_error_log(tiny_model_dir, one_clip, tmp_path, capsys):
    from ltxtrainer.training.run import EXIT_FAILED, train_from_file

    output = tmp_path / "run"
    config = tmp_path / "config.yaml"
    bad = make_config(tiny_model_dir, one_clip, output, **{
        "optimization.steps": 2, "flow_matching.timestep_sampling_params": {"stdd": 1.0},
    })
    config.write_text(yaml.safe_dump(bad), encoding="utf-8")
    assert train_from_file(config) == EXIT_FAILED
    stderr = capsys.readouterr().err.strip().splitlines()[-1]
    assert stderr.startswith("Training did not finish: flow_matching.timestep_sampling_params: unknown ['stdd']")
    assert not (output / "error.log").exists()


def test_the_datasets_fps_and_text_length_are_read_from_current_and_legacy_files(tmp_path):
    """Validation reads the median fps and the T5 length from the files, in torch's zip and legacy formats."""
    from ltxtrainer.training.validation import dataset_frame_rate, dataset_text_length

    for index, fps in enumerate((12.0, 30.0, 25.0)):
        write_sample(tmp_path, f"clip{index}", frames=2, height=2, width=2, seed=index, text_length=20, fps=fps)
    for kind in ("latents", "conditions"):  # written by an older torch / the early reference trainer
        legacy = tmp_path / ".precomputed" / kind / "clip0.pt"
        torch.save(torch.load(legacy, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    dataset = PrecomputedDataset(tmp_path)
    assert dataset_frame_rate(dataset) == 25.0
    assert dataset_text_length(dataset) == 20
