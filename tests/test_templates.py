"""Every shipped template trains as shipped, only shrunk to the tiny models.

A user's run is a template plus the folders and sizes the pipeline fills in. Each test here changes
exactly those (model folder, data, output, steps, validation size and denoising steps, and a
checkpoint interval so a checkpoint is written mid-run) and keeps everything else: bf16 mixed
precision, quantization, gradient checkpointing, the validation video before the first step, the
dataloader workers. bf16 runs on the CPU, so all of this runs on CI.

The reference LTX-Video-Trainer's shipped 2B configs are held here as data (their field values,
written out) and must train unchanged but for the same paths and sizes. IC-LoRA configs
(`conditioning.mode: reference_video`) get a dataset with reference latents and one reference video
per validation prompt.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ltxtrainer.config import config_from_dict, load_config
from ltxtrainer.media import probe_video
from ltxtrainer.pipeline import TEMPLATES
from ltxtrainer.training import checkpoints
from ltxtrainer.training.trainer import EFFECTIVE_CONFIG, run_training
from tests.precomputed import write_reference, write_sample

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SHIPPED = sorted(CONFIGS.glob("*.yaml"))
STEPS = 3
CLIP_FPS = (30.0, 30.0, 20.0)  # the validation videos are rendered at the median: 30
TEXT_LENGTH = 24  # the dataset's own T5 length (not diffusers' 128)
# What scripts/run_pipeline.py writes when a template has no prompts: the dataset's first captions.
CAPTION = "APT a bright square moves across a red background"

# Lightricks/LTX-Video-Trainer configs/ltxv_2b_lora.yaml: bf16, validation every 100 steps, 8-bit T5.
REFERENCE_2B_LORA = {
    "model": {"model_source": "LTXV_2B_0.9.6_DEV", "training_mode": "lora", "load_checkpoint": None},
    "lora": {"rank": 32, "alpha": 32, "dropout": 0.0, "target_modules": ["to_k", "to_q", "to_v", "to_out.0"]},
    "conditioning": {"mode": "none", "first_frame_conditioning_p": 0.1},
    "optimization": {
        "learning_rate": 2e-4, "steps": 1500, "batch_size": 1, "gradient_accumulation_steps": 1, "max_grad_norm": 1.0,
        "optimizer_type": "adamw", "scheduler_type": "linear", "scheduler_params": {},
        "enable_gradient_checkpointing": False,
    },
    "acceleration": {
        "mixed_precision_mode": "bf16", "quantization": None, "load_text_encoder_in_8bit": True,
        "compile_with_inductor": False, "compilation_mode": "reduce-overhead",
    },
    "data": {"preprocessed_data_root": "/path/to/preprocessed/data", "num_dataloader_workers": 2},
    "validation": {
        "prompts": [
            "a professional portrait video of a person with blurry bokeh background",
            "a video of a person wearing a nice suit",
        ],
        "negative_prompt": "worst quality, inconsistent motion, blurry, jittery, distorted",
        "images": None, "video_dims": [768, 448, 89], "seed": 42, "inference_steps": 50, "interval": 100,
        "videos_per_prompt": 1, "guidance_scale": 3.5,
    },
    "checkpoints": {"interval": 250, "keep_last_n": -1},
    "flow_matching": {"timestep_sampling_mode": "shifted_logit_normal", "timestep_sampling_params": {}},
    "hub": {"push_to_hub": False, "hub_model_id": None},
    "wandb": {"enabled": False, "project": "ltxv-trainer", "entity": None, "tags": [], "log_validation_videos": True},
    "seed": 42,
    "output_dir": "outputs/ltxv_lora",
}
# configs/ltxv_2b_lora_low_vram.yaml: the same with fp8-quanto, adamw8bit and gradient checkpointing.
REFERENCE_2B_LORA_LOW_VRAM = {
    **REFERENCE_2B_LORA,
    "optimization": {**REFERENCE_2B_LORA["optimization"], "optimizer_type": "adamw8bit",
                     "enable_gradient_checkpointing": True},
    "acceleration": {**REFERENCE_2B_LORA["acceleration"], "quantization": "fp8-quanto"},
}
# configs/ltxv_13b_ic_lora.yaml: IC-LoRA, rank 128 on attention and feed-forward, three reference videos.
REFERENCE_13B_IC_LORA = {
    **REFERENCE_2B_LORA,
    "model": {"model_source": "LTXV_13B_097_DEV", "training_mode": "lora", "load_checkpoint": None},
    "lora": {"rank": 128, "alpha": 128, "dropout": 0.0,
             "target_modules": ["to_k", "to_q", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"]},
    "conditioning": {"mode": "reference_video", "first_frame_conditioning_p": 0.2,
                     "reference_latents_dir": "reference_latents"},
    "optimization": {**REFERENCE_2B_LORA["optimization"], "steps": 2000, "enable_gradient_checkpointing": True},
    "acceleration": {**REFERENCE_2B_LORA["acceleration"], "load_text_encoder_in_8bit": False},
    "validation": {
        "prompts": ["First validation prompt", "Second validation prompt", "Third validation prompt"],
        "reference_videos": ["/path/to/reference_a.mp4", "/path/to/reference_b.mp4", "/path/to/reference_c.mp4"],
        "negative_prompt": "worst quality, inconsistent motion, blurry, jittery, distorted",
        "video_dims": [512, 512, 81], "seed": 42, "inference_steps": 50, "interval": 250,
        "videos_per_prompt": 1, "guidance_scale": 3.5,
    },
    "checkpoints": {"interval": 250, "keep_last_n": 3},
    "output_dir": "outputs/ic_lora_13b",
}
REFERENCES = {
    "ltxv_2b_lora": REFERENCE_2B_LORA, "ltxv_2b_lora_low_vram": REFERENCE_2B_LORA_LOW_VRAM,
    "ltxv_13b_ic_lora": REFERENCE_13B_IC_LORA,
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dataset")
    for index, fps in enumerate(CLIP_FPS):
        write_sample(root, f"clip{index}", frames=2, height=2, width=2, seed=index, text_length=TEXT_LENGTH, fps=fps)
    return root


@pytest.fixture(scope="module")
def ic_dataset(tmp_path_factory) -> Path:
    """The dataset above with each clip's reference latents, as preprocess --reference-dir writes them."""
    root = tmp_path_factory.mktemp("ic dataset")
    for index, fps in enumerate(CLIP_FPS):
        write_sample(root, f"clip{index}", frames=2, height=2, width=2, seed=index, text_length=TEXT_LENGTH, fps=fps)
        write_reference(root, f"clip{index}", frames=2, height=2, width=2, seed=index)
    return root


@pytest.fixture(scope="module")
def reference_videos(tmp_path_factory) -> list[Path]:
    """Reference videos for IC validation prompts, in a folder with spaces and Chinese characters."""
    from ltxtrainer.media import write_video
    from ltxtrainer.synthetic import scene_frames

    folder = tmp_path_factory.mktemp("参考 videos")
    return [write_video(folder / f"ref {index}.mp4", scene_frames(64, 64, 9, index), 30.0) for index in range(3)]


def is_ic(data: dict) -> bool:
    return (data.get("conditioning") or {}).get("mode") == "reference_video"


def shrink(
    data: dict, model_dir: Path, data_dir: Path, output_dir: Path, steps: int = STEPS,
    reference_videos: list[Path] | None = None,
) -> dict:
    """The template with only the fields a tiny run must change (and, for IC-LoRA, the reference videos' paths)."""
    data = json.loads(json.dumps(data))
    data["model"]["model_source"] = str(model_dir)
    data["data"]["preprocessed_data_root"] = str(data_dir)
    data["output_dir"] = str(output_dir)
    data["optimization"]["steps"] = steps
    data["validation"]["video_dims"] = [64, 64, 9]
    data["validation"]["inference_steps"] = 2
    data["validation"]["prompts"] = data["validation"]["prompts"] or [CAPTION]
    if is_ic(data):
        data["validation"]["reference_videos"] = [str(path) for path in reference_videos[: len(data["validation"]["prompts"])]]
    data["checkpoints"]["interval"] = 2
    return data


def sample_videos(output_dir: Path, step: int) -> list[Path]:
    return sorted((output_dir / "samples" / f"step_{step:06d}").glob("*.mp4"))


def assert_trains_validates_checkpoints_and_resumes(data: dict, output: Path) -> None:
    """Train STEPS steps; then lose the last checkpoint and the LoRA, resume, and get the same LoRA."""
    result = run_training(config_from_dict(data))
    assert result.final_step == STEPS and result.lora_path.is_file()
    prompts = len(data["validation"]["prompts"])
    assert len(sample_videos(output, 0)) == prompts  # before the first step
    assert len(sample_videos(output, STEPS)) == prompts  # after the last
    assert probe_video(sample_videos(output, 0)[0]).width == (128 if is_ic(data) else 64)  # IC: reference | result
    assert [step for step, _ in checkpoints.list_checkpoints(output)] == [2, STEPS]
    uninterrupted = load_file(str(result.lora_path))

    shutil.rmtree(checkpoints.checkpoint_dir(output, STEPS))  # as if the run died during step 3
    result.lora_path.unlink()
    resumed = run_training(config_from_dict(data), resume=True)
    assert resumed.final_step == STEPS
    after_resume = load_file(str(resumed.lora_path))
    assert after_resume.keys() == uninterrupted.keys()
    for key, value in uninterrupted.items():
        assert torch.equal(after_resume[key], value), key


def test_the_gui_and_pipeline_templates_are_shipped_files():
    assert {CONFIGS / name for name in TEMPLATES.values()} <= set(SHIPPED)


@pytest.fixture(scope="module")
def tiny_ltx2_dir(tmp_path_factory) -> Path:
    from ltxtrainer.models.tiny_ltx2 import save_tiny_ltx2_model

    return save_tiny_ltx2_model(tmp_path_factory.mktemp("models") / "tiny-ltx2")


@pytest.fixture(scope="module")
def ltx2_dataset(tiny_ltx2_dir, tmp_path_factory) -> Path:
    """Clips with sound at CLIP_FPS, precomputed for LTX-2 with audio, as preprocessing writes them."""
    from ltxtrainer.precompute_ltx2 import ClipToEncode, precompute_ltx2_samples
    from ltxtrainer.synthetic import scene_frames
    from ltxtrainer.training.validation_ltx2 import write_video_with_audio

    root = tmp_path_factory.mktemp("ltx2 dataset")
    clips = []
    for index, fps in enumerate(CLIP_FPS):
        rate = 24000
        times = torch.arange(int(rate * 17 / fps) + rate // 10) / rate
        wave = (0.3 * torch.sin(2 * torch.pi * 220.0 * (index + 1) * times)).repeat(2, 1)
        path = write_video_with_audio(root / f"clip{index}.mp4", scene_frames(64, 64, 17, index), fps, wave, rate)
        clips.append(ClipToEncode(path, CAPTION, f"clip{index}"))
    precompute_ltx2_samples(tiny_ltx2_dir, clips, root / ".precomputed", 64, 64, 17, with_audio=True)
    return root


@pytest.mark.parametrize("template", SHIPPED, ids=[path.stem for path in SHIPPED])
def test_every_shipped_template_trains_validates_and_resumes(request, tmp_path, template):
    shipped = yaml.safe_load(template.read_text(encoding="utf-8"))
    assert shipped["acceleration"]["mixed_precision_mode"] == "bf16"
    assert shipped["validation"]["skip_initial_validation"] is False
    assert "frame_rate" not in shipped["validation"]  # the dataset's own fps
    # configs/ltx2_*.yaml are LTX-2 templates: the tiny LTX-2 model and LTX-2 data with sound.
    ltx2 = template.stem.startswith("ltx2_")
    tiny_model_dir = request.getfixturevalue("tiny_ltx2_dir" if ltx2 else "tiny_model_dir")
    dataset = request.getfixturevalue("ltx2_dataset" if ltx2 else "ic_dataset" if is_ic(shipped) else "dataset")
    output = tmp_path / "运行 run"
    references = request.getfixturevalue("reference_videos") if is_ic(shipped) else None
    assert_trains_validates_checkpoints_and_resumes(shrink(shipped, tiny_model_dir, dataset, output,
                                                           reference_videos=references), output)

    effective = load_config(output / EFFECTIVE_CONFIG)
    assert effective.validation.frame_rate == 30.0
    assert probe_video(sample_videos(output, 0)[0]).fps == pytest.approx(30.0)


@pytest.mark.parametrize("name", REFERENCES)
def test_the_reference_trainers_configs_train_unchanged_but_for_paths(request, tiny_model_dir, tmp_path, name):
    reference = REFERENCES[name]
    dataset = request.getfixturevalue("ic_dataset" if is_ic(reference) else "dataset")
    references = request.getfixturevalue("reference_videos") if is_ic(reference) else None
    output = tmp_path / "run"
    data = shrink(reference, tiny_model_dir, dataset, output, reference_videos=references)
    assert_trains_validates_checkpoints_and_resumes(data, output)
