"""The GUI in a real headless browser (Playwright driving Debian's chromium).

Opens every tab, switches the language, starts a tiny run and sees its progress, and saves a
screenshot of each tab to test-artifacts/ (Chinese labels render only with fonts-noto-cjk).
Deselect with `-m "not browser"`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from ltxtrainer.synthetic import make_clip
from ltxtrainer.ui.app import free_port, launch
from ltxtrainer.ui.jobs import JobRunner
from ltxtrainer.ui.settings import remember
from ltxtrainer.ui.workspace import AppPaths

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
TABS = ("pipeline", "advanced", "dataset", "runs", "export", "environment")

pytestmark = pytest.mark.browser


@pytest.fixture
def browser_page():
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not CHROMIUM.is_file():
        pytest.skip("no /usr/bin/chromium: install it with `apt-get install chromium fonts-noto-cjk`")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield page
        browser.close()


@pytest.fixture
def gui(tmp_path, tiny_model_dir):
    project = tmp_path / "train_date" / "APT"
    project.mkdir(parents=True)
    make_clip(project / "clip.mp4", width=96, height=64, frames_per_scene=(30, 30))
    (tmp_path / "configs").mkdir()
    shutil.copy(REPO_ROOT / "configs" / "tiny_demo.yaml", tmp_path / "configs")
    paths = AppPaths(root=REPO_ROOT, train_date=tmp_path / "train_date", datasets=tmp_path / "datasets",
                     outputs=tmp_path / "outputs", models=tiny_model_dir.parent, configs=tmp_path / "configs")
    # The form opens with the remembered settings: the tiny run needs no dropdown clicking.
    remember(paths.settings_file, project="APT", resolution="64x64", frames=25, template="tiny", captioner="demo",
             steps=["split", "caption", "preprocess", "train"])
    runner = JobRunner(paths.jobs)
    demo, url = launch(paths, language="zh", port=free_port(7990), prevent_thread_lock=True, runner=runner)
    yield url, runner
    for job in runner.jobs():
        if job.active:
            runner.stop(job.id)
            runner.stop(job.id)
    runner.close()
    demo.close()


def test_every_tab_opens_language_switches_and_a_tiny_run_shows_progress(browser_page, gui):
    url, runner = gui
    page = browser_page
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(url)
    page.get_by_role("tab", name="一键训练流水线").wait_for(timeout=60_000)
    chinese_tabs = ("一键训练流水线", "高级训练参数", "数据集与标注", "训练监控", "转换为ComfyUI格式", "环境与模型")
    for name, label in zip(TABS, chinese_tabs, strict=True):
        page.get_by_role("tab", name=label).click()
        time.sleep(0.5)
        page.screenshot(path=str(ARTIFACTS / f"tab_{name}_zh.png"), full_page=False)

    page.get_by_label("English").check()
    page.get_by_role("tab", name="Runs").wait_for(timeout=20_000)
    page.get_by_role("tab", name="One-click pipeline").click()
    page.get_by_role("button", name="Start one-click training").wait_for()
    page.get_by_label("中文").check()
    page.get_by_role("tab", name="一键训练流水线").click()

    page.get_by_role("button", name="开始一键训练").click()
    page.get_by_text("运行中").first.wait_for(timeout=60_000)  # the monitor follows the job
    page.get_by_text("阶段").first.wait_for(timeout=120_000)  # a stage's progress line
    page.screenshot(path=str(ARTIFACTS / "tab_pipeline_running_zh.png"), full_page=True)
    job = runner.current("pipeline")
    assert job is not None and job.active
    page.get_by_role("button", name="停止（保存检查点）").click()
    ended = runner.wait(job.id, timeout=120)
    assert ended.status in ("stopped", "finished", "failed", "killed")
    assert ended.stop_requests >= 1
