"""The training core on the tiny models, CPU: learning, LoRA-only updates, quantization, resume, buckets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ltxtrainer.config import config_from_dict
from ltxtrainer.data import BucketBatchOrder, DatasetError, PrecomputedDataset
from ltxtrainer.training import checkpoints
from ltxtrainer.training.trainer import run_training
from tests.precomputed import write_sample

REPO = Path(__file__).resolve().parents[1]


def make_config(model_dir: Path, data_dir: Path, output_dir: Path, **overrides) -> dict:
    data = yaml.safe_load((REPO / "configs" / "tiny_demo.yaml").read_text(encoding="utf-8"))
    data["model"]["model_source"] = str(model_dir)
    data["data"]["preprocessed_data_root"] = str(data_dir)
    data["output_dir"] = str(output_dir)
    data["validation"]["interval"] = None
    data["checkpoints"]["interval"] = None
    for dotted, value in overrides.items():
        section, _, field = dotted.rpartition(".")
        target = data
        for part in section.split(".") if section else []:
            target = target.setdefault(part, {})
        target[field] = value
    return data


def train(model_dir, data_dir, output_dir, resume=False, **overrides):
    return run_training(config_from_dict(make_config(model_dir, data_dir, output_dir, **overrides)), resume=resume)


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
    # diffusers read alpha from the metadata: the scaling is alpha / rank = 16 / 8, not 1.
    layer = pipe.transformer.transformer_blocks[0].attn1.to_q
    assert layer.scaling["trained"] == pytest.approx(2.0)


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


@pytest.mark.parametrize(
    "options",
    [
        {"acceleration.mixed_precision_mode": "bf16"},
        {"optimization.optimizer_type": "adamw8bit"},
        {"optimization.enable_gradient_checkpointing": True, "optimization.scheduler_type": "cosine"},
        {"acceleration.quantization": "fp8-quanto", "optimization.scheduler_params": {"warmup_steps": 1}},
        {"acceleration.quantization": "int4-quanto", "acceleration.mixed_precision_mode": "bf16"},
        # inductor builds C++ kernels for the CPU (gcc is on every machine): ~30-60 s, the slowest case here
        {"acceleration.compile_with_inductor": True, "acceleration.mixed_precision_mode": "bf16"},
    ],
    ids=["bf16", "adamw8bit", "checkpointing", "fp8-quanto", "int4-quanto-bf16", "compile-bf16"],
)
def test_memory_and_precision_options_train(tiny_model_dir, one_clip, tmp_path, options):
    """Several runs in one process with different settings (accelerate keeps per-process state)."""
    result = train(tiny_model_dir, one_clip, tmp_path / "run", **{"optimization.steps": 3, **options})
    assert result.final_step == 3
    losses = step_losses(tmp_path / "run")
    assert len(losses) == 3 and all(loss == loss and loss < 100 for loss in losses)


def test_a_reference_trainer_config_trains_unchanged_but_for_paths(tiny_model_dir, one_clip, tmp_path):
    from tests.test_config import REFERENCE_SPRING_2025

    data = yaml.safe_load(REFERENCE_SPRING_2025)
    data["model"]["model_source"] = str(tiny_model_dir)
    data["data"]["preprocessed_data_root"] = str(one_clip / ".precomputed")  # its .precomputed form
    data["output_dir"] = str(tmp_path / "run")
    data["optimization"]["steps"] = 2
    data["validation"]["interval"] = None
    data["acceleration"]["load_text_encoder_in_8bit"] = False  # bitsandbytes 8-bit loading needs CUDA
    result = run_training(config_from_dict(data))
    assert result.final_step == 2 and result.lora_path.is_file()


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

    result = train(tiny_model_dir, one_clip, tmp_path / "math", **{
        "optimization.steps": 2, "acceleration.attention_backend": "_native_math",
    })
    assert result.final_step == 2
    with pytest.raises(ConfigError, match="acceleration.attention_backend.*allowed: .*flash"):
        train(tiny_model_dir, one_clip, tmp_path / "typo", **{"acceleration.attention_backend": "flsh"})
    with pytest.raises(ConfigError, match="'xformers' is not usable here"):
        train(tiny_model_dir, one_clip, tmp_path / "missing", **{"acceleration.attention_backend": "xformers"})
    assert not (tmp_path / "missing" / "lora_weights.safetensors").exists()
