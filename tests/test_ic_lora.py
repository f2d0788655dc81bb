"""IC-LoRA (reference-video conditioning) for LTX-Video 0.9, on the tiny model, CPU.

With `conditioning.mode: reference_video` each clip trains beside its reference video's latents
(`.precomputed/reference_latents/<name>.pt`, the reference trainer's layout): the reference tokens join
the sequence clean, at timestep 0, at the target's RoPE positions, and carry no loss. What the
transformer receives is checked with hooks on the real tiny transformer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ltxtrainer.config import config_from_dict
from ltxtrainer.data import DatasetError, collate, load_precomputed
from ltxtrainer.models import ltx_video
from ltxtrainer.models.tiny import TINY_LATENT_CHANNELS
from ltxtrainer.training.trainer import _training_loss
from tests.precomputed import write_reference, write_sample
from tests.test_training import make_config

FRAMES, HEIGHT, WIDTH = 2, 2, 3  # latent size: 12 target tokens, 12 reference tokens
CPU = torch.device("cpu")


def ic_config(model_dir: Path, data_dir: Path, output_dir: Path, **overrides) -> dict:
    """configs/tiny_demo.yaml as an IC-LoRA run."""
    return make_config(
        model_dir, data_dir, output_dir,
        **{"conditioning.mode": "reference_video", "conditioning.first_frame_conditioning_p": 0.0, **overrides},
    )


@pytest.fixture()
def ic_data(tmp_path) -> Path:
    root = tmp_path / "数据 data"
    for index in range(2):
        write_sample(root, f"clip{index}", FRAMES, HEIGHT, WIDTH, seed=index)
        write_reference(root, f"clip{index}", FRAMES, HEIGHT, WIDTH, seed=index)
    return root


@pytest.fixture(scope="module")
def transformer(tiny_model_dir):
    return ltx_video.load_transformer(tiny_model_dir).eval()


def open_ic_dataset(model_dir: Path, data_dir: Path, transformer, **overrides):
    config = config_from_dict(ic_config(model_dir, data_dir, data_dir.parent / "run", **overrides))
    return ltx_video.open_dataset(config, transformer)


def test_each_sample_carries_its_reference_latents_and_batches_stack_them(tiny_model_dir, ic_data, transformer):
    dataset = open_ic_dataset(tiny_model_dir, ic_data, transformer)
    items = [dataset[index] for index in range(len(dataset))]
    for index, item in enumerate(items):
        stored = load_precomputed(ic_data / ".precomputed" / "reference_latents" / f"clip{index}.pt")["latents"]
        assert torch.equal(item["reference_latents"], stored)
    batch = collate(items)
    assert batch["reference_latents"].shape == batch["latents"].shape == (2, FRAMES * HEIGHT * WIDTH, TINY_LATENT_CHANNELS)


def test_the_reference_folder_is_the_configs_and_mode_none_reads_none(tiny_model_dir, ic_data, transformer):
    (ic_data / ".precomputed" / "reference_latents").rename(ic_data / ".precomputed" / "canny refs")
    dataset = open_ic_dataset(tiny_model_dir, ic_data, transformer, **{"conditioning.reference_latents_dir": "canny refs"})
    assert "reference_latents" in dataset[0]
    plain = open_ic_dataset(tiny_model_dir, ic_data, transformer, **{"conditioning.mode": "none"})
    assert "reference_latents" not in plain[0]


def test_a_clip_without_reference_latents_is_refused_by_name_with_the_folder_and_the_fix(
    tiny_model_dir, ic_data, transformer
):
    (ic_data / ".precomputed" / "reference_latents" / "clip1.pt").unlink()
    with pytest.raises(DatasetError, match=r"(?s)1 of 2 samples.*reference_latents.*clip1\.pt.*--reference-dir"):
        open_ic_dataset(tiny_model_dir, ic_data, transformer)


def test_a_reference_of_another_size_is_refused_naming_both_sizes(tiny_model_dir, ic_data, transformer):
    write_reference(ic_data, "clip0", FRAMES, HEIGHT, WIDTH - 1, seed=0)
    with pytest.raises(DatasetError, match=r"(?s)clip0\.pt.*2x2x2.*clip0\.pt has 2x2x3"):
        open_ic_dataset(tiny_model_dir, ic_data, transformer)


def first_batch(model_dir: Path, data_dir: Path, transformer, **overrides) -> tuple[dict, object]:
    config = config_from_dict(ic_config(model_dir, data_dir, data_dir.parent / "run", **overrides))
    dataset = ltx_video.open_dataset(config, transformer)
    return collate([dataset[0]]), config


def transformer_inputs(transformer, batch: dict, config) -> tuple[dict, torch.Tensor]:
    """What the training step hands the transformer (a pre-hook on the real model), and the loss."""
    seen: list[dict] = []
    hook = transformer.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs), with_kwargs=True)
    try:
        with torch.no_grad():
            loss = _training_loss(transformer, batch, config, micro_step=0, rank=0, device=CPU, dtype=torch.float32)
    finally:
        hook.remove()
    return seen[-1], loss


def test_reference_tokens_come_first_clean_at_timestep_zero_and_at_the_targets_positions(
    tiny_model_dir, ic_data, transformer
):
    batch, config = first_batch(tiny_model_dir, ic_data, transformer)
    inputs, _ = transformer_inputs(transformer, batch, config)
    tokens = FRAMES * HEIGHT * WIDTH
    hidden, timestep, coords = inputs["hidden_states"], inputs["timestep"], inputs["video_coords"]
    assert hidden.shape == (1, 2 * tokens, TINY_LATENT_CHANNELS)
    assert torch.equal(hidden[:, :tokens], batch["reference_latents"])  # clean: not a trace of noise
    assert not torch.equal(hidden[:, tokens:], batch["latents"])  # the target is noised
    assert timestep.shape == (1, 2 * tokens)
    assert (timestep[:, :tokens] == 0).all() and (timestep[:, tokens:] > 0).all()
    # Both halves sit at the target's positions: the rotations equal those the transformer builds for a
    # plain (reference-free) call of this clip, as LTXPipeline makes it.
    assert torch.equal(coords[..., :tokens], coords[..., tokens:])
    scale = ltx_video.batch_rope_interpolation_scale(batch["fps"], CPU)
    plain = transformer.rope(hidden[:, tokens:], FRAMES, HEIGHT, WIDTH, scale)
    given = transformer.rope(hidden, video_coords=coords)
    for plain_part, given_part in zip(plain, given, strict=True):
        assert torch.equal(given_part[:, tokens:], plain_part)


def test_first_frame_conditioning_still_keeps_the_targets_first_frame_clean(tiny_model_dir, ic_data, transformer):
    batch, config = first_batch(tiny_model_dir, ic_data, transformer, **{"conditioning.first_frame_conditioning_p": 1.0})
    inputs, _ = transformer_inputs(transformer, batch, config)
    tokens, first = FRAMES * HEIGHT * WIDTH, HEIGHT * WIDTH
    target_hidden, target_time = inputs["hidden_states"][:, tokens:], inputs["timestep"][:, tokens:]
    assert torch.equal(target_hidden[:, :first], batch["latents"][:, :first])
    assert (target_time[:, :first] == 0).all() and (target_time[:, first:] > 0).all()
    assert (inputs["timestep"][:, :tokens] == 0).all()


def loss_with_output_changed(transformer, batch, config, tokens: slice) -> torch.Tensor:
    """The step's loss when the transformer's predictions at `tokens` are replaced by garbage."""

    def spoil(module, args, kwargs, output):
        prediction = output[0].clone()
        prediction[:, tokens] += 1000.0
        return (prediction,)

    hook = transformer.register_forward_hook(spoil, with_kwargs=True)
    try:
        with torch.no_grad():
            return _training_loss(transformer, batch, config, micro_step=0, rank=0, device=CPU, dtype=torch.float32)
    finally:
        hook.remove()


def test_the_reference_tokens_carry_no_loss(tiny_model_dir, ic_data, transformer):
    batch, config = first_batch(tiny_model_dir, ic_data, transformer)
    tokens = FRAMES * HEIGHT * WIDTH
    _, loss = transformer_inputs(transformer, batch, config)
    assert torch.equal(loss_with_output_changed(transformer, batch, config, slice(0, tokens)), loss)
    assert loss_with_output_changed(transformer, batch, config, slice(tokens, None)) > 100 * loss


def test_the_target_attends_to_its_reference(tiny_model_dir, ic_data, transformer):
    batch, config = first_batch(tiny_model_dir, ic_data, transformer)
    _, loss = transformer_inputs(transformer, batch, config)
    other = dict(batch, reference_latents=torch.randn_like(batch["reference_latents"]))
    _, other_loss = transformer_inputs(transformer, other, config)
    _, same_loss = transformer_inputs(transformer, dict(batch), config)
    assert same_loss == loss  # the step is deterministic: only the reference differs
    assert other_loss != loss


# ---------------------------------------------------------------- validation


@pytest.fixture()
def reference_videos(tmp_path) -> list[Path]:
    """Two reference videos, larger than the validation size (resized and cropped as clips are), 12 frames."""
    from ltxtrainer.media import write_video
    from ltxtrainer.synthetic import scene_frames

    folder = tmp_path / "参考 refs"
    return [write_video(folder / f"ref {index}.mp4", scene_frames(96, 64, 12, index + 1), 24.0) for index in range(2)]


def test_step_zero_validation_in_bf16_shows_each_reference_beside_its_result(
    tiny_model_dir, ic_data, reference_videos, tmp_path
):
    from ltxtrainer.media import probe_video, read_frames, resize_and_crop
    from ltxtrainer.training.trainer import run_training

    output = tmp_path / "run"
    config = ic_config(
        tiny_model_dir, ic_data, output, validation=True,
        **{"optimization.steps": 2, "validation.interval": 2, "validation.prompts": ["edges", "edges again"],
           "validation.reference_videos": [str(path) for path in reference_videos]},
    )
    assert config["acceleration"]["mixed_precision_mode"] == "bf16"
    run_training(config_from_dict(config))
    for step in (0, 2):
        videos = sorted((output / "samples" / f"step_{step:06d}").glob("*.mp4"))
        assert [video.name for video in videos] == ["prompt_00_00.mp4", "prompt_01_00.mp4"]
        for video, reference in zip(videos, reference_videos, strict=True):
            info = probe_video(video)
            assert (info.width, info.height, info.num_frames) == (128, 64, 9)
            left = read_frames(video)[:, :, :64].astype(float)
            expected = resize_and_crop(read_frames(reference, count=9), 64, 64).astype(float)
            assert abs(left - expected).mean() < 8  # the reference itself, up to H.264


def test_every_denoising_step_sees_the_encoded_reference_clean_also_with_a_first_frame(
    tiny_model_dir, ic_data, reference_videos, tmp_path
):
    from PIL import Image

    from ltxtrainer.media import read_frames, resize_and_crop
    from ltxtrainer.preprocess import encode_frames
    from ltxtrainer.training.validation import LTXVideoValidation

    image = tmp_path / "first.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    config = config_from_dict(ic_config(
        tiny_model_dir, ic_data, tmp_path / "run", validation=True,
        **{"validation.prompts": ["edges", "edges from a frame"], "validation.images": [None, str(image)],
           "validation.reference_videos": [str(path) for path in reference_videos], "validation.frame_rate": 24.0},
    ))
    transformer = ltx_video.load_transformer(tiny_model_dir, dtype=torch.bfloat16)
    dataset = ltx_video.open_dataset(config, transformer)
    renderer = LTXVideoValidation(tiny_model_dir, config, dataset, CPU, torch.bfloat16)
    seen: list[dict] = []
    hook = transformer.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs), with_kwargs=True)
    try:
        renderer.render(transformer, tmp_path / "samples")
    finally:
        hook.remove()
    assert len(seen) == 2 * config.validation.inference_steps
    vae = ltx_video.load_vae(tiny_model_dir, dtype=torch.bfloat16)
    tokens = 2 * 2 * 2  # 64x64x9 in latents
    for call, inputs in enumerate(seen):
        reference = reference_videos[call // config.validation.inference_steps]
        encoded = encode_frames(vae, resize_and_crop(read_frames(reference, count=9), 64, 64))
        hidden, timestep = inputs["hidden_states"], inputs["timestep"]
        assert hidden.shape[:2] == (2, 2 * tokens)  # guidance: negative and positive prompt, each with the reference
        assert torch.equal(hidden[:, :tokens], encoded.to(hidden.dtype).expand(2, -1, -1))
        assert (timestep[:, :tokens] == 0).all() and (timestep[:, tokens:].amax(dim=1) > 0).all()


@pytest.mark.parametrize(
    ("videos", "message"),
    [
        (lambda paths: paths[:1], r"validation\.reference_videos needs one video per validation prompt \(2\), got 1"),
        (lambda paths: [paths[0], paths[1].with_name("gone.mp4")], r"validation\.reference_videos\[1\]: .*gone\.mp4"),
    ],
    ids=["one-for-two-prompts", "missing-file"],
)
def test_wrong_validation_references_stop_the_run_before_training_naming_the_field(
    tiny_model_dir, ic_data, reference_videos, tmp_path, videos, message
):
    from ltxtrainer.config import ConfigError
    from ltxtrainer.training.trainer import run_training

    config = ic_config(
        tiny_model_dir, ic_data, tmp_path / "run", validation=True,
        **{"validation.prompts": ["edges", "edges again"],
           "validation.reference_videos": [str(path) for path in videos(reference_videos)]},
    )
    with pytest.raises(ConfigError, match=message):
        run_training(config_from_dict(config))
    assert not (tmp_path / "run" / "samples").exists()


def test_a_reference_downscale_factor_is_refused_for_ltx_video_09(tiny_model_dir, ic_data, transformer):
    from ltxtrainer.config import ConfigError

    with pytest.raises(ConfigError, match=r"conditioning\.reference_downscale_factor: 2 needs an LTX-2 model"):
        open_ic_dataset(tiny_model_dir, ic_data, transformer, **{"conditioning.reference_downscale_factor": 2})


def test_an_ic_run_trains_on_references_made_and_preprocessed_by_our_own_stages(tiny_model_dir, transformer, tmp_path):
    """compute_references -> preprocess --reference-dir -> training and validation with a reference."""
    from ltxtrainer.preprocess import preprocess_dataset
    from ltxtrainer.reference import compute_references
    from ltxtrainer.synthetic import make_clip
    from ltxtrainer.training.trainer import run_training

    clips = tmp_path / "我的 clips"
    for name in ("a", "sub/b 片段"):
        make_clip(clips / f"{name}.mp4", width=64, height=64, frames_per_scene=(17,))
        (clips / f"{name}.txt").write_text("a square and its edges", encoding="utf-8")
    references = tmp_path / "edges 边缘"
    compute_references(clips, references, "canny")
    report = preprocess_dataset(clips, "64x64x17", tiny_model_dir, max_sequence_length=16, reference_dir=references)
    assert not report.failed
    output = tmp_path / "run"
    config = ic_config(
        tiny_model_dir, clips, output, validation=True,
        **{"optimization.steps": 2, "validation.interval": 2, "conditioning.first_frame_conditioning_p": 0.2,
           "validation.reference_videos": [str(references / "a_reference.mp4")]},
    )
    dataset = ltx_video.open_dataset(config_from_dict(config), transformer)
    assert [sample.reference_latents_path.relative_to(clips / ".precomputed") for sample in dataset.samples] == [
        Path("reference_latents/a.pt"), Path("reference_latents/sub/b 片段.pt")
    ]
    result = run_training(config_from_dict(config))
    assert result.final_step == 2 and result.lora_path.is_file()
    assert len(sorted((output / "samples" / "step_000002").glob("*.mp4"))) == 1
