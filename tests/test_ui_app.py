"""The GUI driven through its named endpoints with gradio_client, on a real local server.

A project of synthetic clips in a temporary train_date goes through the one-click pipeline on
the tiny models (template "tiny"), then through the ComfyUI export tab; the advanced tab saves a
YAML that load_config accepts and refuses a bad value with the schema's message.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open

from ltxtrainer.config import load_config
from ltxtrainer.synthetic import make_clip
from ltxtrainer.ui.app import free_port, launch
from ltxtrainer.ui.jobs import JobRunner
from ltxtrainer.ui.settings import load_settings, remember
from ltxtrainer.ui.workspace import AppPaths, UnsafePathError, safe_join

REPO_ROOT = Path(__file__).resolve().parents[1]
PROJECT = "APT"
SECRET = "sk-test-secret-do-not-store"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model_dir) -> AppPaths:
    root = tmp_path_factory.mktemp("gui 工作区")
    project = root / "train_date" / PROJECT
    project.mkdir(parents=True)
    make_clip(project / "clip one.mp4", width=96, height=64, frames_per_scene=(30, 30))
    make_clip(project / "片段2.mp4", width=96, height=64, frames_per_scene=(30,))
    (root / "configs").mkdir()
    shutil.copy(REPO_ROOT / "configs" / "tiny_demo.yaml", root / "configs" / "tiny_demo.yaml")
    return AppPaths(root=REPO_ROOT, train_date=root / "train_date", datasets=root / "datasets",
                    outputs=root / "outputs", models=tiny_model_dir.parent, configs=root / "configs")


@pytest.fixture(scope="module")
def server(workspace):
    from gradio_client import Client

    runner = JobRunner(workspace.jobs)
    demo, url = launch(workspace, language="zh", port=free_port(7960), prevent_thread_lock=True, runner=runner)
    client = Client(url, verbose=False)
    yield client, runner
    for job in runner.jobs():
        if job.active:
            runner.stop(job.id)
    runner.close()
    demo.close()


def wait_for_job(runner: JobRunner, kind: str, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = runner.current(kind)
        if job is not None and job.done:
            return job
        time.sleep(0.5)
    raise AssertionError(f"the {kind} job did not end in {timeout} s:\n" + runner.read_log(runner.current().id))


@pytest.mark.slow
def test_one_click_pipeline_on_tiny_models_to_a_comfyui_file(server, workspace):
    client, runner = server
    projects = client.predict(api_name="/list_projects")
    label, value = projects["choices"][0]
    assert value == PROJECT and label.startswith(f"{PROJECT}（2 个视频")
    message = client.predict(PROJECT, "64x64", 25, ["split", "caption", "preprocess", "train"], "tiny", "demo",
                             "", "", "", api_name="/start_pipeline")
    assert PROJECT in message
    job = wait_for_job(runner, "pipeline")
    assert job.status == "finished", runner.read_log(job.id)

    job_line, stages, progress, log, loss, videos = client.predict(api_name="/poll_job")
    assert "已完成" in job_line  # the session language is Chinese
    assert "训练" in stages and "完成" in stages
    assert "train" in log
    assert len(loss["data"]) == 40 and loss["columns"] == ["step", "loss"]  # tiny_demo trains 40 steps
    run_dir = Path(job.meta["run_dir"])
    assert (run_dir / "metrics.jsonl").is_file()
    assert any(json.loads(line)["event"] == "step" for line in (run_dir / "metrics.jsonl").read_text().splitlines())

    loras = client.predict(api_name="/list_loras")["choices"]
    final = next(value for _, value in loras if value.endswith(f"{run_dir.name}/lora_weights.safetensors"))
    refused = client.predict(final, "../outside.safetensors", api_name="/convert_lora")
    assert refused.startswith("已拒绝") and runner.current("export") is None
    message = client.predict(final, "", api_name="/convert_lora")
    export = wait_for_job(runner, "export")
    assert export.status == "finished", runner.read_log(export.id)
    comfy = Path(export.meta["output"])
    assert comfy.parent == workspace.comfyui_exports and str(comfy) in message
    with safe_open(str(comfy), "pt") as handle:
        assert all(key.startswith("diffusion_model.") for key in handle.keys())

    # the dataset tab: the clips of the project, a caption edited and saved to .txt and captions.json
    _, clips = client.predict(PROJECT, api_name="/list_clips")
    clip = clips["value"]
    _, caption = client.predict(PROJECT, clip, api_name="/show_clip")
    assert caption.startswith(PROJECT)
    client.predict(PROJECT, clip, f"{PROJECT} 一个手写的标注", api_name="/save_caption")
    scenes = workspace.datasets / PROJECT / "scenes"
    assert (scenes / clip).with_suffix(".txt").read_text(encoding="utf-8").strip() == f"{PROJECT} 一个手写的标注"
    entries = json.loads((scenes / "captions.json").read_text(encoding="utf-8"))
    assert {"media_path": clip, "caption": f"{PROJECT} 一个手写的标注"} in entries

    # the runs tab sees the finished run; it is not resumable
    runs = client.predict(api_name="/list_runs")
    assert run_dir.name in json.dumps(runs, ensure_ascii=False)
    loss_plot, *_ = client.predict(run_dir.name, api_name="/show_run")
    assert len(loss_plot["data"]) == 40
    assert "不能继续" in client.predict(run_dir.name, api_name="/resume_run")


def test_saving_advanced_parameters_writes_a_yaml_load_config_accepts(server, workspace):
    client, _ = server
    *values, message = client.predict("tiny_demo.yaml", api_name="/load_config")
    assert "tiny_demo.yaml" in message
    from ltxtrainer.ui.config_form import form_fields

    paths = [field.path for field in form_fields()]
    values[paths.index("optimization.steps")] = 8000
    values[paths.index("validation.prompts")] = "APT 中文提示词\nAPT second prompt"
    message, _ = client.predict(*values, "my lora?", api_name="/save_config")
    assert "my lora?" in message and not list(workspace.configs.glob("my*"))
    message, _ = client.predict(*values, "my_lora", api_name="/save_config")
    saved = workspace.configs / "my_lora.yaml"
    config = load_config(saved)
    assert str(saved) in message
    assert config.optimization.steps == 8000
    assert config.validation.prompts == ["APT 中文提示词", "APT second prompt"]
    assert config.model.model_source == "models/tiny-ltxv"


def test_an_invalid_value_is_refused_with_the_schema_message(server, workspace):
    client, _ = server
    *values, _ = client.predict("tiny_demo.yaml", api_name="/load_config")
    from ltxtrainer.ui.config_form import form_fields

    paths = [field.path for field in form_fields()]
    values[paths.index("lora.rank")] = 0
    values[paths.index("validation.video_dims")] = "100, 64, 9"
    message, _ = client.predict(*values, "broken", api_name="/save_config")
    assert "lora.rank = 0: Input should be greater than or equal to 1" in message
    assert "validation.video_dims" in message and "multiples of 32" in message
    assert not (workspace.configs / "broken.yaml").exists()


def test_language_switch_is_remembered_and_the_api_key_never_is(server, workspace):
    client, _ = server
    client.predict("en", api_name="/set_language")
    assert load_settings(workspace.settings_file)["language"] == "en"
    client.predict("zh", api_name="/set_language")
    remember(workspace.settings_file, project=PROJECT, api_key=SECRET)
    text = workspace.settings_file.read_text(encoding="utf-8")
    assert PROJECT in text and SECRET not in text


def test_api_key_reaches_only_the_child_environment(server, workspace):
    client, runner = server
    client.predict(PROJECT, "64x64", 25, ["caption"], "tiny", "api", "http://127.0.0.1:9/v1", "vision-model",
                   SECRET, api_name="/start_pipeline")
    job = wait_for_job(runner, "pipeline", timeout=120)
    assert "LTXT_CAPTION_API_KEY" in job.argv and SECRET not in " ".join(job.argv)
    for file in [*(workspace.jobs / job.id).iterdir(), workspace.settings_file]:
        assert SECRET not in file.read_text(encoding="utf-8", errors="replace")
    status = Path(job.meta["status_file"])
    if status.is_file():
        assert SECRET not in status.read_text(encoding="utf-8")


@pytest.mark.parametrize("bad", ["..", "../x", "/etc/passwd", "C:\\Windows", "a/../../b", "\\\\server\\share"])
def test_paths_from_the_ui_cannot_escape_the_project_folders(tmp_path, bad):
    with pytest.raises(UnsafePathError):
        safe_join(tmp_path, bad)


def test_a_yaml_saved_by_the_gui_keeps_reference_field_names(workspace):
    data = yaml.safe_load((REPO_ROOT / "configs" / "tiny_demo.yaml").read_text(encoding="utf-8"))
    from ltxtrainer.ui.config_form import config_from_values, values_from_config

    assert config_from_values(values_from_config(data)) == load_config(REPO_ROOT / "configs" / "tiny_demo.yaml")
