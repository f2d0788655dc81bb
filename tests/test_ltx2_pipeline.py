"""LTX-2 through the stages users run: scripts/preprocess_dataset.py on a dataset folder of clips
with sound, then scripts/train.py on what it wrote (tiny LTX-2 model, bf16, step-0 validation)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ltxtrainer.data import AUDIO_LATENTS_DIR
from ltxtrainer.models import ltx2
from ltxtrainer.models.tiny_ltx2 import save_tiny_ltx2_model
from ltxtrainer.synthetic import make_clip
from tests.test_ltx2_training import (
    CLIP_FPS,
    CLIP_FRAMES,
    SIZE,
    VALIDATION_FRAMES,
    streams,
    write_clip_with_sound,
)

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUTF8": "1"}
BUCKET = f"{SIZE}x{SIZE}x{CLIP_FRAMES}"


@pytest.fixture(scope="module")
def tiny_ltx2(tmp_path_factory) -> Path:
    return save_tiny_ltx2_model(tmp_path_factory.mktemp("models") / "我的 models" / "tiny-ltx2")


def run_script(name: str, *args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *map(str, args)],
        env=ENV, capture_output=True, text=True, encoding="utf-8", timeout=300,
    )


def dataset_with_sound(folder: Path) -> Path:
    """Two clips with different tones, one captioned by a .txt beside it, one in captions.json."""
    write_clip_with_sound(folder / "clip0.mp4", 0, 330.0)
    (folder / "clip0.txt").write_text("APT a bright square moves, clip 0", encoding="utf-8")
    write_clip_with_sound(folder / "子 sub" / "clip1.mp4", 1, 660.0)
    captions = [{"media_path": "子 sub/clip1.mp4", "caption": "APT a bright square moves, clip 1"}]
    (folder / "captions.json").write_text(json.dumps(captions, ensure_ascii=False), encoding="utf-8")
    return folder


def test_preprocess_script_encodes_clips_with_sound_for_ltx2_and_train_script_trains_on_them(tiny_ltx2, tmp_path) -> None:
    dataset = dataset_with_sound(tmp_path / "数据 dataset")
    output_dir = tmp_path / "键 key"
    done = run_script("preprocess_dataset.py", dataset, "--resolution-buckets", BUCKET, "--model-path", tiny_ltx2,
                      "--output-dir", output_dir, "--device", "cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("clip0", "子 sub/clip1"):
        latents = torch.load(output_dir / "latents" / f"{name}.pt", weights_only=True)
        assert (latents["num_frames"], latents["height"], latents["width"], latents["fps"]) == (3, 2, 2, CLIP_FPS)
        conditions = torch.load(output_dir / "conditions" / f"{name}.pt", weights_only=True)
        assert set(conditions) == {"video_embeds", "audio_embeds"}
        assert torch.load(output_dir / AUDIO_LATENTS_DIR / f"{name}.pt", weights_only=True)["latents"].shape[0] == 27

    # Run again: nothing changed, nothing is encoded (the manifest records the audio choice).
    stamp = (output_dir / "latents" / "clip0.pt").stat().st_mtime_ns
    again = run_script("preprocess_dataset.py", dataset, "--resolution-buckets", BUCKET, "--model-path", tiny_ltx2,
                       "--output-dir", output_dir, "--device", "cpu")
    assert again.returncode == 0, again.stderr[-2000:]
    assert (output_dir / "latents" / "clip0.pt").stat().st_mtime_ns == stamp

    run = tmp_path / "运行 run"
    config = {
        "model": {"model_source": str(tiny_ltx2), "with_audio": True},
        "lora": {"rank": 4, "alpha": 8, "target_modules": ltx2.lora_target_modules(audio=True, cross_modal=True)},
        "optimization": {"steps": 2, "batch_size": 1, "learning_rate": 1e-3},
        "acceleration": {"mixed_precision_mode": "bf16"},
        "data": {"preprocessed_data_root": str(output_dir), "num_dataloader_workers": 0},
        "validation": {"prompts": ["APT a bright square moves"], "video_dims": [SIZE, SIZE, VALIDATION_FRAMES],
                       "inference_steps": 2, "interval": 2},
        "output_dir": str(run),
    }
    config_path = tmp_path / "配置.yaml"
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    trained = run_script("train.py", config_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (run / "lora_weights.safetensors").is_file()
    frames, seconds = streams(next((run / "samples" / "step_000000").glob("*.mp4")))
    assert frames == VALIDATION_FRAMES and seconds > 0.3


def test_a_clip_without_sound_means_video_only_by_default_and_is_named_with_audio(tiny_ltx2, tmp_path) -> None:
    dataset = dataset_with_sound(tmp_path / "data")
    make_clip(dataset / "无声 silent.mp4", width=SIZE, height=SIZE, frames_per_scene=(CLIP_FRAMES,), fps=CLIP_FPS)
    (dataset / "无声 silent.txt").write_text("APT a square", encoding="utf-8")
    refused = run_script("preprocess_dataset.py", dataset, "--resolution-buckets", BUCKET, "--model-path", tiny_ltx2,
                         "--with-audio", "--device", "cpu")
    assert refused.returncode == 2 and "无声 silent.mp4" in refused.stderr and "--no-audio" in refused.stderr
    done = run_script("preprocess_dataset.py", dataset, "--resolution-buckets", BUCKET, "--model-path", tiny_ltx2,
                      "--device", "cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no sound track" in done.stdout + done.stderr
    precomputed = dataset / ".precomputed"
    assert (precomputed / "latents" / "无声 silent.pt").is_file()
    assert not (precomputed / AUDIO_LATENTS_DIR).exists()


def pipeline_events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_demo_family_ltx2_runs_every_stage_to_a_validation_video_with_sound_and_a_comfyui_file_that_loads(
    tmp_path,
) -> None:
    from diffusers import LTX2Pipeline
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    root = tmp_path / "演示 demo"
    done = run_script("run_pipeline.py", "--demo", "--family", "ltx2", "--output-dir", root)
    assert done.returncode == 0, done.stderr[-3000:]
    end = pipeline_events(done.stdout)[-1]
    assert end["status"] == "finished"
    run_dir = Path(end["run_dir"])
    config = yaml.safe_load((run_dir / "training_config.yaml").read_text(encoding="utf-8"))
    assert config["acceleration"]["mixed_precision_mode"] == "bf16"
    assert config["acceleration"]["quantization"] == "int8-quanto"  # the 24 GB template as shipped
    # The split writes picture-only scene clips, so the demo's run is video only, and says so
    # consistently: the data key, the preprocess choice and the run config.
    assert Path(config["data"]["preprocessed_data_root"]).name.endswith("_ltx2_v")
    assert config["model"]["with_audio"] is False
    assert not any("audio" in name for name in config["lora"]["target_modules"])
    frames, seconds = streams(next((run_dir / "samples" / "step_000000").glob("*.mp4")))  # step-0 validation
    assert frames == 9 and seconds > 0.2

    comfy = Path(end["comfyui_lora"])
    pipeline = LTX2Pipeline.from_pretrained(root / "models" / "tiny-ltx2")
    pipeline.load_lora_weights(str(comfy), adapter_name="demo")
    loaded = get_peft_model_state_dict(pipeline.transformer, adapter_name="demo")
    trained = {key.removeprefix("transformer."): value for key, value in load_file(str(end["lora"])).items()}
    assert set(loaded) == set(trained) and len(load_file(str(comfy))) == len(loaded)  # every key loaded


def test_pipeline_with_the_ltx2_template_trains_sound_when_every_scene_clip_has_it(tiny_ltx2, tmp_path) -> None:
    from safetensors.torch import load_file

    scenes = tmp_path / "datasets" / "APT" / "scenes"
    write_clip_with_sound(scenes / "clip0.mp4", 0, 330.0)
    write_clip_with_sound(scenes / "clip1.mp4", 1, 660.0)
    overrides = ["optimization.steps=2", "validation.inference_steps=2", "validation.interval=2",
                 "checkpoints.interval=2", "acceleration.load_text_encoder_in_8bit=false"]
    done = run_script(
        "run_pipeline.py", "APT", "--resolution", f"{SIZE}x{SIZE}", "--frames", "9", "--steps",
        "caption,preprocess,train", "--config-template", "ltx2", "--captioner", "demo", "--model-path", tiny_ltx2,
        "--work-dir", tmp_path / "datasets", "--outputs-dir", tmp_path / "outputs",
        "--train-date-dir", tmp_path / "train_date", *[arg for item in overrides for arg in ("--set", item)],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    end = pipeline_events(done.stdout)[-1]
    config = yaml.safe_load((Path(end["run_dir"]) / "training_config.yaml").read_text(encoding="utf-8"))
    data_dir = Path(config["data"]["preprocessed_data_root"])
    assert data_dir.name.endswith("_ltx2_av") and config["model"]["with_audio"] is True
    assert data_dir.name.startswith(f"{SIZE}x{SIZE}x9_") and "_t256_" not in data_dir.name  # Gemma's length is fixed
    assert sorted(path.name for path in (data_dir / AUDIO_LATENTS_DIR).glob("*.pt")) == ["clip0.pt", "clip1.pt"]
    lora = load_file(str(end["lora"]))
    assert any(".audio_attn1." in key for key in lora) and any(".video_to_audio_attn." in key for key in lora)
    assert Path(end["comfyui_lora"]).is_file()


AUDIO_CHOICE_PROBE = """
import json, sys
from pathlib import Path
import av

opened = []
real_open = av.open


def counting_open(file, *args, **kwargs):
    opened.append(str(file))
    return real_open(file, *args, **kwargs)


av.open = counting_open
from ltxtrainer.pipeline import PipelineOptions, project_paths
from ltxtrainer.pipeline.run_choice import current_data_key
from ltxtrainer.pipeline.run_config import audio_choice
from ltxtrainer.synthetic import make_clip

root, model = Path(sys.argv[1]), sys.argv[2]
options = PipelineOptions(project="APT", width=64, height=64, frames=9, config_template="ltx2",
                          model_path=Path(model), work_dir=root / "datasets", outputs_dir=root / "outputs",
                          train_date_dir=root / "train_date")
paths = project_paths(options)
answers = [audio_choice(options, paths, model) for _ in range(3)]
key = current_data_key(options, paths, model)
probes = len(opened)
make_clip(paths.scenes_dir / "silent.mp4", 64, 64, (10,))
print(json.dumps({"answers": answers, "probes": probes, "key": key, "torch": "torch" in sys.modules,
                  "after_silent_clip": audio_choice(options, paths, model)}))
"""


def test_the_audio_choice_probes_each_clip_once_per_request_without_importing_torch(tiny_ltx2, tmp_path) -> None:
    """The pipeline asks whether every clip has sound while planning each stage; it must not decode
    the dataset again each time, nor load torch (seconds) before any stage runs."""
    scenes = tmp_path / "datasets" / "APT" / "scenes"
    write_clip_with_sound(scenes / "clip0.mp4", 0, 330.0)
    write_clip_with_sound(scenes / "子 sub" / "clip1.mp4", 1, 660.0)
    done = subprocess.run([sys.executable, "-c", AUDIO_CHOICE_PROBE, str(tmp_path), str(tiny_ltx2)], env=ENV, cwd=REPO,
                          capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["answers"] == [True, True, True] and result["probes"] == 2
    assert result["torch"] is False
    assert result["key"].startswith("64x64x9_") and "_t256" not in result["key"] and result["key"].endswith("_ltx2_av")
    assert result["after_silent_clip"] is False  # a new clip is probed: one silent clip makes the run video only
