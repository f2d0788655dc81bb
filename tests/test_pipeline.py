"""The pipeline's own promises: it refuses unsafe projects, stops at the first failing stage with
that stage's words, keeps an API key out of everything but the caption process's environment,
trains a changed request in a new run folder beside the old one, shrinks short clips by default,
and stops like Ctrl+C when the job's stop file appears."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ltxtrainer.config import load_config, save_config
from ltxtrainer.dataset_key import manifest_digest
from ltxtrainer.pipeline import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STOPPED,
    EXIT_USAGE,
    PipelineError,
    PipelineOptions,
    build_training_config,
    check_project_name,
    error_paragraph,
    parse_override,
    parse_steps,
    project_paths,
    project_runs,
    run_pipeline,
)
from ltxtrainer.pipeline.run_choice import resume_config
from ltxtrainer.preprocess import preprocess_dataset
from ltxtrainer.stopfile import STOP_FILE_ENV
from ltxtrainer.synthetic import make_clip

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_project(root: Path, name: str) -> PipelineOptions:
    """A project folder with one two-scene video, and options that keep every folder under `root`."""
    make_clip(root / "train_date" / name / "source clip.mp4", width=96, height=64, frames_per_scene=(18, 18))
    return PipelineOptions(
        project=name, width=64, height=64, frames=9, config_template="tiny", captioner="demo",
        train_date_dir=root / "train_date", work_dir=root / "datasets", outputs_dir=root / "outputs",
    )


def read_status(options: PipelineOptions) -> dict:
    """The status of a pipeline run that trains nothing (it has no run folder)."""
    return json.loads(project_paths(options).dataset_status_file.read_text(encoding="utf-8"))


def events_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def cli_args(options: PipelineOptions, steps: str, *extra: str, model: Path | None = None) -> list[str]:
    """The run_pipeline.py command line a person types for these options."""
    command = [
        sys.executable, "scripts/run_pipeline.py", options.project, "--resolution", f"{options.width}x{options.height}",
        "--frames", str(options.frames), "--steps", steps, "--config-template", options.config_template,
        "--captioner", options.captioner, "--train-date-dir", str(options.train_date_dir),
        "--work-dir", str(options.work_dir), "--outputs-dir", str(options.outputs_dir), *extra,
    ]
    return command + (["--model-path", str(model)] if model else [])


def run_cli(command: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8", timeout=600,
                          env=env)


def folder_bytes(folder: Path) -> dict[str, str]:
    """Every file under `folder` with the hash of its bytes."""
    return {path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("name", ["我的", "a b", "x;rm -rf", "..", "../escape", "/etc", "C:evil", "a/b", "CON", "-rf", ""])
def test_unsafe_trigger_words_are_refused_with_the_reason(name):
    with pytest.raises(PipelineError) as refused:
        check_project_name(name)
    message = str(refused.value)
    assert "ASCII letters, digits, '_' and '-'" in message
    assert "folder name and the first word of every caption" in message


@pytest.mark.parametrize("name", ["sks_style", "my-dog2", "APT"])
def test_plain_trigger_words_are_accepted(name):
    assert check_project_name(name) == name


def test_cli_refuses_a_shell_trigger_word_before_touching_any_folder(tmp_path):
    result = subprocess.run(
        [sys.executable, "scripts/run_pipeline.py", "x;rm -rf", "--resolution", "64x64", "--frames", "9",
         "--config-template", "tiny", "--train-date-dir", str(tmp_path / "train_date"),
         "--work-dir", str(tmp_path / "datasets"), "--outputs-dir", str(tmp_path / "outputs")],
        cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8", timeout=120,
    )
    assert result.returncode == EXIT_USAGE
    assert "'x;rm -rf' is refused" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []
    end = events_of(result.stdout)[-1]  # the GUI sees the refusal and its reason, not just an exit code
    assert (end["event"], end["status"], end["run_dir"]) == ("pipeline_end", "refused", None)
    assert "'x;rm -rf' is refused" in end["message"]


def test_a_bad_command_line_value_is_refused_with_the_allowed_values_as_the_last_json_line():
    result = subprocess.run([sys.executable, "scripts/run_pipeline.py", "cat", "--on-short", "cut"], cwd=REPO_ROOT,
                            capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert result.returncode == EXIT_USAGE
    end = events_of(result.stdout)[-1]
    assert (end["event"], end["status"]) == ("pipeline_end", "refused")
    assert "--on-short: invalid choice: 'cut' (choose from 'shrink', 'skip')" in end["message"]


def test_resume_names_the_run_it_continues_and_refuses_a_missing_one(tmp_path, capfd):
    options = make_project(tmp_path, "res")
    options.resume = True
    assert run_pipeline(options) == EXIT_USAGE
    assert "--resume continues one run, so it needs --run-name" in events_of(capfd.readouterr().out)[-1]["message"]
    options.run_name = "res_64x64x9_20260101-000000"
    assert run_pipeline(options) == EXIT_USAGE
    end = events_of(capfd.readouterr().out)[-1]
    assert (end["status"], end["run_name"]) == ("refused", options.run_name)
    assert "There is no run 'res_64x64x9_20260101-000000' to resume" in end["message"]


def test_steps_keep_pipeline_order_and_training_brings_the_export():
    assert parse_steps("train,split") == ("split", "train", "export")
    assert parse_steps("caption") == ("caption",)
    with pytest.raises(PipelineError):
        parse_steps("split,upload")


def test_overrides_reach_the_config_but_pipeline_owned_fields_are_refused(tmp_path):
    options = make_project(tmp_path, "ovr")
    options.overrides = dict([parse_override("lora.rank=4"), parse_override("optimization.learning_rate=2e-4")])
    paths = project_paths(options)
    config = build_training_config(options, paths, paths.data_folder("64x64x9_t256_0123456789"))
    assert (config.lora.rank, config.optimization.learning_rate) == (4, 2e-4)
    assert config.validation.video_dims == (64, 64, 9)
    assert Path(config.output_dir) == project_paths(options).run_dir.resolve()
    options.overrides = {"output_dir": "/elsewhere"}
    with pytest.raises(PipelineError, match="--outputs-dir"):
        build_training_config(options, paths, paths.precomputed_dir)
    options.overrides = {"lora.rnak": 4}
    assert run_pipeline(options) == EXIT_USAGE  # a typo is caught before any stage runs
    assert not project_paths(options).status_file.exists()
    assert not project_paths(options).dataset_status_file.exists()


def test_validation_samples_play_at_the_clips_median_frame_rate(tmp_path):
    options = make_project(tmp_path, "fps")
    make_clip(tmp_path / "datasets" / "fps" / "scenes" / "a.mp4", width=64, height=64, frames_per_scene=(9,), fps=30.0)
    make_clip(tmp_path / "datasets" / "fps" / "scenes" / "b.mp4", width=64, height=64, frames_per_scene=(9,), fps=30.0)
    make_clip(tmp_path / "datasets" / "fps" / "scenes" / "c.mp4", width=64, height=64, frames_per_scene=(9,), fps=12.0)
    paths = project_paths(options)
    assert build_training_config(options, paths, paths.precomputed_dir).validation.frame_rate == 30.0


def test_a_missing_project_folder_fails_the_split_stage_with_what_to_do(tmp_path, capsys):
    options = make_project(tmp_path, "here")
    options.project = "absent"
    options.steps = ("split", "caption")
    assert run_pipeline(options) == EXIT_FAILED
    status = read_status(options)
    assert status["state"] == "failed"
    assert status["stages"]["split"]["status"] == "failed"
    assert "create it and put the project's videos in it" in status["stages"]["split"]["message"]
    assert status["stages"]["caption"]["status"] == "pending"


def test_model_folder_missing_a_shard_stops_the_pipeline_at_preprocess(tmp_path, tiny_model_dir):
    broken = tmp_path / "models" / "broken model"
    shutil.copytree(tiny_model_dir, broken)
    shard = sorted((broken / "transformer").glob("*-of-*.safetensors"))[1]
    shard.unlink()
    options = make_project(tmp_path, "shard_test")
    result = subprocess.run(
        [sys.executable, "scripts/run_pipeline.py", "shard_test", "--resolution", "64x64", "--frames", "9",
         "--steps", "split,caption,preprocess,train", "--config-template", "tiny", "--captioner", "demo",
         "--model-path", str(broken), "--train-date-dir", str(options.train_date_dir),
         "--work-dir", str(options.work_dir), "--outputs-dir", str(options.outputs_dir)],
        cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8", timeout=300,
    )
    assert result.returncode == EXIT_FAILED, result.stderr
    last_line = result.stderr.strip().splitlines()
    assert any(line.startswith("Pipeline failed at stage 'preprocess'") for line in last_line[-8:])
    events = events_of(result.stdout)
    assert events[0]["event"] == "pipeline_start"
    status = json.loads(Path(events[0]["status_file"]).read_text(encoding="utf-8"))
    stages = status["stages"]
    assert [stages[name]["status"] for name in ("split", "caption", "preprocess", "train", "export")] == [
        "done", "done", "failed", "pending", "pending"
    ]
    message = stages["preprocess"]["message"]
    assert shard.name in message and "missing" in message
    assert "Traceback" not in message
    assert status["error"] == {"stage": "preprocess", "message": message}
    assert {"event": "pipeline", "stage": "preprocess", "status": "failed"}.items() <= events[-3].items()
    assert events[-2]["event"] == "error" and events[-2]["stage"] == "preprocess"
    end = events[-1]
    assert (end["event"], end["status"], end["stage"], end["message"]) == ("pipeline_end", "failed", "preprocess", message)
    assert end["run_dir"] == events[0]["run_dir"] and end["lora"] is None
    assert stages["caption"]["artefacts"]["captions"] == 2  # the stages before the failure kept their work


class _KeyEchoingServer(BaseHTTPRequestHandler):
    """An OpenAI-style server that refuses every key and, like a bad proxy, echoes it in the error."""

    seen_keys: list[str] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        type(self).seen_keys.append(key)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"error": {"message": f"invalid api key {key}", "type": "invalid_request_error"}})
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


def test_api_key_reaches_the_caption_process_only_through_its_environment(tmp_path, capfd):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KeyEchoingServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = "sk-test-4f9c2d1e8b7a"
    try:
        options = make_project(tmp_path, "apitest")
        options.steps = ("split", "caption")
        options.captioner = "api"
        options.api_base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        options.api_model = "vision-model"
        options.api_key_env = "LTXT_TEST_CAPTION_KEY"  # set nowhere: the key exists only in the options
        options.api_key = secret
        code = run_pipeline(options)
    finally:
        server.shutdown()
    captured = capfd.readouterr()
    assert code == EXIT_FAILED
    assert _KeyEchoingServer.seen_keys and set(_KeyEchoingServer.seen_keys) == {secret}
    status_text = project_paths(options).dataset_status_file.read_text(encoding="utf-8")
    message = json.loads(status_text)["stages"]["caption"]["message"]
    assert "refused the API key" in message
    for place in (captured.out, captured.err, status_text):
        assert secret not in place


def test_error_paragraph_is_the_last_paragraph_or_the_exception_line():
    assert error_paragraph(["Loading the VAE", "", "Preprocessing stopped: Model folder m is not usable:",
                            "  - missing x.safetensors", "Download it."]) == (
        "Preprocessing stopped: Model folder m is not usable:\n  - missing x.safetensors\nDownload it.")
    traceback = ["Traceback (most recent call last):", '  File "a.py", line 1, in <module>', "    boom()",
                 "ZeroDivisionError: division by zero"]
    assert error_paragraph(["starting", *traceback]) == "ZeroDivisionError: division by zero"
    assert error_paragraph(["step one", "step two", "caption: stopped: no key"]) == "caption: stopped: no key"


def test_the_stop_file_stops_the_pipeline_after_the_running_stage(tmp_path):
    """The GUI's Stop on Windows: no console signal, only LTXT_STOP_FILE; no later stage starts."""
    options = make_project(tmp_path, "stopfile")
    stop_file = tmp_path / "job" / "stop"
    env = {**os.environ, STOP_FILE_ENV: str(stop_file)}
    child = subprocess.Popen(cli_args(options, "split,caption"), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, encoding="utf-8", env=env)
    events = []
    for line in child.stdout:
        events.append(json.loads(line))
        if events[-1].get("event") == "pipeline" and events[-1]["status"] == "running":
            stop_file.parent.mkdir()
            stop_file.write_text("stop\n", encoding="utf-8")  # what ltxtrainer.stopfile.request_stop writes
    assert child.wait(timeout=300) == EXIT_STOPPED
    assert [(e["stage"], e["status"]) for e in events if e["event"] == "pipeline"] == [
        ("split", "running"), ("split", "done")]
    end = events[-1]
    assert (end["event"], end["status"], end["stage"]) == ("pipeline_end", "stopped", "caption")
    assert "Run the same request again to continue" in end["message"]
    status = read_status(options)
    assert status["state"] == "stopped" and status["stages"]["caption"]["status"] == "pending"


def test_49_frames_on_48_frame_scenes_trains_them_shrunk_with_a_note(tmp_path, tiny_model_dir):
    make_clip(tmp_path / "train_date" / "long" / "cut.mp4", width=96, height=64, frames_per_scene=(48, 48))
    options = PipelineOptions(
        project="long", width=64, height=64, frames=49, config_template="tiny", captioner="demo",
        train_date_dir=tmp_path / "train_date", work_dir=tmp_path / "datasets", outputs_dir=tmp_path / "outputs",
    )
    result = run_cli(cli_args(options, "split,caption,preprocess", model=tiny_model_dir))
    assert result.returncode == EXIT_OK, result.stderr[-3000:]
    status = read_status(options)
    note = status["stages"]["preprocess"]["message"]
    assert "shorter than their bucket, so trained with fewer frames" in note
    assert note.count("48 frames, trained as 41 instead of 49") == 2
    data_dir = Path(status["precomputed_dir"])
    assert data_dir.parent == project_paths(options).precomputed_dir and data_dir.name.startswith("64x64x49_t256_")
    latents = sorted((data_dir / "latents").rglob("*.pt"))
    assert len(latents) == 2
    import torch

    assert torch.load(latents[0], weights_only=True)["num_frames"] == 6  # 41 frames -> 6 latent frames

    skipped = run_cli(cli_args(options, "preprocess", "--on-short", "skip", model=tiny_model_dir))
    assert skipped.returncode == EXIT_FAILED
    message = events_of(skipped.stdout)[-1]["message"]
    assert "none of the 2 media file(s)" in message and "has 48 frames, fewer than its bucket" in message


def test_a_caption_edit_trains_a_new_run_and_never_touches_the_first(tmp_path, tiny_model_dir):
    """The user's story: train, edit a caption, run the same command again."""
    options = make_project(tmp_path, "mycat")
    quick = ("--set", "optimization.steps=2", "--set", "validation.interval=null", "--set", "checkpoints.interval=1")
    first = run_cli(cli_args(options, "split,caption,preprocess,train", *quick, model=tiny_model_dir))
    assert first.returncode == EXIT_OK, first.stderr[-3000:]
    first_start, first_end = events_of(first.stdout)[0], events_of(first.stdout)[-1]
    first_run = Path(first_start["run_dir"])
    assert first_run.name.startswith("mycat_64x64x9_") and first_end["status"] == "finished"
    assert Path(first_end["comfyui_lora"]).is_file()
    first_status = json.loads((first_run / "pipeline_status.json").read_text(encoding="utf-8"))
    first_data = Path(first_status["precomputed_dir"])
    assert Path(load_config(first_run / "training_config.yaml").data.preprocessed_data_root) == first_data.resolve()
    data_before, run_before = folder_bytes(first_data), folder_bytes(first_run)

    clip_caption = sorted(project_paths(options).scenes_dir.glob("*.txt"))[0]
    clip_caption.write_text("mycat, a cat sleeps on a red sofa", encoding="utf-8")
    again = run_cli(cli_args(options, "split,caption,preprocess,train", *quick, model=tiny_model_dir))
    assert again.returncode == EXIT_OK, again.stderr[-3000:]
    events = events_of(again.stdout)
    second_run = Path(events[0]["run_dir"])
    assert second_run != first_run and events[-1]["status"] == "finished"
    assert [(e["stage"], e["status"]) for e in events if e["event"] == "pipeline" and e["status"] != "running"] == [
        ("split", "skipped"), ("caption", "skipped"), ("preprocess", "done"), ("train", "done"), ("export", "done")]
    second_data = Path(json.loads((second_run / "pipeline_status.json").read_text(encoding="utf-8"))["precomputed_dir"])
    assert second_data != first_data
    assert folder_bytes(first_data) == data_before and folder_bytes(first_run) == run_before
    assert sorted(run.name for run in project_runs(options)) == sorted([first_run.name, second_run.name])

    named = run_cli(cli_args(options, "train", *quick, "--run-name", first_run.name, model=tiny_model_dir))
    assert named.returncode == EXIT_USAGE
    end = events_of(named.stdout)[-1]
    assert (end["status"], end["run_name"]) == ("refused", first_run.name)
    assert "holds a run of other settings or data (changed: data.preprocessed_data_root" in end["message"]
    assert f"--run-name {first_run.name} --resume" in end["message"]
    assert folder_bytes(first_run) == run_before


def test_resume_reads_old_layout_data_and_refuses_when_the_data_is_gone(tmp_path, tiny_model_dir):
    """Runs made before data keys name the dataset folder, whose .precomputed/ holds latents/ directly."""
    options = make_project(tmp_path, "old")
    scenes = project_paths(options).scenes_dir
    make_clip(scenes / "a.mp4", width=64, height=64, frames_per_scene=(9,))
    (scenes / "a.txt").write_text("old, a red square", encoding="utf-8")
    preprocess_dataset(scenes, "64x64x9", tiny_model_dir, max_sequence_length=16)
    assert (scenes / ".precomputed" / "latents" / "a.pt").is_file()
    options.run_name = "old_64x64x9"
    paths = project_paths(options)
    config = build_training_config(options, paths, scenes)
    save_config(config, paths.config_file)
    options.resume = True
    options.overrides = {"optimization.steps": 80}
    resumed = resume_config(options, paths)
    assert resumed.optimization.steps == 80 and resumed.data.preprocessed_data_root == str(scenes.resolve())
    from ltxtrainer.data import PrecomputedDataset

    assert len(PrecomputedDataset(resumed.data.preprocessed_data_root)) == 1

    options.overrides = {"lora.rank": 4}
    with pytest.raises(PipelineError, match="only optimization.steps, validation.. and checkpoints.. may change"):
        resume_config(options, paths)
    options.overrides = {}
    data = scenes / ".precomputed"
    paths.status_file.write_text(json.dumps({"project": "old", "data_manifest_sha256": manifest_digest(data)}),
                                 encoding="utf-8")
    assert resume_config(options, paths).optimization.steps == config.optimization.steps
    manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
    manifest["samples"]["a.mp4"]["conditions"]["caption_sha256"] = "0" * 16  # re-made from another caption
    (data / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(PipelineError, match="has changed since"):
        resume_config(options, paths)
    shutil.rmtree(data)
    with pytest.raises(PipelineError, match="the data it trained on .* is gone"):
        resume_config(options, paths)
