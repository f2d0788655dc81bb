"""IC-LoRA on LTX-2: each clip is guided by its reference video (edges, depth, pose...).

The reference's latents (precomputed at 1/N of the clip's width and height) join the video
sequence after the target's tokens, clean, at timestep 0 and out of the loss, at RoPE positions
that cover the target's extent, as `LTX2InContextPipeline` places them at inference. Validation
renders with that pipeline and saves reference | result; the LoRA file records N where Lightricks'
LTX-2 pipelines read it. Everything runs on the tiny LTX-2 model, from the shipped LTX-2 template.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import yaml
from diffusers import LTX2InContextPipeline
from diffusers.pipelines.ltx2 import LTX2ReferenceCondition
from peft import get_peft_model_state_dict
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from ltxtrainer import export
from ltxtrainer.config import ConfigError, config_from_dict
from ltxtrainer.data import DatasetError
from ltxtrainer.media import read_frames, resize_and_crop, write_video
from ltxtrainer.models import ltx2
from ltxtrainer.models.tiny_ltx2 import VOCODER_SAMPLE_RATE, save_tiny_ltx2_model
from ltxtrainer.precompute_ltx2 import ClipToEncode, precompute_ltx2_samples
from ltxtrainer.synthetic import scene_frames
from ltxtrainer.training import checkpoints
from ltxtrainer.training.trainer import run_training
from ltxtrainer.training.validation_ltx2 import (
    LTX2Validation,
    check_reference_size,
    load_reference_videos,
    write_video_with_audio,
)

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "configs" / "ltx2_lora_24gb_template.yaml"
SIZE, CLIP_FRAMES, CLIP_FPS = 64, 17, 16.0  # 3 latent frames of 2x2 tokens
VALIDATION_FRAMES = 9  # 2 latent frames
STEPS = 3
CAPTION = "APT a bright square moves"
HALF_DIR = "reference_latents_half"  # the same references precomputed at downscale factor 2


def reference_frames(frames: np.ndarray) -> np.ndarray:
    """A stand-in for a Canny/depth reference: the clip's inverted grey levels, as RGB."""
    grey = frames.mean(axis=-1, keepdims=True).astype(np.uint8)
    return np.repeat(255 - grey, 3, axis=-1)


def write_reference_latents(model_dir: Path, reference: Path, output: Path, factor: int) -> None:
    """What preprocess --reference-dir --reference-downscale N writes for one clip: the reference
    resized to W/N x H/N, same frames, encoded and packed like latents/, with its factor."""
    vae = ltx2.load_component(model_dir, "vae")
    frames = resize_and_crop(read_frames(reference, count=CLIP_FRAMES), SIZE // factor, SIZE // factor)
    pixels = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0
    latents = ltx2.encode_video(vae, pixels)[0]
    frames_latent, height, width = ltx2.latent_size(dict(vae.config), SIZE // factor, SIZE // factor, CLIP_FRAMES)
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"latents": latents, "num_frames": frames_latent, "height": height, "width": width, "fps": CLIP_FPS,
                "downscale_factor": factor}, output)


@pytest.fixture(scope="module")
def tiny_ltx2_dir(tmp_path_factory) -> Path:
    return save_tiny_ltx2_model(tmp_path_factory.mktemp("models") / "我的 models" / "tiny-ltx2")


@pytest.fixture(scope="module")
def ic_dataset(tiny_ltx2_dir, tmp_path_factory) -> Path:
    """Two clips with sound and their references, precomputed with audio; references at factor 1
    (reference_latents/) and 2 (reference_latents_half/). Reference mp4s lie in <root>/references."""
    root = tmp_path_factory.mktemp("data") / "数据 ic"
    (root / "references").mkdir(parents=True)
    clips = []
    for index in range(2):
        frames = scene_frames(SIZE, SIZE, CLIP_FRAMES, index)
        samples = int(CLIP_FRAMES / CLIP_FPS * VOCODER_SAMPLE_RATE) + VOCODER_SAMPLE_RATE // 10
        wave = torch.sin(torch.arange(samples) / VOCODER_SAMPLE_RATE * 2 * torch.pi * 330.0 * (index + 1))
        clip = write_video_with_audio(root / f"clip{index}.mp4", frames, CLIP_FPS, 0.3 * wave.repeat(2, 1),
                                      VOCODER_SAMPLE_RATE)
        write_video(root / "references" / f"clip{index}_reference.mp4", reference_frames(frames), CLIP_FPS)
        clips.append(ClipToEncode(clip, f"{CAPTION}, clip {index}", f"clip{index}"))
    precomputed = root / ".precomputed"
    precompute_ltx2_samples(tiny_ltx2_dir, clips, precomputed, SIZE, SIZE, CLIP_FRAMES, with_audio=True)
    for index in range(2):
        reference = root / "references" / f"clip{index}_reference.mp4"
        write_reference_latents(tiny_ltx2_dir, reference, precomputed / "reference_latents" / f"clip{index}.pt", 1)
        write_reference_latents(tiny_ltx2_dir, reference, precomputed / HALF_DIR / f"clip{index}.pt", 2)
    return root


def ic_config(model: Path, data: Path, output: Path, factor: int = 2, with_audio: bool = False, **changes) -> dict:
    """The shipped LTX-2 template with the conditioning section set, shrunk to the tiny model as
    the template tests shrink it (bf16, int8 quantization, checkpointing, step-0 validation kept)."""
    config = yaml.safe_load(TEMPLATE.read_text(encoding="utf-8"))
    config["model"].update(model_source=str(model), with_audio=with_audio)
    if not with_audio:
        config["lora"]["target_modules"] = ltx2.lora_target_modules()
    config["data"]["preprocessed_data_root"] = str(data)
    config["output_dir"] = str(output)
    config["optimization"]["steps"] = STEPS
    config["validation"].update(
        prompts=[CAPTION], video_dims=[SIZE, SIZE, VALIDATION_FRAMES], inference_steps=2,
        reference_videos=[str(data / "references" / "clip0_reference.mp4")],
    )
    config["checkpoints"]["interval"] = 2
    config["conditioning"] = {
        "mode": "reference_video", "first_frame_conditioning_p": 0.1,
        "reference_latents_dir": HALF_DIR if factor == 2 else "reference_latents", "reference_downscale_factor": factor,
    }
    for section, values in changes.items():
        config[section].update(values)
    return config


def one_batch(tiny_ltx2_dir: Path, config: dict, index: int = 0) -> tuple[torch.nn.Module, dict]:
    transformer = ltx2.load_transformer(tiny_ltx2_dir)
    dataset = ltx2.open_dataset(config_from_dict(config), transformer)
    return transformer, ltx2.collate([dataset[index]])


class CallRecorder:
    """The keyword arguments the real tiny transformer is called with (a forward pre-hook)."""

    def __init__(self, transformer: torch.nn.Module):
        self.calls: list[dict] = []
        self.handle = transformer.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs) -> None:
        self.calls.append({key: value for key, value in kwargs.items()})


def test_reference_tokens_enter_clean_at_timestep_zero_at_the_targets_extent_and_out_of_the_loss(
    tiny_ltx2_dir, ic_dataset, tmp_path
) -> None:
    config = ic_config(tiny_ltx2_dir, ic_dataset, tmp_path, factor=2)
    transformer, batch = one_batch(tiny_ltx2_dir, config)
    target_tokens, reference_tokens = 3 * 2 * 2, 3 * 1 * 1
    assert batch["reference_latents"].shape == (1, reference_tokens, 16)
    recorder = CallRecorder(transformer)
    generator = torch.Generator().manual_seed(0)
    ltx2.training_loss(transformer, batch, config_from_dict(config), generator, torch.device("cpu"), torch.float32)
    (call,) = recorder.calls

    hidden = call["hidden_states"]
    assert hidden.shape == (1, target_tokens + reference_tokens, 16)
    assert torch.equal(hidden[:, target_tokens:], batch["reference_latents"])  # clean: no noise on the reference
    timesteps = call["timestep"]
    assert timesteps.shape == (1, target_tokens + reference_tokens)
    assert torch.all(timesteps[:, target_tokens:] == 0)
    assert torch.all(timesteps[:, 4:target_tokens] > 0)  # the target is noised (its first frame may be conditioned)

    coords = call["video_coords"]  # [B, (time, height, width), tokens, (start, end)]
    target, reference = coords[:, :, :target_tokens], coords[:, :, target_tokens:]
    assert torch.equal(target, transformer.rope.prepare_video_coords(1, 3, 2, 2, "cpu", fps=CLIP_FPS))
    # One reference token per latent frame spans the whole 64x64 frame, at that frame's times.
    assert torch.equal(reference[:, 1:], torch.tensor([0.0, 64.0]).expand(1, 2, 3, 2))
    assert torch.equal(reference[:, 0], target[:, 0, ::4])

    # Out of the loss: what the model predicts at the reference's positions changes nothing.
    sample = ltx2.LTX2Sample(
        video_latents=batch["latents"], latent_frames=3, latent_height=2, latent_width=2, fps=CLIP_FPS,
        video_text=batch["video_text"], audio_text=batch["audio_text"], text_mask=batch["text_mask"],
        reference_latents=batch["reference_latents"], reference_downscale_factor=2,
    )
    inputs = ltx2.flow_matching_inputs(sample, torch.tensor([0.7]), torch.Generator().manual_seed(1))
    assert not inputs.video_loss_mask[:, target_tokens:].any() and inputs.video_loss_mask[:, :target_tokens].all()
    prediction = torch.randn(1, target_tokens + reference_tokens, 16)
    changed = prediction.clone()
    changed[:, target_tokens:] += 100.0
    assert torch.equal(ltx2.step_loss(inputs, prediction, None), ltx2.step_loss(inputs, changed, None))
    changed[:, 0] += 1.0
    assert not torch.equal(ltx2.step_loss(inputs, prediction, None), ltx2.step_loss(inputs, changed, None))


@pytest.mark.parametrize("with_audio", [False, True], ids=["video only", "joint"])
def test_the_targets_loss_depends_on_its_reference(tiny_ltx2_dir, ic_dataset, tmp_path, with_audio) -> None:
    config = ic_config(tiny_ltx2_dir, ic_dataset, tmp_path, factor=1, with_audio=with_audio)
    transformer, batch = one_batch(tiny_ltx2_dir, config)
    _, other = one_batch(tiny_ltx2_dir, config, index=1)
    assert (batch["audio_latents"] is not None) == with_audio
    trainer_config = config_from_dict(config)

    def loss(reference: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(3)  # the same sigmas and noise each time
        return ltx2.training_loss(
            transformer, {**batch, "reference_latents": reference}, trainer_config, generator,
            torch.device("cpu"), torch.float32,
        )

    same = loss(batch["reference_latents"])
    assert torch.equal(same, loss(batch["reference_latents"].clone()))
    assert not torch.allclose(same, loss(other["reference_latents"]))


def test_without_reference_conditioning_the_transformer_is_called_as_before(tiny_ltx2_dir, ic_dataset, tmp_path):
    config = ic_config(tiny_ltx2_dir, ic_dataset, tmp_path)
    del config["conditioning"]
    transformer, batch = one_batch(tiny_ltx2_dir, config)
    assert batch["reference_latents"] is None
    recorder = CallRecorder(transformer)
    ltx2.training_loss(transformer, batch, config_from_dict(config), torch.Generator().manual_seed(0),
                       torch.device("cpu"), torch.float32)
    (call,) = recorder.calls
    assert call["hidden_states"].shape == (1, 12, 16)
    assert call["video_coords"] is None and call["timestep"].shape in ((1,), (1, 12))


def test_a_sample_without_reference_or_with_another_factor_is_refused_at_start(tiny_ltx2_dir, ic_dataset, tmp_path):
    data = tmp_path / "数据 copy"
    shutil.copytree(ic_dataset / ".precomputed", data / ".precomputed")
    transformer = ltx2.load_transformer(tiny_ltx2_dir)

    mismatched = ic_config(tiny_ltx2_dir, data, tmp_path, factor=1)
    mismatched["conditioning"]["reference_latents_dir"] = HALF_DIR
    with pytest.raises(DatasetError, match=r"factor 2.*reference_downscale_factor: 1"):
        ltx2.open_dataset(config_from_dict(mismatched), transformer)

    (data / ".precomputed" / HALF_DIR / "clip1.pt").unlink()
    with pytest.raises(DatasetError, match=r"1 of 2 samples .*clip1\.pt.*--reference-dir"):
        ltx2.open_dataset(config_from_dict(ic_config(tiny_ltx2_dir, data, tmp_path)), transformer)


def test_validation_references_must_match_the_prompts_and_exist(ic_dataset, tmp_path) -> None:
    reference = str(ic_dataset / "references" / "clip0_reference.mp4")
    with pytest.raises(ConfigError, match=r"validation.reference_videos needs one video per validation prompt \(2\)"):
        load_reference_videos([reference], ["one", "two"], SIZE, SIZE, VALIDATION_FRAMES)
    with pytest.raises(ConfigError, match=r"validation.reference_videos\[1\].*missing\.mp4"):
        load_reference_videos([reference, str(tmp_path / "missing.mp4")], ["one", "two"], SIZE, SIZE, 9)
    (frames,) = load_reference_videos([reference], ["one"], SIZE, SIZE, VALIDATION_FRAMES)
    assert frames.shape == (VALIDATION_FRAMES, SIZE, SIZE, 3)
    check_reference_size(768, 512, 4)  # 192x128
    with pytest.raises(ConfigError, match=r"704x480 .*factor 2.*352x240.*multiples of 64"):
        check_reference_size(704, 480, 2)


def test_validation_samples_with_the_reference_at_its_factor_and_saves_reference_beside_result(
    tiny_ltx2_dir, ic_dataset, tmp_path
) -> None:
    image = tmp_path / "第一帧 first.png"
    Image.fromarray(scene_frames(SIZE, SIZE, 1, 1)[0]).save(image)
    references = [str(ic_dataset / "references" / f"clip{index}_reference.mp4") for index in range(2)]
    config = config_from_dict(ic_config(
        tiny_ltx2_dir, ic_dataset, tmp_path, factor=2,
        validation={"prompts": [CAPTION, f"{CAPTION} from this image"], "images": [None, str(image)],
                    "reference_videos": references, "frame_rate": CLIP_FPS},
    ))
    renderer = LTX2Validation(tiny_ltx2_dir, config, torch.device("cpu"), torch.float32)
    transformer = ltx2.load_transformer(tiny_ltx2_dir)
    recorder = CallRecorder(transformer)
    videos = renderer.render(transformer, tmp_path / "samples")
    assert len(videos) == 2
    # 2 latent frames of 2x2 generated tokens, then the reference's 2 frames of 1x1 (64/2 pixels).
    assert {call["hidden_states"].shape[1] for call in recorder.calls} == {2 * 2 * 2 + 2}
    for video, reference in zip(videos, renderer.references, strict=True):
        frames = read_frames(video)
        assert frames.shape == (VALIDATION_FRAMES, SIZE, 2 * SIZE, 3)
        assert np.abs(frames[:, :, :SIZE].astype(int) - reference.astype(int)).mean() < 8  # H.264 round trip
        with av.open(str(video)) as container:
            assert len(container.streams.audio) == 1


def lora_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


@pytest.mark.parametrize("with_audio", [False, True], ids=["video only", "joint"])
def test_ic_lora_trains_from_the_ltx2_template_and_its_files_record_the_reference_factor(
    tiny_ltx2_dir, ic_dataset, tmp_path, with_audio
) -> None:
    output = tmp_path / "运行 ic"
    config = ic_config(tiny_ltx2_dir, ic_dataset, output, factor=2, with_audio=with_audio)
    result = run_training(config_from_dict(copy.deepcopy(config)))
    assert result.final_step == STEPS
    uninterrupted = load_file(str(result.lora_path))
    assert [step for step, _ in checkpoints.list_checkpoints(output)] == [2, STEPS]
    for step in (0, STEPS):
        (video,) = sorted((output / "samples" / f"step_{step:06d}").glob("*.mp4"))
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            assert (stream.width, stream.height) == (2 * SIZE, SIZE)  # reference | result
            assert len(container.streams.audio) == 1

    assert lora_metadata(result.lora_path)[export.REFERENCE_DOWNSCALE_METADATA_KEY] == "2"
    comfy = export.to_comfyui(result.lora_path)
    assert lora_metadata(comfy)[export.REFERENCE_DOWNSCALE_METADATA_KEY] == "2"
    back = export.to_diffusers(comfy, tmp_path / "back.safetensors")
    assert lora_metadata(back)[export.REFERENCE_DOWNSCALE_METADATA_KEY] == "2"

    # The user's inference: the ComfyUI file in diffusers' in-context pipeline, at the factor it records.
    pipeline = LTX2InContextPipeline.from_pretrained(tiny_ltx2_dir)
    pipeline.load_lora_weights(str(comfy), adapter_name="ic")
    assert set(get_peft_model_state_dict(pipeline.transformer, adapter_name="ic")) == {
        key.removeprefix("transformer.") for key in uninterrupted
    }
    reference = read_frames(ic_dataset / "references" / "clip1_reference.mp4", count=VALIDATION_FRAMES)
    video, _ = pipeline(
        prompt=CAPTION, reference_conditions=[LTX2ReferenceCondition(frames=[Image.fromarray(f) for f in reference])],
        reference_downscale_factor=int(lora_metadata(comfy)[export.REFERENCE_DOWNSCALE_METADATA_KEY]),
        width=SIZE, height=SIZE, num_frames=VALIDATION_FRAMES, frame_rate=CLIP_FPS, num_inference_steps=2,
        output_type="np", return_dict=False,
    )
    assert video.shape == (1, VALIDATION_FRAMES, SIZE, SIZE, 3)

    # A run that died during its last step resumes from the step-2 checkpoint to the same adapter.
    shutil.rmtree(checkpoints.checkpoint_dir(output, STEPS))
    result.lora_path.unlink()
    resumed = run_training(config_from_dict(copy.deepcopy(config)), resume=True)
    after_resume = load_file(str(resumed.lora_path))
    assert after_resume.keys() == uninterrupted.keys()
    for key, value in uninterrupted.items():
        assert torch.equal(after_resume[key], value), key
