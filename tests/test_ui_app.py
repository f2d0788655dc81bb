"""The GUI driven through its named endpoints with gradio_client, on a real local server.

A project of synthetic clips in a temporary train_date goes through the one-click pipeline on
the tiny models (template "tiny"), then through the ComfyUI export tab; the advanced tab saves a
YAML that load_config accepts and refuses a bad value with the schema's message.
"""

from __future__ import annotations

import html
import json
import re
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


def poll(client, lang: str):
    """The pipeline tab's monitor as the page sees it, in `lang` (the session's language)."""
    client.predict(lang, api_name="/set_language")
    banner, progress, queue, _queued, log, loss, videos = client.predict(api_name="/poll_job")
    return banner, progress, queue, log, loss, videos


@pytest.mark.slow
def test_one_click_pipeline_on_tiny_models_to_a_comfyui_file(server, workspace):
    client, runner = server
    projects = client.predict(api_name="/list_projects")
    label, value = projects["choices"][0]
    assert value == PROJECT and label.startswith(f"{PROJECT}（2 个视频")
    message = client.predict(PROJECT, "64x64", 17, "shrink", ["split", "caption", "preprocess", "train"], 0, "",
                             "tiny", "demo", "", "", "", api_name="/start_pipeline")
    assert message == ""  # no refusal
    job = wait_for_job(runner, "pipeline")
    assert job.status == "finished", runner.read_log(job.id)
    events = runner.events(job.id)
    start = next(event for event in events if event["event"] == "pipeline_start")
    run_dir = Path(start["run_dir"])
    comfy = next(event for event in events if event["event"] == "pipeline_end")["comfyui_lora"]
    total = [event for event in events if event["event"] == "step"][-1]["total_steps"]  # the template's steps

    for lang, finished, done, lora_word in (("zh", "已完成", "完成", "LoRA 文件"), ("en", "Finished", "done", "LoRA file")):
        banner, progress, queue, log, loss, videos = poll(client, lang)
        assert finished in banner and 'data-state="finished"' in banner
        assert lora_word in banner and comfy in banner and str(run_dir / "lora_weights.safetensors") in banner
        # every stage row is done (or skipped as done), with a full bar
        rows = re.findall(r'<tr data-stage="(\w+)" data-state="(\w+)">', progress)
        assert [stage for stage, _ in rows] == ["split", "caption", "preprocess", "train", "export"]
        assert {state for _, state in rows} == {"done"}
        assert re.search(rf"<td [^>]*>{done}</td>", progress)
        assert "100%" in progress and f"{total} / {total}" in progress
        assert "Pipeline" in log and "&quot;event&quot;" not in log  # human lines only, no JSON events
        empty, ended = {"zh": ("队列为空。", "：已完成"), "en": ("The queue is empty.", ": finished")}[lang]
        assert queue.startswith(empty) and ended in queue  # nothing queued; the run's outcome is listed
        assert loss["columns"] == ["step", "value", "series"] and len(loss["data"]) == 2 * total  # loss and smoothed
        assert all(isinstance(row[1], float) for row in loss["data"])
        assert "<video" in videos and "prompt_00_00.mp4" in videos and "APT a bright square" in videos
    assert (run_dir / "metrics.jsonl").is_file()

    loras = client.predict(api_name="/list_loras")["choices"]
    final = next(value for _, value in loras if value.endswith(f"{run_dir.name}/lora_weights.safetensors"))
    refused = client.predict(final, "../outside.safetensors", api_name="/convert_lora")
    assert 'data-state="refused"' in refused and "&#x27;..&#x27; is not allowed" in refused
    assert runner.current("export") is None
    message = client.predict(final, "", api_name="/convert_lora")
    export = wait_for_job(runner, "export")
    assert export.status == "finished", runner.read_log(export.id)
    converted = Path(export.meta["output"])
    assert converted.parent == workspace.comfyui_exports and str(converted) in message
    banner = client.predict(api_name="/poll_export")
    assert "Output file" in banner and str(converted) in banner  # the session is in English now
    with safe_open(str(converted), "pt") as handle:
        assert all(key.startswith("diffusion_model.") for key in handle.keys())

    # the dataset tab: the clips of the project, a caption edited and saved to .txt and captions.json
    _, clips = client.predict(PROJECT, api_name="/list_clips")
    clip = clips["value"]
    _, caption, _reference = client.predict(PROJECT, clip, api_name="/show_clip")
    assert caption.startswith(PROJECT)
    client.predict(PROJECT, clip, f"{PROJECT} 一个手写的标注", api_name="/save_caption")
    scenes = workspace.datasets / PROJECT / "scenes"
    assert (scenes / clip).with_suffix(".txt").read_text(encoding="utf-8").strip() == f"{PROJECT} 一个手写的标注"
    entries = json.loads((scenes / "captions.json").read_text(encoding="utf-8"))
    assert {"media_path": clip, "caption": f"{PROJECT} 一个手写的标注"} in entries

    # re-captioning one clip shows its own outcome on the dataset tab (not "Queued:" forever)
    client.predict("zh", api_name="/set_language")
    assert client.predict(PROJECT, clip, "demo", "", "", "", api_name="/recaption_clip") == ""
    recaption = wait_for_job(runner, "caption", timeout=120)
    assert recaption.status == "finished", runner.read_log(recaption.id)
    dataset_banner = client.predict(api_name="/poll_dataset")
    assert "已完成" in dataset_banner and f"重新标注 {PROJECT}/{clip}" in dataset_banner  # its title in the page's language

    # the runs tab sees the finished run, with its loss curve and videos; it is not resumable
    client.predict(None, api_name="/list_runs")  # the page's run list learns the new run
    runs, table, refreshed_plot, refreshed_videos = client.predict(run_dir.name, api_name="/list_runs")
    assert run_dir.name in json.dumps(runs, ensure_ascii=False) and ["已完成", f"{total} / {total}"] == [
        row[1:3] for row in table["data"] if row[0] == run_dir.name][0]
    loss_plot, videos = client.predict(run_dir.name, api_name="/show_run")
    assert len(loss_plot["data"]) == 2 * total and f"第 {total} 步" in videos
    assert refreshed_plot == loss_plot and refreshed_videos == videos  # Refresh reloads the chosen run
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


def test_api_key_reaches_only_the_child_environment_and_the_failure_is_shown(server, workspace):
    client, runner = server
    make_clip(workspace.train_date / "KEYTEST" / "uncaptioned.mp4", width=96, height=64, frames_per_scene=(20,))
    client.predict(api_name="/list_projects")
    # 127.0.0.1:9 refuses connections: the caption stage fails after the key reached it
    client.predict("KEYTEST", "64x64", 17, "shrink", ["split", "caption"], 0, "", "tiny", "api",
                   "http://127.0.0.1:9/v1", "vision-model", SECRET, api_name="/start_pipeline")
    job = wait_for_job(runner, "pipeline", timeout=120)
    assert job.status == "failed"
    assert "LTXT_CAPTION_API_KEY" in job.argv and SECRET not in " ".join(job.argv)
    for file in [*(workspace.jobs / job.id).iterdir(), workspace.settings_file]:
        assert SECRET not in file.read_text(encoding="utf-8", errors="replace")
    end = next(event for event in runner.events(job.id) if event["event"] == "pipeline_end")
    assert end["status"] == "failed" and end["stage"] == "caption" and end["message"]
    for lang, word in (("zh", "失败"), ("en", "Failed")):
        banner, *_ = poll(client, lang)
        assert word in banner and 'data-state="failed"' in banner
        assert html.escape(end["message"][:60]) in banner  # the reason, first paragraph, on the page
    status = workspace.datasets / "KEYTEST" / "pipeline_status.json"  # a run that trains nothing records here
    assert SECRET not in status.read_text(encoding="utf-8")


@pytest.mark.parametrize("bad", ["..", "../x", "/etc/passwd", "C:\\Windows", "a/../../b", "\\\\server\\share"])
def test_paths_from_the_ui_cannot_escape_the_project_folders(tmp_path, bad):
    with pytest.raises(UnsafePathError):
        safe_join(tmp_path, bad)


def test_a_yaml_saved_by_the_gui_keeps_reference_field_names(workspace, tmp_path):
    reference = yaml.safe_load((REPO_ROOT / "configs" / "tiny_demo.yaml").read_text(encoding="utf-8"))
    from ltxtrainer.config import save_config
    from ltxtrainer.ui.config_form import config_from_values, values_from_config

    saved = save_config(config_from_values(values_from_config(reference)), tmp_path / "saved.yaml")
    written = yaml.safe_load(saved.read_text(encoding="utf-8"))
    assert load_config(saved) == load_config(REPO_ROOT / "configs" / "tiny_demo.yaml")
    for section, fields in reference.items():  # every field of the reference file, under its own name
        assert section in written
        if isinstance(fields, dict):
            assert set(fields) <= set(written[section]), section
