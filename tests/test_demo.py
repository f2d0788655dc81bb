"""The user's first story: `./run.sh demo` goes from raw videos to a ComfyUI LoRA on a CPU, and
running the pipeline again does only what is missing."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from ltxtrainer.config import load_config
from ltxtrainer.demo import DEMO_TRIGGER, demo_options
from ltxtrainer.media import find_videos, probe_video
from ltxtrainer.pipeline import EXIT_FAILED, EXIT_OK, EXIT_STOPPED, project_paths, run_pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]
STAGES = ["split", "caption", "preprocess", "train", "export"]


def run_demo_cli(output_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/run_pipeline.py", "--demo", "--output-dir", str(output_dir)],
        cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8", timeout=600,
    )


def events_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def demo(tmp_path_factory, tiny_model_dir):
    """One demo run through the CLI, in a folder whose name has a space and Chinese characters."""
    root = tmp_path_factory.mktemp("demo") / "演示 demo"
    shutil.copytree(tiny_model_dir, root / "models" / "tiny-ltxv")  # already built: the demo keeps it
    result = run_demo_cli(root)
    assert result.returncode == EXIT_OK, result.stderr[-3000:]
    options = demo_options(root, root / "models" / "tiny-ltxv")
    return {"root": root, "result": result, "options": options, "paths": project_paths(options)}


def test_demo_goes_from_raw_videos_to_a_comfyui_lora(demo):
    paths = demo["paths"]
    clips = find_videos(paths.scenes_dir)
    assert len(clips) >= 4  # hard cuts in the synthetic sources became separate scenes
    captions = json.loads((paths.scenes_dir / "captions.json").read_text(encoding="utf-8"))
    assert sorted(entry["media_path"] for entry in captions) == [clip.name for clip in clips]
    for clip in clips:
        assert clip.with_suffix(".txt").read_text(encoding="utf-8").startswith(f"{DEMO_TRIGGER}, ")
        relative = clip.relative_to(paths.scenes_dir).with_suffix(".pt")
        assert (paths.precomputed_dir / "latents" / relative).is_file()
        assert (paths.precomputed_dir / "conditions" / relative).is_file()

    metrics = [json.loads(line) for line in (paths.run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    steps = [record["step"] for record in metrics if record["event"] == "step"]
    config = load_config(paths.config_file)
    assert steps == list(range(1, config.optimization.steps + 1))
    assert sorted((paths.run_dir / "checkpoints").glob("step_*"))
    samples = sorted((paths.run_dir / "samples").rglob("*.mp4"))
    assert samples
    info = probe_video(samples[-1])
    assert (info.width, info.height, info.num_frames) == (64, 64, 9)

    assert paths.lora_file.is_file()
    with safe_open(str(paths.comfy_file), framework="pt") as comfy:
        keys = list(comfy.keys())
    assert keys and all(key.startswith("diffusion_model.") for key in keys)

    status = json.loads(paths.status_file.read_text(encoding="utf-8"))
    assert status["state"] == "done"
    assert [status["stages"][stage]["status"] for stage in STAGES] == ["done"] * 5
    assert status["stages"]["export"]["artefacts"]["comfyui_lora"] == str(paths.comfy_file)
    stderr = demo["result"].stderr
    assert "Demo finished" in stderr and str(paths.comfy_file) in stderr and str(samples[-1]) in stderr
    # the GUI's stream: every stage's JSON lines arrive tagged with their stage
    events = events_of(demo["result"].stdout)
    assert {event["stage"] for event in events if event["event"] == "step"} == {"train"}
    assert [e["stage"] for e in events if e["event"] == "pipeline" and e["status"] == "done"] == STAGES


def test_effective_config_is_one_train_py_accepts(demo):
    paths = demo["paths"]
    config = load_config(paths.config_file)
    assert Path(config.output_dir) == paths.run_dir.resolve()
    assert Path(config.data.preprocessed_data_root) == paths.scenes_dir.resolve()
    assert Path(config.model.model_source) == (demo["root"] / "models" / "tiny-ltxv").resolve()
    assert config.validation.video_dims == (64, 64, 9)


def test_second_run_skips_every_done_stage(demo):
    paths = demo["paths"]
    metrics_before = (paths.run_dir / "metrics.jsonl").read_text(encoding="utf-8")
    result = run_demo_cli(demo["root"])
    assert result.returncode == EXIT_OK, result.stderr[-3000:]
    events = events_of(result.stdout)
    assert [(e["stage"], e["status"]) for e in events if e["event"] == "pipeline"] == [
        (stage, "skipped") for stage in STAGES
    ]
    assert (paths.run_dir / "metrics.jsonl").read_text(encoding="utf-8") == metrics_before
    status = json.loads(paths.status_file.read_text(encoding="utf-8"))
    assert all("already done" in status["stages"][stage]["message"] for stage in STAGES)


def test_changed_settings_never_mix_with_the_runs_checkpoints(demo):
    options = demo_options(demo["root"], demo["root"] / "models" / "tiny-ltxv")
    options.steps = ("train",)
    options.overrides = {"lora.rank": 4}
    assert run_pipeline(options) == EXIT_FAILED
    message = json.loads(demo["paths"].status_file.read_text(encoding="utf-8"))["stages"]["train"]["message"]
    assert "changed: lora.rank" in message
    assert load_config(demo["paths"].config_file).lora.rank == 8  # the run's own config is untouched


def test_more_steps_continue_the_finished_run_from_its_checkpoint(demo, capfd):
    paths = demo["paths"]
    finished = load_config(paths.config_file).optimization.steps
    options = demo_options(demo["root"], demo["root"] / "models" / "tiny-ltxv")
    options.steps = ("train",)
    options.overrides = {"optimization.steps": finished + 2, "validation.interval": None}
    assert run_pipeline(options) == EXIT_OK
    events = events_of(capfd.readouterr().out)
    start = next(event for event in events if event["event"] == "train_start")
    assert start["start_step"] == finished
    assert [event["step"] for event in events if event["event"] == "step"] == [finished + 1, finished + 2]
    status = json.loads(paths.status_file.read_text(encoding="utf-8"))
    assert status["stages"]["export"]["status"] == "done"  # a new LoRA file means a new ComfyUI export


def test_stop_during_training_saves_a_checkpoint_and_reports_stopped(demo):
    """What the GUI's Stop (or `kill PID`) does: the trainer stops cleanly, the pipeline exits 130."""
    paths, root = demo["paths"], demo["root"]
    command = [
        sys.executable, "scripts/run_pipeline.py", DEMO_TRIGGER, "--resolution", "64x64", "--frames", "9",
        "--steps", "train", "--config-template", "tiny", "--captioner", "demo",
        "--model-path", str(root / "models" / "tiny-ltxv"), "--train-date-dir", str(root / "train_date"),
        "--work-dir", str(root / "datasets"), "--outputs-dir", str(root / "outputs"),
        "--set", "optimization.steps=100000", "--set", "validation.interval=null",
    ]
    child = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, encoding="utf-8")
    stopped_after = None
    for line in child.stdout:
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == "step":
            stopped_after = event["step"]
            child.send_signal(signal.SIGTERM)
            break
    child.stdout.read()
    assert child.wait(timeout=300) == EXIT_STOPPED
    assert stopped_after is not None
    status = json.loads(paths.status_file.read_text(encoding="utf-8"))
    assert status["state"] == "stopped"
    assert status["stages"]["train"]["status"] == "failed"
    assert "stopped by the user" in status["stages"]["train"]["message"]
    assert status["stages"]["export"]["status"] == "pending"
    step_of_checkpoint = int(Path(status["stages"]["train"]["artefacts"]["checkpoint"]).name.split("_")[1])
    assert step_of_checkpoint >= stopped_after
