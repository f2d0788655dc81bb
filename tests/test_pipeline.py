"""The pipeline's own promises: it refuses unsafe projects, stops at the first failing stage with
that stage's words, and keeps an API key out of everything but the caption process's environment."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ltxtrainer.pipeline import (
    EXIT_FAILED,
    EXIT_USAGE,
    PipelineError,
    PipelineOptions,
    build_training_config,
    check_project_name,
    error_paragraph,
    parse_override,
    parse_steps,
    project_paths,
    run_pipeline,
)
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
    return json.loads(project_paths(options).status_file.read_text(encoding="utf-8"))


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


def test_steps_keep_pipeline_order_and_training_brings_the_export():
    assert parse_steps("train,split") == ("split", "train", "export")
    assert parse_steps("caption") == ("caption",)
    with pytest.raises(PipelineError):
        parse_steps("split,upload")


def test_overrides_reach_the_config_but_pipeline_owned_fields_are_refused(tmp_path):
    options = make_project(tmp_path, "ovr")
    options.overrides = dict([parse_override("lora.rank=4"), parse_override("optimization.learning_rate=2e-4")])
    config = build_training_config(options, project_paths(options))
    assert (config.lora.rank, config.optimization.learning_rate) == (4, 2e-4)
    assert config.validation.video_dims == (64, 64, 9)
    assert Path(config.output_dir) == project_paths(options).run_dir.resolve()
    options.overrides = {"output_dir": "/elsewhere"}
    with pytest.raises(PipelineError, match="--outputs-dir"):
        build_training_config(options, project_paths(options))
    options.overrides = {"lora.rnak": 4}
    assert run_pipeline(options) == EXIT_USAGE  # a typo is caught before any stage runs
    assert not project_paths(options).status_file.exists()


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
    assert any(line.startswith("Pipeline stopped at stage 'preprocess'") for line in last_line[-8:])
    status = read_status(options)
    stages = status["stages"]
    assert [stages[name]["status"] for name in ("split", "caption", "preprocess", "train", "export")] == [
        "done", "done", "failed", "pending", "pending"
    ]
    message = stages["preprocess"]["message"]
    assert shard.name in message and "missing" in message
    assert "Traceback" not in message
    assert status["error"] == {"stage": "preprocess", "message": message}
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert {"event": "pipeline", "stage": "preprocess", "status": "failed"}.items() <= events[-2].items()
    assert events[-1]["event"] == "error" and events[-1]["stage"] == "preprocess"
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
    status_text = project_paths(options).status_file.read_text(encoding="utf-8")
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
