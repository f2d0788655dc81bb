"""The GUI journey of a new user in a real headless browser (Playwright driving Debian's chromium).

New project by upload -> one-click on the tiny models -> finished banner with the LoRA and
ComfyUI paths -> edit a caption -> Start again (a new run, no refusal; a second Start while it
runs is refused as a duplicate) -> Stop (banner: stopped, checkpoint) -> a run at a second
resolution -> resume the stopped run from the Runs tab (its data unchanged) -> export on the
Export tab (banner: done) -> reload (forms keep their values) -> switch to 中文 and see the
outcomes in Chinese. A screenshot of each step goes to test-artifacts/ (git-ignored).
Deselect with `-m "not browser"`.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import urljoin

import pytest
import yaml

from ltxtrainer.synthetic import make_clip
from ltxtrainer.ui.app import free_port, launch
from ltxtrainer.ui.jobs import JobRunner
from ltxtrainer.ui.workspace import AppPaths

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
PROJECT = "MYCAT"
RUN_S = 300_000  # ms a pipeline run on the tiny models may take on a busy 2-core machine

pytestmark = pytest.mark.browser


@pytest.fixture
def expect():
    return pytest.importorskip("playwright.sync_api").expect


@pytest.fixture
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not CHROMIUM.is_file():
        pytest.skip("no /usr/bin/chromium: install it with `apt-get install chromium fonts-noto-cjk`")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


@pytest.fixture
def gui(tmp_path, tiny_model_dir):
    """A server on an empty workspace (no project yet) and two clips of a cat video to upload."""
    (tmp_path / "train_date").mkdir()
    uploads = tmp_path / "my videos 上传"
    uploads.mkdir()
    make_clip(uploads / "cat one.mp4", width=96, height=64, frames_per_scene=(30, 30))
    make_clip(uploads / "猫2.mp4", width=96, height=64, frames_per_scene=(30,))
    paths = AppPaths(root=REPO_ROOT, train_date=tmp_path / "train_date", datasets=tmp_path / "datasets",
                     outputs=tmp_path / "outputs", models=tiny_model_dir.parent, configs=tmp_path / "configs")
    runner = JobRunner(paths.jobs)
    demo, url = launch(paths, language="en", port=free_port(7990), prevent_thread_lock=True, runner=runner)
    yield url, runner, paths, sorted(uploads.iterdir())
    for job in runner.jobs():
        if job.active:
            runner.stop(job.id)
            runner.stop(job.id)
    runner.close()
    demo.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"journey_{name}.png"), full_page=True)


def choose(page, label: str, option: str) -> None:
    """Pick an option of a Gradio dropdown by its visible label."""
    page.get_by_label(label, exact=True).first.click()
    page.get_by_role("option", name=option, exact=True).click()


def visible_button(page, name: str):
    """The button of that name on the open tab (every tab has its own Refresh)."""
    return page.get_by_role("button", name=name, exact=True).filter(visible=True).first


def type_into(page, label: str, text: str) -> None:
    """Type a value into a dropdown that accepts typed values (or a textbox) and leave it."""
    field = page.get_by_label(label, exact=True).first
    field.click()
    field.fill(text)
    field.press("Enter")
    field.blur()


def banner(page, place: str, state: str, timeout: float = RUN_S):
    """The outcome banner of a tab (pipeline, runs, export) once it shows `state`."""
    locator = page.locator(f"#{place}-banner .ltxt-banner[data-state='{state}']")
    locator.wait_for(timeout=timeout)
    return locator


def wait_for_two_lines(page, plot: str) -> None:
    """The loss and the smoothed line really drawn (a line the plot lost its colour for has no stroke)."""
    page.wait_for_function(
        "plot => [...document.querySelectorAll(`${plot} [aria-roledescription='line mark']`)]"
        ".filter(line => line.getAttribute('stroke')).length === 2", arg=plot, timeout=30_000)


def newest_run_dirs(paths: AppPaths, project: str = PROJECT) -> list[Path]:
    return sorted((folder for folder in paths.outputs.iterdir() if folder.name.startswith(project)),
                  key=lambda folder: folder.stat().st_mtime)


def data_files(status_file: Path) -> dict[str, bytes]:
    """The precomputed files a run trains on, by name, as bytes (its data must never change)."""
    status = json.loads(status_file.read_text(encoding="utf-8"))
    folder = Path(status["precomputed_dir"])
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*.pt"))}


def test_new_user_journey_from_upload_to_resume_export_reload_and_chinese(browser, gui, expect):
    url, runner, paths, uploads = gui
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(url)
    page.get_by_role("tab", name="One-click pipeline").wait_for(timeout=60_000)

    # 1. a new project from uploaded videos: a refused name first, then a good one
    page.get_by_label("Project name (trigger word)").fill("我的猫")
    page.locator("input[type=file]").first.set_input_files([str(path) for path in uploads])
    page.get_by_role("button", name="Create the project").click()
    page.locator("#project-created .ltxt-banner[data-state='refused']").wait_for(timeout=30_000)
    page.get_by_label("Project name (trigger word)").fill(PROJECT)
    page.get_by_role("button", name="Create the project").click()
    page.locator("#project-created .ltxt-banner[data-state='finished']").wait_for(timeout=30_000)
    assert sorted(p.name for p in (paths.train_date / PROJECT).iterdir()) == ["cat one.mp4", "猫2.mp4"]
    shot(page, "01_project_created")

    # 2. one click on the tiny models; the frames list offers every 8k+1 and marks what the clips allow
    type_into(page, "Resolution", "64x64")
    page.get_by_label("Frames", exact=True).first.click()
    assert page.get_by_role("option", name="17 ✓").count() == 1
    assert page.get_by_role("option", name="57 (1/2 clips long enough)", exact=True).count() == 1
    page.keyboard.press("Escape")
    type_into(page, "Frames", "17")
    choose(page, "Config template", "Tiny demo models (CPU is fine)")
    choose(page, "Captioner", "Demo captions (no model needed)")
    page.get_by_role("button", name="Start one-click training").click()
    finished = banner(page, "pipeline", "finished")
    text = finished.inner_text()
    assert "LoRA file:" in text and "ComfyUI file:" in text and "_comfy.safetensors" in text
    page.locator("#pipeline-videos video").first.wait_for(timeout=30_000)
    page.wait_for_function(  # the whole video is served and playable, not a cropped thumbnail
        "() => { const v = document.querySelector('#pipeline-videos video'); return v.readyState >= 1 && v.videoWidth > 0; }",
        timeout=30_000)
    assert "Step " in page.locator("#pipeline-videos figcaption").first.inner_text()
    assert "Overall 100%" in page.locator("#pipeline-progress").inner_text()
    wait_for_two_lines(page, "#pipeline-loss")
    log = page.locator("#pipeline-log").inner_text()
    assert "Pipeline" in log and '{"event"' not in log
    shot(page, "02_first_run_finished")
    first_run = newest_run_dirs(paths)[-1]
    assert re.search(re.escape(first_run.name), text)

    # 3. edit a caption on the Dataset tab
    page.get_by_role("tab", name="Dataset and captions").click()
    caption = page.get_by_label("Caption", exact=True)
    expect(caption).to_have_value(re.compile(f"^{PROJECT}\\b"), timeout=30_000)  # the project made on tab 1 is there
    caption.fill(f"{PROJECT} a grey cat walks across a red floor")
    page.get_by_role("button", name="Save caption").click()
    page.get_by_text("Saved to the .txt").wait_for(timeout=30_000)
    shot(page, "03_caption_edited")

    # 4. Start again: a new run, no refusal; a second Start while it runs is refused; Stop keeps a checkpoint
    page.get_by_role("tab", name="One-click pipeline").click()
    page.get_by_label("Training steps (0: the template's)").fill("200")
    page.get_by_role("button", name="Start one-click training").click()
    page.locator("#pipeline-progress tr[data-stage='train'][data-state='running']").wait_for(timeout=RUN_S)
    page.get_by_role("button", name="Start one-click training").click()
    page.locator("#pipeline-message .ltxt-banner[data-state='refused']").wait_for(timeout=30_000)
    assert "already queued or running" in page.locator("#pipeline-message").inner_text()
    shot(page, "04_duplicate_refused")
    page.wait_for_function(
        "() => /\\d+ \\/ 200/.test(document.querySelector(\"#pipeline-progress tr[data-stage='train']\").innerText)",
        timeout=RUN_S)
    page.get_by_role("button", name="Stop (saves a checkpoint)").click()
    stopped = banner(page, "pipeline", "stopped").inner_text()
    assert "Checkpoint:" in stopped and "Runs tab" in stopped
    shot(page, "05_second_run_stopped")
    stopped_run = newest_run_dirs(paths)[-1]
    assert stopped_run != first_run
    stopped_data = data_files(stopped_run / "pipeline_status.json")

    # 5. a run at a second resolution, the template's steps again
    type_into(page, "Resolution", "96x64")
    page.get_by_label("Training steps (0: the template's)").fill("0")
    page.get_by_role("button", name="Start one-click training").click()
    page.locator("#pipeline-banner .ltxt-banner[data-state='running']").wait_for(timeout=60_000)
    banner(page, "pipeline", "finished")
    assert "96x64" in page.locator("#pipeline-banner").inner_text()
    shot(page, "06_second_resolution_finished")

    # 6. resume the stopped run from the Runs tab: it trains on its own data, unchanged
    page.get_by_role("tab", name="Runs").click()
    visible_button(page, "Refresh").click()
    choose(page, "Choose a run", stopped_run.name)
    page.get_by_role("button", name="Resume training").click()
    resumed = banner(page, "runs", "finished").inner_text()
    wait_for_two_lines(page, "#runs-loss")  # the resumed run's whole curve
    assert "ComfyUI file:" in resumed and stopped_run.name in resumed
    assert data_files(stopped_run / "pipeline_status.json") == stopped_data
    shot(page, "07_resumed_run_finished")

    # 7. export on the Export tab
    page.get_by_role("tab", name="ComfyUI export").click()
    visible_button(page, "Refresh").click()
    choose(page, "A LoRA file under outputs/", f"{first_run.name}/lora_weights.safetensors")
    page.get_by_role("button", name="Convert to ComfyUI format").click()
    exported = banner(page, "export", "finished").inner_text()
    assert "Output file:" in exported and "_comfy.safetensors" in exported
    shot(page, "08_exported")

    # 8. reload: the forms keep the user's values, the banners their outcomes
    page.reload()
    page.get_by_role("tab", name="One-click pipeline").wait_for(timeout=60_000)
    expect(page.get_by_label("Resolution", exact=True).first).to_have_value("96x64", timeout=30_000)
    assert page.get_by_label("Frames", exact=True).first.input_value().startswith("17")
    assert page.get_by_label("Config template", exact=True).first.input_value() == "Tiny demo models (CPU is fine)"
    assert page.get_by_label("Captioner", exact=True).first.input_value() == "Demo captions (no model needed)"
    assert PROJECT in page.get_by_label("Project (a folder in train_date; its name is the trigger word)").input_value()
    banner(page, "pipeline", "finished", timeout=30_000)
    shot(page, "09_reloaded")

    # 9. 中文: the outcomes in Chinese where they were started
    page.get_by_label("中文").check()
    page.get_by_role("tab", name="一键训练流水线").wait_for(timeout=30_000)
    page.wait_for_function("() => document.querySelector('#pipeline-banner').innerText.includes('已完成')", timeout=30_000)
    zh_banner = page.locator("#pipeline-banner").inner_text()
    assert "ComfyUI 文件" in zh_banner and "分场景+标注视频+预处理+训练" in zh_banner  # the job's title too
    wait_for_two_lines(page, "#pipeline-loss")  # still drawn after the switch (the series keep their names)
    shot(page, "10_zh_pipeline")
    page.get_by_role("tab", name="训练监控").click()
    page.wait_for_function("() => document.querySelector('#runs-banner').innerText.includes('已完成')", timeout=30_000)
    wait_for_two_lines(page, "#runs-loss")  # the run its Resume continued is chosen again after the reload
    shot(page, "11_zh_runs")
    page.get_by_role("tab", name="转换为ComfyUI格式").click()
    page.wait_for_function("() => document.querySelector('#export-banner').innerText.includes('输出文件')", timeout=30_000)
    shot(page, "12_zh_export")
    assert not [job for job in runner.jobs() if job.active]


# ---- LTX-2 and IC-LoRA on the Pipeline tab --------------------------------------------------------


@pytest.fixture
def ltx2_gui(tmp_path, tiny_model_dir):
    """A server whose models/ holds the tiny LTX-2 and 0.9 models, and a project APT whose clip has sound,
    already split into scenes (datasets/APT/scenes)."""
    from ltxtrainer.models.tiny_ltx2 import save_tiny_ltx2_model
    from tests.test_ltx2_training import write_clip_with_sound

    models = tmp_path / "模型 models"
    save_tiny_ltx2_model(models / "tiny-ltx2")
    shutil.copytree(tiny_model_dir, models / "tiny-ltxv")
    write_clip_with_sound(tmp_path / "train_date" / "APT" / "clip0.mp4", 0, 330.0)
    write_clip_with_sound(tmp_path / "datasets" / "APT" / "scenes" / "clip0-Scene-001.mp4", 0, 330.0)
    paths = AppPaths(root=REPO_ROOT, train_date=tmp_path / "train_date", datasets=tmp_path / "datasets",
                     outputs=tmp_path / "outputs", models=models, configs=tmp_path / "configs")
    runner = JobRunner(paths.jobs)
    demo, url = launch(paths, language="en", port=free_port(8060), prevent_thread_lock=True, runner=runner)
    yield url, runner, paths
    for job in runner.jobs():
        if job.active:
            runner.stop(job.id)
            runner.stop(job.id)
    runner.close()
    demo.close()


def streams_of(data: bytes, folder: Path) -> list[str]:
    """The stream types (video, audio) of an mp4 the page was served."""
    import av

    path = folder / "served.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        return [stream.type for stream in container.streams]


def test_an_ltx2_folder_offers_sound_and_lora_targets_and_its_samples_play_with_sound(browser, ltx2_gui, expect, tmp_path):
    url, runner, paths = ltx2_gui
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(url)
    page.get_by_role("tab", name="One-click pipeline").wait_for(timeout=60_000)

    # an LTX-2 folder: its options and its template; a 0.9 folder: neither
    template = page.get_by_label("Config template", exact=True).first
    expect(page.get_by_label("video only")).to_be_hidden(timeout=30_000)  # the page starts on the tiny 0.9 model
    choose(page, "Model folder (in models/)", "tiny-ltx2 (LTX-2)")
    expect(page.get_by_label("video only")).to_be_visible(timeout=30_000)
    expect(template).to_have_value("LTX-2 LoRA with sound (24 GB cards)")
    expect(page.get_by_label("audio attention", exact=True)).to_be_checked()  # the template's targets
    assert not page.get_by_label("feed-forward", exact=True).is_checked()
    choose(page, "Model folder (in models/)", "tiny-ltxv (LTX-Video)")
    expect(template).to_have_value("Tiny demo models (CPU is fine)", timeout=30_000)
    expect(page.get_by_label("video only")).to_be_hidden()
    template.click()
    assert page.get_by_role("option", name="LTX-2 LoRA with sound (24 GB cards)").count() == 0
    page.keyboard.press("Escape")
    choose(page, "Model folder (in models/)", "tiny-ltx2 (LTX-2)")
    expect(template).to_have_value("LTX-2 LoRA with sound (24 GB cards)", timeout=30_000)
    shot(page, "ltx2_01_options")

    # a run with sound: its validation video is served with its sound track and plays unmuted
    type_into(page, "Resolution", "64x64")
    type_into(page, "Frames", "17")
    choose(page, "Captioner", "Demo captions (no model needed)")
    page.get_by_label("Split scenes", exact=True).uncheck()  # the clips are already split
    page.get_by_label("Training steps (0: the template's)").fill("2")
    page.get_by_label("with sound (video + sound)").check()
    page.get_by_role("button", name="Start one-click training").click()
    banner(page, "pipeline", "finished")
    video = page.locator("#pipeline-videos video").first
    video.wait_for(timeout=30_000)
    assert video.evaluate("v => v.muted") is False
    served = page.request.get(urljoin(page.url, video.get_attribute("src")))
    assert served.ok and streams_of(served.body(), tmp_path) == ["video", "audio"]
    with_sound = newest_run_dirs(paths, "APT")[-1]
    assert yaml.safe_load((with_sound / "training_config.yaml").read_text(encoding="utf-8"))["model"]["with_audio"] is True
    shot(page, "ltx2_02_with_sound")

    # video only, feed-forward too: the run config says so (the run is stopped once training starts)
    page.get_by_label("video only").check()
    page.get_by_label("feed-forward", exact=True).check()
    page.get_by_label("Training steps (0: the template's)").fill("200")
    page.get_by_role("button", name="Start one-click training").click()
    page.locator("#pipeline-progress tr[data-stage='train'][data-state='running']").wait_for(timeout=RUN_S)
    video_only = newest_run_dirs(paths, "APT")[-1]
    config = yaml.safe_load((video_only / "training_config.yaml").read_text(encoding="utf-8"))
    assert video_only != with_sound and config["model"]["with_audio"] is False
    assert "ff.net.2" in config["lora"]["target_modules"] and "audio_attn1.to_q" in config["lora"]["target_modules"]
    page.get_by_role("button", name="Stop (saves a checkpoint)").click()
    banner(page, "pipeline", "stopped")

    # 中文, and a reload keeps the folder and its options
    page.get_by_label("中文").check()
    page.get_by_role("tab", name="一键训练流水线").wait_for(timeout=30_000)
    expect(page.get_by_label("仅视频")).to_be_checked(timeout=30_000)
    expect(page.get_by_label("前馈层", exact=True)).to_be_checked()
    page.reload()
    expect(page.get_by_label("仅视频")).to_be_visible(timeout=60_000)
    expect(page.get_by_label("仅视频")).to_be_checked()
    expect(page.get_by_label("配置模板", exact=True).first).to_have_value("LTX-2 有声 LoRA（24GB 显卡）")
    shot(page, "ltx2_03_zh_reloaded")


@pytest.fixture
def ic_gui(tmp_path, tiny_model_dir):
    """A server on the tiny 0.9 model with a project ICP of one clip, not split yet."""
    make_clip(tmp_path / "train_date" / "ICP" / "walk.mp4", width=96, height=64, frames_per_scene=(30,))
    models = tmp_path / "models"
    shutil.copytree(tiny_model_dir, models / "tiny-ltxv")
    paths = AppPaths(root=REPO_ROOT, train_date=tmp_path / "train_date", datasets=tmp_path / "datasets",
                     outputs=tmp_path / "outputs", models=models, configs=tmp_path / "configs")
    runner = JobRunner(paths.jobs)
    demo, url = launch(paths, language="en", port=free_port(8070), prevent_thread_lock=True, runner=runner)
    yield url, runner, paths
    for job in runner.jobs():
        if job.active:
            runner.stop(job.id)
            runner.stop(job.id)
    runner.close()
    demo.close()


def test_an_ic_lora_run_from_the_pipeline_tab_computes_references_and_the_dataset_tab_shows_them(browser, ic_gui, expect):
    url, runner, paths = ic_gui
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(url)
    page.get_by_role("tab", name="One-click pipeline").wait_for(timeout=60_000)

    # the reference fields appear with the IC choice; the downscale is LTX-2's, so not for this 0.9 model
    expect(page.get_by_label("Reference kind", exact=True)).to_be_hidden(timeout=30_000)
    page.get_by_label("reference video / IC-LoRA").check()
    expect(page.get_by_label("Reference kind", exact=True).first).to_be_visible(timeout=30_000)
    choose(page, "Reference kind", "my own folder of references")
    expect(page.get_by_label("Reference folder")).to_be_visible(timeout=30_000)
    choose(page, "Reference kind", "Canny edges")
    expect(page.get_by_label("Reference folder")).to_be_hidden(timeout=30_000)
    expect(page.get_by_label("1/2", exact=True)).to_be_hidden()

    type_into(page, "Resolution", "64x64")
    type_into(page, "Frames", "9")
    choose(page, "Captioner", "Demo captions (no model needed)")
    page.get_by_label("Training steps (0: the template's)").fill("2")
    page.get_by_role("button", name="Start one-click training").click()
    banner(page, "pipeline", "finished")
    job = runner.jobs()[0]
    flags = job.argv[job.argv.index("--conditioning"):]
    assert flags == ["--conditioning", "reference_video", "--reference-kind", "canny"]
    reference_row = page.locator("#pipeline-progress tr[data-stage='reference'][data-state='done']")
    assert reference_row.inner_text().startswith("Reference videos")
    run_dir = newest_run_dirs(paths, "ICP")[-1]
    assert yaml.safe_load((run_dir / "training_config.yaml").read_text(encoding="utf-8"))["conditioning"]["mode"] == \
        "reference_video"
    shot(page, "ic_01_finished")

    # the Dataset tab plays each clip's reference beside it
    page.get_by_role("tab", name="Dataset and captions").click()
    page.locator("#dataset-reference video").wait_for(timeout=30_000)
    assert "_reference.mp4" in page.locator("#dataset-reference video").get_attribute("src")
    shot(page, "ic_02_dataset_reference")

    # 中文: the stage and the reference in Chinese; a reload keeps the IC choice
    page.get_by_label("中文").check()
    page.get_by_role("tab", name="一键训练流水线").click()
    page.wait_for_function("() => document.querySelector(\"#pipeline-progress tr[data-stage='reference']\")"
                           ".innerText.startsWith('生成参考视频')", timeout=30_000)
    page.reload()
    expect(page.get_by_label("参考视频 / IC-LoRA")).to_be_checked(timeout=60_000)
    expect(page.get_by_label("参考视频类型", exact=True).first).to_have_value("Canny 边缘")
    page.get_by_role("tab", name="数据集与标注").click()
    expect(page.get_by_text("参考视频（IC-LoRA）").first).to_be_visible(timeout=30_000)
    shot(page, "ic_03_zh")
