"""LTX-2 through the trainer users run: clips with sound are precomputed, a LoRA trains (joint
audio+video or video only, text- and image-to-video) in bf16 with step-0 validation videos that
carry a sound track, checkpoints, an exact resume and a stop that saves, on the tiny LTX-2 model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from ltxtrainer.config import config_from_dict
from ltxtrainer.data import AUDIO_LATENTS_DIR, DatasetError
from ltxtrainer.models import ltx2
from ltxtrainer.models.tiny_ltx2 import VOCODER_SAMPLE_RATE, save_tiny_ltx2_model
from ltxtrainer.precompute_ltx2 import ClipToEncode, MissingAudioError, precompute_ltx2_samples
from ltxtrainer.stopfile import STOP_FILE_ENV
from ltxtrainer.synthetic import make_clip, scene_frames
from ltxtrainer.training import checkpoints
from ltxtrainer.training.trainer import run_training
from ltxtrainer.training.validation_ltx2 import write_video_with_audio

REPO = Path(__file__).resolve().parents[1]
SIZE, CLIP_FRAMES, CLIP_FPS = 64, 17, 16.0  # 3 latent frames of 2x2 tokens; 1.0625 s = 27 audio latent frames
VALIDATION_FRAMES = 9
STEPS = 3


def write_clip_with_sound(path: Path, scene: int, tone_hz: float) -> Path:
    """A synthetic clip with a stereo sine track (AAC), as a phone or camera records them."""
    samples = int(CLIP_FRAMES / CLIP_FPS * VOCODER_SAMPLE_RATE) + VOCODER_SAMPLE_RATE // 10
    times = np.arange(samples) / VOCODER_SAMPLE_RATE
    wave = torch.from_numpy(0.3 * np.sin(2 * np.pi * tone_hz * times)).float().repeat(2, 1)
    return write_video_with_audio(path, scene_frames(SIZE, SIZE, CLIP_FRAMES, scene), CLIP_FPS, wave, VOCODER_SAMPLE_RATE)


@pytest.fixture(scope="module")
def tiny_ltx2(tmp_path_factory) -> Path:
    return save_tiny_ltx2_model(tmp_path_factory.mktemp("models") / "我的 models" / "tiny-ltx2")


@pytest.fixture(scope="module")
def clips_with_sound(tmp_path_factory) -> list[ClipToEncode]:
    folder = tmp_path_factory.mktemp("clips") / "片段 clips"
    folder.mkdir()
    return [
        ClipToEncode(write_clip_with_sound(folder / f"clip{index}.mp4", index, 330.0 * (index + 1)),
                     f"APT a bright square moves, clip {index}", f"clip{index}")
        for index in range(2)
    ]


@pytest.fixture(scope="module")
def joint_dataset(tiny_ltx2, clips_with_sound, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "数据 joint"
    precompute_ltx2_samples(tiny_ltx2, clips_with_sound, root / ".precomputed", SIZE, SIZE, CLIP_FRAMES, with_audio=True)
    return root


def run_config(model: Path, data: Path, output: Path, with_audio: bool, first_frame_p: float, **validation) -> dict:
    """A shipped-template-like run shrunk to the tiny model: bf16, step-0 validation, checkpoint at step 2."""
    return {
        "model": {"model_source": str(model), "with_audio": with_audio},
        "lora": {"rank": 4, "alpha": 8, "target_modules": ltx2.lora_target_modules(audio=with_audio, cross_modal=with_audio)},
        "optimization": {"steps": STEPS, "batch_size": 1, "learning_rate": 1e-3,
                         "first_frame_conditioning_p": first_frame_p},
        "acceleration": {"mixed_precision_mode": "bf16"},
        "data": {"preprocessed_data_root": str(data), "num_dataloader_workers": 0},
        "validation": {"prompts": ["APT a bright square moves"], "video_dims": [SIZE, SIZE, VALIDATION_FRAMES],
                       "inference_steps": 2, "interval": STEPS, **validation},
        "checkpoints": {"interval": 2, "keep_last_n": -1},
        "output_dir": str(output),
    }


def streams(path: Path) -> tuple[int, float]:
    """(video frames, seconds of decoded sound) of an mp4."""
    with av.open(str(path)) as container:
        assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(str(path)) as container:
        audio = container.streams.audio[0]
        seconds = sum(frame.samples for frame in container.decode(audio=0)) / audio.rate
    return frames, seconds


def test_precompute_writes_video_latents_with_fps_audio_latents_and_connector_outputs(
    tiny_ltx2, clips_with_sound, joint_dataset
) -> None:
    precomputed = joint_dataset / ".precomputed"
    latents = torch.load(precomputed / "latents" / "clip0.pt", weights_only=True)
    assert (latents["num_frames"], latents["height"], latents["width"], latents["fps"]) == (3, 2, 2, CLIP_FPS)
    assert latents["latents"].shape == (3 * 2 * 2, 16)
    audio = torch.load(precomputed / AUDIO_LATENTS_DIR / "clip0.pt", weights_only=True)["latents"]
    audio_vae = ltx2.load_component(tiny_ltx2, "audio_vae")
    assert audio.shape[0] == ltx2.audio_latent_frames(dict(audio_vae.config), CLIP_FRAMES / CLIP_FPS) == 27
    # Different tones give different audio latents: the sound of each clip was encoded.
    other = torch.load(precomputed / AUDIO_LATENTS_DIR / "clip1.pt", weights_only=True)["latents"]
    assert not torch.allclose(audio, other)

    conditions = torch.load(precomputed / "conditions" / "clip0.pt", weights_only=True)
    (expected,) = ltx2.encode_prompts(
        ltx2.load_component(tiny_ltx2, "tokenizer"), ltx2.load_component(tiny_ltx2, "text_encoder"),
        ltx2.load_component(tiny_ltx2, "connectors"), [clips_with_sound[0].caption],
    )
    assert conditions["video_embeds"].dtype == torch.bfloat16
    assert torch.equal(conditions["video_embeds"], expected.video.to(torch.bfloat16))
    assert torch.equal(conditions["audio_embeds"], expected.audio.to(torch.bfloat16))


def test_joint_audio_video_image_to_video_lora_validates_with_sound_and_resumes_exactly(
    tiny_ltx2, joint_dataset, tmp_path
) -> None:
    image = tmp_path / "第一帧 first.png"
    Image.fromarray(scene_frames(SIZE, SIZE, 1, 3)[0]).save(image)
    output = tmp_path / "运行 joint"
    data = run_config(
        tiny_ltx2, joint_dataset, output, with_audio=True, first_frame_p=1.0,
        prompts=["APT a bright square moves", "APT the square from this image"], images=[None, str(image)],
    )
    result = run_training(config_from_dict(data))
    assert result.final_step == STEPS
    for step in (0, STEPS):  # text-to-video and image-to-video, before the first step and after the last
        videos = sorted((output / "samples" / f"step_{step:06d}").glob("*.mp4"))
        assert len(videos) == 2
        for video in videos:
            frames, seconds = streams(video)
            assert frames == VALIDATION_FRAMES
            # The sound lasts as long as the video, up to one AAC frame of padding (1024 samples).
            duration = VALIDATION_FRAMES / CLIP_FPS
            assert duration - 0.05 <= seconds <= duration + 1024 / VOCODER_SAMPLE_RATE + 0.05
    lora = load_file(str(result.lora_path))
    assert any(".audio_attn1." in key for key in lora) and any(".video_to_audio_attn." in key for key in lora)
    assert all(key.startswith("transformer.transformer_blocks.") for key in lora)
    assert all(value.abs().sum() > 0 for key, value in lora.items() if ".lora_B." in key)  # every adapter trained

    shutil.rmtree(checkpoints.checkpoint_dir(output, STEPS))  # as if the run died during step 3
    result.lora_path.unlink()
    resumed = run_training(config_from_dict(data), resume=True)
    after_resume = load_file(str(resumed.lora_path))
    assert after_resume.keys() == lora.keys()
    for key, value in lora.items():
        assert torch.equal(after_resume[key], value), key


def test_video_only_lora_trains_from_clips_without_sound(tiny_ltx2, tmp_path) -> None:
    clip = make_clip(tmp_path / "silent.mp4", width=SIZE, height=SIZE, frames_per_scene=(CLIP_FRAMES,), fps=CLIP_FPS)
    data_root = tmp_path / "video only"
    precompute_ltx2_samples(
        tiny_ltx2, [ClipToEncode(clip, "APT a square", "silent")], data_root / ".precomputed", SIZE, SIZE,
        CLIP_FRAMES, with_audio=False,
    )
    assert not (data_root / ".precomputed" / AUDIO_LATENTS_DIR).exists()
    output = tmp_path / "run"
    result = run_training(config_from_dict(run_config(tiny_ltx2, data_root, output, with_audio=False, first_frame_p=0.0)))
    lora = load_file(str(result.lora_path))
    assert not any("audio" in key for key in lora)
    assert all(value.abs().sum() > 0 for key, value in lora.items() if ".lora_B." in key)
    frames, _ = streams(next((output / "samples" / "step_000000").glob("*.mp4")))
    assert frames == VALIDATION_FRAMES

    # The same silent data cannot feed a joint run: the missing audio file is named.
    joint = config_from_dict(run_config(tiny_ltx2, data_root, tmp_path / "joint", with_audio=True, first_frame_p=0.0))
    with pytest.raises(DatasetError, match=r"audio_latents.+silent\.pt.+with_audio"):
        run_training(joint)


def test_joint_precompute_refuses_a_clip_without_sound_naming_it(tiny_ltx2, tmp_path) -> None:
    clip = make_clip(tmp_path / "无声 silent.mp4", width=SIZE, height=SIZE, frames_per_scene=(CLIP_FRAMES,), fps=CLIP_FPS)
    with pytest.raises(MissingAudioError, match="无声 silent.mp4"):
        precompute_ltx2_samples(
            tiny_ltx2, [ClipToEncode(clip, "APT", "silent")], tmp_path / "out", SIZE, SIZE, CLIP_FRAMES, with_audio=True
        )
    # Refused before the text encoder ran: on the real 12B Gemma the captions take minutes.
    assert not (tmp_path / "out").exists()


def test_train_script_stops_with_a_checkpoint_and_resumes_to_the_end(tiny_ltx2, joint_dataset, tmp_path) -> None:
    """scripts/train.py as the GUI runs it: the stop file (the GUI's Stop, a first Ctrl+C) saves and exits 130."""
    output = tmp_path / "cli run"
    data = run_config(tiny_ltx2, joint_dataset, output, with_audio=True, first_frame_p=0.5)
    data["validation"]["interval"] = None
    config_path = tmp_path / "配置.yaml"
    config_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    stop_file = tmp_path / "stop"
    stop_file.touch()
    env = {**os.environ, STOP_FILE_ENV: str(stop_file), "OMP_NUM_THREADS": "1", "PYTHONUTF8": "1"}
    command = [sys.executable, str(REPO / "scripts" / "train.py"), str(config_path)]
    stopped = subprocess.run(command, env=env, capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert [step for step, _ in checkpoints.list_checkpoints(output)] == [1]
    stop_file.unlink()
    finished = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, encoding="utf-8",
                              timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert (output / "lora_weights.safetensors").is_file()
    assert [step for step, _ in checkpoints.list_checkpoints(output)][-1] == STEPS


def test_run_lora_and_its_comfyui_file_load_in_ltx2_pipeline_with_every_key_and_the_trained_deltas(
    tiny_ltx2, joint_dataset, tmp_path
) -> None:
    from diffusers import LTX2Pipeline
    from peft import get_peft_model_state_dict

    from ltxtrainer.export import to_diffusers

    output = tmp_path / "run"
    data = run_config(tiny_ltx2, joint_dataset, output, with_audio=True, first_frame_p=0.0)
    data["lora"].update(rank=4, alpha=12)  # scale 3: folding is checked to float rounding
    data["validation"]["interval"] = None
    result = run_training(config_from_dict(data))
    # The final checkpoint keeps the adapter unfolded in fp32: the trained weights themselves.
    trained = {
        key.removeprefix("transformer."): value
        for key, value in load_file(str(result.checkpoint / "lora_weights.safetensors")).items()
    }
    comfy = tmp_path / "导出 lora_comfy.safetensors"
    convert = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "convert_to_comfyui.py"), str(result.lora_path), "--output", str(comfy)],
        capture_output=True, text=True, encoding="utf-8", env={**os.environ, "PYTHONUTF8": "1"}, timeout=120,
    )
    assert convert.returncode == 0, convert.stderr[-2000:]
    assert all(key.startswith("diffusion_model.transformer_blocks.") for key in load_file(str(comfy)))

    for path in (result.lora_path, comfy):
        pipeline = LTX2Pipeline.from_pretrained(tiny_ltx2)
        pipeline.load_lora_weights(str(path), adapter_name="trained")
        loaded = get_peft_model_state_dict(pipeline.transformer, adapter_name="trained")
        assert set(loaded) == set(trained), path
        for key in [key for key in trained if key.endswith("lora_A.weight")]:
            module = key.removesuffix(".lora_A.weight")
            layer = pipeline.transformer.get_submodule(module)
            loaded_delta = loaded[f"{module}.lora_B.weight"].float() @ loaded[key].float() * layer.scaling["trained"]
            trained_delta = trained[f"{module}.lora_B.weight"] @ trained[key] * 3.0
            torch.testing.assert_close(loaded_delta, trained_delta, rtol=2e-2, atol=1e-4)

    # Back from ComfyUI to diffusers gives the run's own tensors.
    back = load_file(str(to_diffusers(comfy, tmp_path / "back.safetensors")))
    run_file = load_file(str(result.lora_path))
    assert back.keys() == run_file.keys()
    for key, value in run_file.items():
        torch.testing.assert_close(back[key], value, rtol=1e-2, atol=0)


def test_int8_quantization_keeps_both_streams_outer_modules_and_quantizes_every_block_linear(tiny_ltx2, tmp_path) -> None:
    from optimum.quanto import QLinear

    from ltxtrainer.training.model_setup import prepare_transformer

    data = run_config(tiny_ltx2, tmp_path, tmp_path / "run", with_audio=True, first_frame_p=0.0)
    data["acceleration"]["quantization"] = "int8-quanto"
    transformer = prepare_transformer(
        ltx2.load_transformer(tiny_ltx2, torch.bfloat16), config_from_dict(data), torch.device("cpu"),
        quantize_exclude=ltx2.QUANTIZE_EXCLUDE,
    )
    linears = {name: module for name, module in transformer.named_modules() if isinstance(module, torch.nn.Linear)}
    outside = [name for name in linears if not name.startswith("transformer_blocks.") and ".lora_" not in name]
    assert any(name.startswith("audio_proj_in") for name in outside)
    assert not any(isinstance(linears[name], QLinear) for name in outside), outside
    inside = [name for name in linears if name.startswith("transformer_blocks.") and ".lora_" not in name]
    assert inside and all(isinstance(linears[name], QLinear) for name in inside)


def test_with_audio_on_an_ltx_video_model_is_refused_naming_the_field(tiny_model_dir, joint_dataset, tmp_path) -> None:
    from ltxtrainer.config import ConfigError

    data = run_config(tiny_model_dir, joint_dataset, tmp_path / "run", with_audio=True, first_frame_p=0.0)
    data["lora"]["target_modules"] = ["to_q"]
    with pytest.raises(ConfigError, match="model.with_audio"):
        run_training(config_from_dict(data))


def test_lora_targets_of_the_other_family_are_refused_with_the_valid_names(tiny_model_dir, tiny_ltx2, tmp_path) -> None:
    from ltxtrainer.config import ConfigError
    from ltxtrainer.models import ltx_video
    from ltxtrainer.training.model_setup import prepare_transformer

    data = run_config(tiny_model_dir, tmp_path, tmp_path / "run", with_audio=False, first_frame_p=0.0)
    data["lora"]["target_modules"] = ["attn1.to_q", "audio_attn1.to_q"]  # an LTX-2 preset on LTX-Video 0.9
    with pytest.raises(ConfigError, match=r"\['audio_attn1.to_q'\].+attn1.to_k"):
        prepare_transformer(ltx_video.load_transformer(tiny_model_dir), config_from_dict(data), torch.device("cpu"))
    data["lora"]["target_modules"] = ltx2.lora_target_modules(feed_forward=True, audio=True, cross_modal=True)
    transformer = prepare_transformer(ltx2.load_transformer(tiny_ltx2), config_from_dict(data), torch.device("cpu"))
    assert any("audio_ff" in name and "lora_A" in name for name, _ in transformer.named_parameters())


def test_ltx2_3_joint_lora_trains_and_renders_with_sound(clips_with_sound, tmp_path) -> None:
    """LTX-2.3 (gated attention, prompt modulation, per-modality connectors) through the same path."""
    model = save_tiny_ltx2_model(tmp_path / "tiny-ltx2.3", version="2.3")
    data_root = tmp_path / "data"
    precompute_ltx2_samples(model, clips_with_sound[:1], data_root / ".precomputed", SIZE, SIZE, CLIP_FRAMES, True)
    output = tmp_path / "run"
    result = run_training(config_from_dict(run_config(model, data_root, output, with_audio=True, first_frame_p=0.5)))
    assert all(value.abs().sum() > 0 for key, value in load_file(str(result.lora_path)).items() if ".lora_B." in key)
    frames, seconds = streams(next((output / "samples" / f"step_{STEPS:06d}").glob("*.mp4")))
    assert frames == VALIDATION_FRAMES and seconds > 0.5
