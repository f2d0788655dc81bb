"""LTX-2 under the faults users meet: Ctrl+C during a joint audio+video run, and sources whose sound
is mono at 22.05 kHz or 5.1 (the "5.1(side)" layout AC-3 files carry), taken from the raw footage
through the scene split, preprocessing and training.

What tests/test_ltx2*.py already cover is not repeated here: the stop file's checkpoint and resume
(test_ltx2_training), `read_audio`'s exact mono/5.1/resampling arithmetic (test_ltx2), a silent clip
in a joint run refused, named, by precompute (test_ltx2_training) and by the preprocess script
(test_ltx2_pipeline), and a split keeping the sound in sync (test_scenes).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch
from safetensors.torch import load_file

from ltxtrainer.config import config_from_dict
from ltxtrainer.data import AUDIO_LATENTS_DIR
from ltxtrainer.models.tiny_ltx2 import save_tiny_ltx2_model
from ltxtrainer.precompute_ltx2 import ClipToEncode, precompute_ltx2_samples
from ltxtrainer.scenes import split_scenes
from ltxtrainer.training import checkpoints
from ltxtrainer.training.lora_io import LORA_FILE
from ltxtrainer.training.trainer import run_training
from tests.reliability.conftest import REPO, last_line, start_training, wait_for_step, write_config
from tests.test_ltx2_training import CLIP_FRAMES, SIZE, run_config, write_clip_with_sound
from tests.test_scenes import write_source_with_sound

STEPS = 8


@pytest.fixture(scope="module")
def tiny_ltx2(tmp_path_factory) -> Path:
    return save_tiny_ltx2_model(tmp_path_factory.mktemp("models") / "我的 models" / "tiny-ltx2")


@pytest.fixture(scope="module")
def joint_dataset(tiny_ltx2, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "数据 joint"
    clips = [
        ClipToEncode(write_clip_with_sound(root / f"clip{index}.mp4", index, 330.0 * (index + 1)), f"APT clip {index}",
                     f"clip{index}")
        for index in range(2)
    ]
    precompute_ltx2_samples(tiny_ltx2, clips, root / ".precomputed", SIZE, SIZE, CLIP_FRAMES, with_audio=True)
    return root


def joint_run(model: Path, data: Path, output: Path) -> dict:
    """The joint run of test_ltx2_training without validation (it does not touch the training state)."""
    config = run_config(model, data, output, with_audio=True, first_frame_p=0.5)
    config["optimization"]["steps"] = STEPS
    config["validation"]["interval"] = None
    config["checkpoints"]["interval"] = 100
    return config


@pytest.mark.skipif(sys.platform == "win32", reason="Windows cannot send SIGINT to a child; its stop-file path "
                    "is test_ltx2_training's stop-file test")
def test_ctrl_c_during_an_ltx2_joint_run_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(
    tiny_ltx2, joint_dataset, tmp_path, outcome
) -> None:
    straight = run_training(config_from_dict(joint_run(tiny_ltx2, joint_dataset, tmp_path / "straight")))

    output = tmp_path / "中断 run"
    config = write_config(tmp_path / "配置.yaml", joint_run(tiny_ltx2, joint_dataset, output))
    process = start_training(config)
    try:
        assert wait_for_step(process, at_least=1) is not None, process.communicate()[1][-2000:]
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr[-2000:]
    assert "--resume" in stderr and "Traceback" not in stderr
    stopped_at = checkpoints.list_checkpoints(output)[-1][0]
    assert 1 <= stopped_at < STEPS  # stopped early, and the step it finished is saved

    resumed = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), str(config), "--resume"],
                             capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected, actual = load_file(str(straight.lora_path)), load_file(str(output / LORA_FILE))
    assert expected.keys() == actual.keys() and any(".audio_attn1." in key for key in actual)
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key  # exact: same sigmas, noise and order after resume
    outcome(
        fault="Ctrl+C (SIGINT) during an LTX-2 audio+video training run, then --resume",
        tried=f"scripts/train.py on tiny LTX-2, {STEPS} steps, bf16, SIGINT after the first step",
        happened=f"exit 130 after saving step {stopped_at}: {last_line(stderr)}",
        kept=f"the checkpoint; the resumed run's LoRA equals an uninterrupted run's, bit for bit ({len(expected)} tensors)",
    )


def run_script(name: str, *args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *map(str, args)],
                          capture_output=True, text=True, encoding="utf-8", timeout=300)


def test_mono_22khz_and_5_1_sources_split_preprocess_and_train_on_their_converted_sound(
    tiny_ltx2, tmp_path, outcome
) -> None:
    raw = tmp_path / "素材 raw"
    write_source_with_sound(raw / "单声道 mono.mp4", "mono", 22050, "aac", 440.0)  # a phone voice memo's rate
    write_source_with_sound(raw / "surround.mkv", "5.1(side)", 48000, "pcm_s16le", 660.0)  # AC-3 style 5.1 in .mkv
    scenes = tmp_path / "场景 scenes"
    assert not split_scenes(raw, scenes, min_scene_len=8).failed
    clips = sorted(scenes.glob("*.mp4"))
    assert len(clips) == 4
    for clip in clips:  # each scene keeps the sound, at the source's rate and in a layout AAC takes
        with av.open(str(clip)) as container:
            stream = container.streams.audio[0]
            assert (stream.rate, stream.layout.name) == ((22050, "mono") if "mono" in clip.name else (48000, "5.1"))
        clip.with_suffix(".txt").write_text(f"APT {clip.stem}", encoding="utf-8")

    done = run_script("preprocess_dataset.py", scenes, "--resolution-buckets", f"{SIZE}x{SIZE}x{CLIP_FRAMES}",
                      "--model-path", tiny_ltx2, "--with-audio", "--device", "cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    audio_dir = scenes / ".precomputed" / AUDIO_LATENTS_DIR
    audio = {path.stem: torch.load(path, weights_only=True)["latents"] for path in audio_dir.glob("*.pt")}
    assert sorted(audio) == sorted(clip.stem for clip in clips)
    assert all(latents.shape[0] == 27 and latents.abs().sum() > 0 for latents in audio.values())

    config = run_config(tiny_ltx2, scenes, tmp_path / "run", with_audio=True, first_frame_p=0.5)
    config["optimization"]["steps"] = 2
    config["validation"]["interval"] = None
    result = run_training(config_from_dict(config))
    lora = load_file(str(result.lora_path))
    assert any(".audio_attn1." in key for key in lora)
    assert all(value.abs().sum() > 0 for key, value in lora.items() if ".lora_B." in key)
    outcome(
        fault="LTX-2 sources with mono 22.05 kHz sound and 5.1(side) 48 kHz sound in a joint audio+video run",
        tried="split_scenes, then preprocess_dataset --with-audio on the scenes, then 2 training steps",
        happened="split kept each scene's sound (22.05 kHz mono; 48 kHz 5.1, AAC); preprocess resampled it to "
        "16 kHz and mixed it to stereo",
        kept=f"{len(audio)} clips with audio latents and a joint LoRA trained on them",
    )
