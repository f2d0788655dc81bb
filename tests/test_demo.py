"""The user's first story: `./run.sh demo` goes from raw videos to a ComfyUI LoRA on a CPU, running
the pipeline again does only what is missing, and every later request (other settings, another
resolution, a stop and a resume) trains its own run without touching the demo's.

The module's demo run is shared and never changed: tests that train make runs of their own
(a new stamped folder or a --run-name), and `demo_untouched` checks that after each of them."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from ltxtrainer.config import load_config
from ltxtrainer.demo import DEMO_TRIGGER, demo_options, demo_run_paths
from ltxtrainer.media import find_videos, probe_video
from ltxtrainer.pipeline import EXIT_OK, EXIT_STOPPED, EXIT_USAGE, run_pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]
STAGES = ["split", "caption", "preprocess", "train", "export"]


def run_demo_cli(output_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/run_pipeline.py", "--demo", "--output-dir", str(output_dir)],
        cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8", timeout=600,
    )


def events_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def pipeline_command(root: Path, *extra: str) -> list[str]:
    """run_pipeline.py on the demo's project and models, as a person would type it."""
    return [
        sys.executable, "scripts/run_pipeline.py", DEMO_TRIGGER, "--resolution", "64x64", "--frames", "9",
        "--config-template", "tiny", "--captioner", "demo", "--model-path", str(root / "models" / "tiny-ltxv"),
        "--train-date-dir", str(root / "train_date"), "--work-dir", str(root / "datasets"),
        "--outputs-dir", str(root / "outputs"), *extra,
    ]


def run_cli(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8", timeout=600)


def folder_bytes(folder: Path) -> dict[str, str]:
    return {path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def train_starts(run_dir: Path) -> list[dict]:
    metrics = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [record for record in map(json.loads, metrics) if record["event"] == "train_start"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory, tiny_model_dir):
    """One demo run through the CLI, in a folder whose name has a space and Chinese characters."""
    root = tmp_path_factory.mktemp("demo") / "演示 demo"
    shutil.copytree(tiny_model_dir, root / "models" / "tiny-ltxv")  # already built: the demo keeps it
    result = run_demo_cli(root)
    assert result.returncode == EXIT_OK, result.stderr[-3000:]
    options = demo_options(root, root / "models" / "tiny-ltxv")
    paths = demo_run_paths(options)
    status = json.loads(paths.status_file.read_text(encoding="utf-8"))
    return {"root": root, "result": result, "options": options, "paths": paths, "status": status,
            "data_dir": Path(status["precomputed_dir"]),
            "run_bytes": folder_bytes(paths.run_dir), "data_bytes": folder_bytes(Path(status["precomputed_dir"]))}


@pytest.fixture
def demo_untouched(demo):
    """After the test: the demo's run and its data are byte for byte as the demo left them (but for
    pipeline_status.json, which tells of the latest pipeline process that chose this run)."""
    yield demo
    run_bytes = {name: sha for name, sha in demo["run_bytes"].items() if name != "pipeline_status.json"}
    assert {name: sha for name, sha in folder_bytes(demo["paths"].run_dir).items()
            if name != "pipeline_status.json"} == run_bytes
    assert folder_bytes(demo["data_dir"]) == demo["data_bytes"]


def test_demo_goes_from_raw_videos_to_a_comfyui_lora(demo):
    paths, data_dir = demo["paths"], demo["data_dir"]
    assert paths.run_dir.name.startswith(f"{DEMO_TRIGGER}_64x64x9_")
    clips = find_videos(paths.scenes_dir)
    assert len(clips) >= 4  # hard cuts in the synthetic sources became separate scenes
    captions = json.loads((paths.scenes_dir / "captions.json").read_text(encoding="utf-8"))
    assert sorted(entry["media_path"] for entry in captions) == [clip.name for clip in clips]
    assert data_dir.parent == paths.precomputed_dir and data_dir.name.startswith("64x64x9_t256_")
    assert demo["status"]["data_key"] == data_dir.name
    for clip in clips:
        assert clip.with_suffix(".txt").read_text(encoding="utf-8").startswith(f"{DEMO_TRIGGER}, ")
        relative = clip.relative_to(paths.scenes_dir).with_suffix(".pt")
        assert (data_dir / "latents" / relative).is_file()
        assert (data_dir / "conditions" / relative).is_file()

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

    status = demo["status"]
    assert status["state"] == "finished" and status["run_name"] == paths.run_dir.name
    assert [status["stages"][stage]["status"] for stage in STAGES] == ["done"] * 5
    assert status["stages"]["export"]["artefacts"]["comfyui_lora"] == str(paths.comfy_file)
    stderr = demo["result"].stderr
    assert "Demo finished" in stderr and str(paths.comfy_file) in stderr and str(samples[-1]) in stderr
    # the GUI's stream: it opens with the run it trains, every stage's JSON lines arrive tagged with
    # their stage, and it closes with where the results are
    events = events_of(demo["result"].stdout)
    assert events[0] == {**events[0], "event": "pipeline_start", "project": DEMO_TRIGGER, "run_name": paths.run_dir.name,
                         "run_dir": str(paths.run_dir), "status_file": str(paths.status_file), "stages": STAGES,
                         "resume": False}
    assert {event["stage"] for event in events if event["event"] == "step"} == {"train"}
    assert [e["stage"] for e in events if e["event"] == "pipeline" and e["status"] == "done"] == STAGES
    assert events[-1] == {**events[-1], "event": "pipeline_end", "status": "finished", "run_dir": str(paths.run_dir),
                          "lora": str(paths.lora_file), "comfyui_lora": str(paths.comfy_file), "stage": None}
    assert Path(events[-1]["checkpoint"]).name == f"step_{config.optimization.steps:06d}"


def test_effective_config_is_one_train_py_accepts(demo):
    paths = demo["paths"]
    config = load_config(paths.config_file)
    assert Path(config.output_dir) == paths.run_dir.resolve()
    assert Path(config.data.preprocessed_data_root) == demo["data_dir"].resolve()
    assert Path(config.model.model_source) == (demo["root"] / "models" / "tiny-ltxv").resolve()
    assert config.validation.video_dims == (64, 64, 9)
    assert config.validation.frame_rate == 24.0  # the demo clips' rate, written by the pipeline


def test_second_run_skips_every_done_stage(demo_untouched):
    demo = demo_untouched
    result = run_demo_cli(demo["root"])
    assert result.returncode == EXIT_OK, result.stderr[-3000:]
    events = events_of(result.stdout)
    assert events[0]["run_dir"] == str(demo["paths"].run_dir)
    assert [(e["stage"], e["status"]) for e in events if e["event"] == "pipeline"] == [
        (stage, "skipped") for stage in STAGES
    ]
    # each skip is named by a code the GUI says in the user's language, with its values
    assert [e["code"] for e in events if e["event"] == "pipeline"] == [
        "already_done", "already_done", "already_done_into", "already_trained", "lora_unchanged"
    ]
    assert all(e["values"]["at"] for e in events if e["event"] == "pipeline")
    assert events[-1]["status"] == "finished" and events[-1]["comfyui_lora"] == str(demo["paths"].comfy_file)


def test_the_demos_run_named_for_other_settings_is_refused_and_kept(demo_untouched, capfd):
    """A changed request trains a run of its own (the stop test below shows one); naming the demo's
    run for it is refused before anything runs, with the ways forward."""
    demo = demo_untouched
    options = demo_options(demo["root"], demo["root"] / "models" / "tiny-ltxv")
    options.overrides = {"lora.rank": 4}
    options.run_name = demo["paths"].run_dir.name
    assert run_pipeline(options) == EXIT_USAGE
    events = events_of(capfd.readouterr().out)
    assert [event["event"] for event in events] == ["error", "pipeline_end"]  # refused before it started
    end = events[-1]
    assert (end["status"], end["run_name"], end["lora"]) == ("refused", options.run_name, str(demo["paths"].lora_file))
    assert "holds a run of other settings or data (changed: lora.rank)" in end["message"]
    assert "Leave out --run-name to start a new run folder" in end["message"]


def test_another_resolution_leaves_the_first_runs_data_and_its_resume_trains_on_it(demo_untouched):
    """The bug: a 64x64 run replaced the 768x512 latents, and resuming the 768x512 run trained on them."""
    demo = demo_untouched
    quick = ("--set", "optimization.steps=2", "--set", "validation.interval=null")
    first = run_cli(pipeline_command(demo["root"], "--steps", "train", "--run-name", "square", *quick))
    assert first.returncode == EXIT_OK, first.stderr[-3000:]
    square = Path(events_of(first.stdout)[0]["run_dir"])
    wide_command = pipeline_command(demo["root"], "--steps", "preprocess,train", "--run-name", "wide", *quick)
    wide_command[wide_command.index("64x64")] = "96x64"
    wide = run_cli(wide_command)
    assert wide.returncode == EXIT_OK, wide.stderr[-3000:]
    wide_status = json.loads((Path(events_of(wide.stdout)[0]["run_dir"]) / "pipeline_status.json").read_text("utf-8"))
    assert wide_status["data_key"].startswith("96x64x9_t256_") and wide_status["data_key"] != demo["data_dir"].name

    resumed = run_cli(pipeline_command(demo["root"], "--run-name", "square", "--resume",
                                       "--set", "optimization.steps=4"))
    assert resumed.returncode == EXIT_OK, resumed.stderr[-3000:]
    events = events_of(resumed.stdout)
    assert events[0]["resume"] is True and events[0]["stages"] == ["train", "export"]
    assert [event["step"] for event in events if event["event"] == "step"] == [3, 4]
    starts = train_starts(square)
    assert [start["start_step"] for start in starts] == [0, 2]
    assert starts[1]["buckets"] == starts[0]["buckets"] == [[2, 2, 2]]  # 9 frames, 64x64: its own latents
    assert train_starts(Path(wide_status["paths"]["run_dir"]))[0]["buckets"] == [[2, 2, 3]]
    assert events[-1]["status"] == "finished" and Path(events[-1]["comfyui_lora"]).is_file()


def test_stop_then_resume_from_the_runs_tab_then_the_pipeline_again_exports(demo_untouched):
    """Stop (or `kill PID`) saves a checkpoint; the Runs tab's resume finishes the run with train.py;
    the one-click pipeline with the same request then finds it finished and writes the ComfyUI file."""
    demo = demo_untouched
    command = pipeline_command(demo["root"], "--steps", "train", "--set", "optimization.steps=30",
                               "--set", "validation.interval=null", "--set", "checkpoints.interval=null")
    child = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, encoding="utf-8")
    events, stopped_after = [], None
    for line in child.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "step" and stopped_after is None:
            stopped_after = events[-1]["step"]
            child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=300) == EXIT_STOPPED
    run_dir = Path(events[0]["run_dir"])
    assert run_dir != demo["paths"].run_dir  # other settings: a run of its own
    end = events[-1]
    assert (end["event"], end["status"], end["stage"]) == ("pipeline_end", "stopped", "train")
    checkpoint = Path(end["checkpoint"])
    assert int(checkpoint.name.split("_")[1]) >= stopped_after and str(checkpoint) in end["message"]
    assert f"--run-name {run_dir.name} --resume" in end["message"]
    status = json.loads((run_dir / "pipeline_status.json").read_text(encoding="utf-8"))
    assert status["state"] == "stopped" and status["stages"]["train"]["status"] == "stopped"
    assert status["stages"]["export"]["status"] == "pending"

    resumed = run_cli([sys.executable, "scripts/train.py", str(run_dir / "training_config.yaml"), "--resume"])
    assert resumed.returncode == EXIT_OK, resumed.stderr[-3000:]
    again = run_cli(command)
    assert again.returncode == EXIT_OK, again.stderr[-3000:]
    events = events_of(again.stdout)
    assert events[0]["run_dir"] == str(run_dir)
    assert [(e["stage"], e["status"]) for e in events if e["event"] == "pipeline" and e["status"] != "running"] == [
        ("train", "skipped"), ("export", "done")]
    assert Path(events[-1]["comfyui_lora"]).is_file() and events[-1]["status"] == "finished"
