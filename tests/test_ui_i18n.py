"""中文 everywhere: the real app in a real browser, every tab's rendered text scanned for English.

The app is launched in 中文 on a workspace a user could have (a project with a clip, the tiny
model, a broken model download, a precomputed set), every tab is opened and every accordion
expanded, and the page's visible text is searched for the words of our own English strings and
for raw strings-table keys. Words that our Chinese strings use too (GPU, LoRA, ComfyUI, ...) and
what the user or a library wrote (file paths, YAML keys, model names, gradio's own buttons) are
not ours to translate. The strings table is also checked directly: every key in both languages
with the same placeholders, every Environment problem code with its strings.
"""

from __future__ import annotations

import re
import shutil
import string
from pathlib import Path

import pytest

from ltxtrainer import env_check
from ltxtrainer.models.tiny_ltx2 import save_tiny_ltx2_model
from ltxtrainer.synthetic import make_clip
from ltxtrainer.ui.app import free_port, launch
from ltxtrainer.ui.config_form import form_fields
from ltxtrainer.ui.i18n import FIELDS, SECTIONS, STRINGS
from ltxtrainer.ui.jobs import JobRunner
from ltxtrainer.ui.settings import remember
from ltxtrainer.ui.workspace import AppPaths

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
TABS = {"pipeline": "一键训练流水线", "advanced": "高级训练参数", "dataset": "数据集与标注", "runs": "训练监控",
        "export": "转换为ComfyUI格式", "environment": "环境与模型"}
# gradio's own words on our page (third-party text may stay English).
GRADIO_WORDS = {"use", "via", "api", "built", "with", "gradio", "settings"}  # its footer


def english_vocabulary() -> set[str]:
    """Words (4+ letters) of our English strings that no Chinese string uses as well."""
    words = {word.lower() for _, en in STRINGS.values() for word in re.findall(r"[A-Za-z]{4,}", en)}
    words |= {word.lower() for _, en, _, en_hint in FIELDS.values() for word in re.findall(r"[A-Za-z]{4,}", en + " " + en_hint)}
    words |= {word.lower() for _, en in SECTIONS.values() for word in re.findall(r"[A-Za-z]{4,}", en)}
    chinese = " ".join([zh for zh, _ in STRINGS.values()] + [zh + " " + hint for zh, _, hint, _ in FIELDS.values()]
                       + [zh for zh, _ in SECTIONS.values()])
    shared = {word.lower() for word in re.findall(r"[A-Za-z]{4,}", chinese)}
    return words - shared - GRADIO_WORDS


def without_gradio_footer(text: str) -> str:
    """The page text above gradio's own footer ("Runs · Use via API · Built with Gradio · Settings"):
    its "Runs" link is gradio's, but "runs" is also one of our words, so the footer is cut, not excused."""
    cut = text.rfind("Use via API")
    if cut < 0:
        return text
    return re.sub(r"(?:\n\s*Runs\s*)?\n\s*·\s*$", "", text[:cut])


def english_on_page(text: str, vocabulary: set[str]) -> list[str]:
    """Our English words in `text`, skipping identifiers, paths, keys and numbers (what users or
    libraries wrote: YAML keys, file paths, model and file names)."""
    found = []
    text = without_gradio_footer(text)
    # gradio's own progress tracker on a component whose event is still running ("queue: 1/1 | 0.2/0.2s",
    # "processing | 0.3s"): third-party text that a loaded machine shows for longer
    text = re.sub(r"\b(?:queue: \d+/\d+|processing) \| [\d.]+(?:/[\d.]+)?s", "", text)
    text = re.sub(r"YAML[：:]\s*\S+", "", text)  # a field's key in small print is the YAML's, not prose
    for token in re.split(r"[\s，。、：；（）“”！？·|—…]+", text):
        token = token.strip(string.punctuation.replace("_", "").replace(".", "").replace("/", ""))
        if not token or re.search(r"[./\\_=:\d@<>-]", token):
            continue
        found += [word for word in re.findall(r"[A-Za-z]+", token) if word.lower() in vocabulary]
    return found


def raw_keys_on_page(text: str) -> list[str]:
    """Strings-table keys shown instead of their text (e.g. "common.complete"), and config fields
    labelled with their schema path (the path belongs in the small print after "YAML：" only)."""
    prefixes = {key.split(".")[0] for key in STRINGS}
    keys = [key for key in re.findall(r"\b([a-z]+(?:\.[a-z_0-9]+)+)\b", text) if key.split(".")[0] in prefixes]
    prose = re.sub(r"YAML[：:]\s*\S+", "", text)
    dotted = [field.path for field in form_fields() if "." in field.path]
    return keys + [path for path in dotted if re.search(rf"(?<![\w.]){re.escape(path)}(?![\w.])", prose)]


def test_every_key_has_both_languages_with_the_same_placeholders():
    formatter = string.Formatter()
    for key, (zh, en) in STRINGS.items():
        assert zh and en, key
        fields = [{name for _, name, _, _ in formatter.parse(text) if name} for text in (zh, en)]
        assert fields[0] == fields[1], key
    assert {field.path for field in form_fields()} == set(FIELDS)
    assert all(zh and en for zh, en, _, _ in FIELDS.values())


def test_every_environment_problem_has_its_strings(tmp_path):
    """Each problem code env_check can raise has a message and a fix in both languages."""
    import inspect

    codes = set(re.findall(r'code="([a-z_0-9]+)"', inspect.getsource(env_check.find_problems)))
    assert len(codes) >= 10
    for code in codes:
        assert f"envp.{code}" in STRINGS and f"envp.{code}.fix" in STRINGS, code


@pytest.fixture
def workspace(tmp_path, tiny_model_dir) -> AppPaths:
    project = tmp_path / "train_date" / "APT"
    project.mkdir(parents=True)
    make_clip(project / "clip.mp4", width=96, height=64, frames_per_scene=(30,))
    (tmp_path / "configs").mkdir()
    shutil.copy(REPO_ROOT / "configs" / "tiny_demo.yaml", tmp_path / "configs")
    models = tmp_path / "models"
    shutil.copytree(tiny_model_dir, models / "tiny-ltxv")
    broken = Path(shutil.copytree(tiny_model_dir, models / "LTX-Video-0.9.7-diffusers"))
    (broken / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    shutil.rmtree(broken / "tokenizer")
    for part in ("latents", "conditions"):
        (tmp_path / "datasets" / "APT" / "scenes" / ".precomputed" / "64x64x9-abc" / part).mkdir(parents=True)
    paths = AppPaths(root=REPO_ROOT, train_date=tmp_path / "train_date", datasets=tmp_path / "datasets",
                     outputs=tmp_path / "outputs", models=models, configs=tmp_path / "configs")
    # An LTX-2 folder chosen for an IC-LoRA from one's own references: every optional Pipeline field is shown.
    save_tiny_ltx2_model(models / "tiny-ltx2")
    remember(paths.settings_file, model="tiny-ltx2", conditioning="reference_video", reference_kind="folder")
    return paths


@pytest.mark.browser
def test_every_tab_in_chinese_shows_no_english_of_ours_and_no_raw_key(workspace):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not CHROMIUM.is_file():
        pytest.skip("no /usr/bin/chromium: install it with `apt-get install chromium fonts-noto-cjk`")
    runner = JobRunner(workspace.jobs)
    demo, url = launch(workspace, language="zh", port=free_port(8030), prevent_thread_lock=True, runner=runner)
    vocabulary = english_vocabulary()
    ARTIFACTS.mkdir(exist_ok=True)
    texts: dict[str, str] = {}
    try:
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.get_by_text("tiny-ltxv：完整").first.wait_for(timeout=120_000)  # the header is filled in
            for tab, label in TABS.items():
                page.get_by_role("tab", name=label).click()
                page.wait_for_timeout(500)
                if tab == "advanced":
                    closed = page.locator("button.label-wrap:not(.open):visible")
                    for _ in range(20):  # each click opens one section and takes it off the list
                        if closed.count() == 0:
                            break
                        closed.first.click()
                        page.wait_for_timeout(200)
                if tab == "environment":  # the background check of this workspace fills the report in
                    page.wait_for_function("() => document.body.innerText.includes('需要处理的问题')",
                                           timeout=120_000)
                page.wait_for_timeout(300)
                texts[tab] = page.inner_text("body")
                (ARTIFACTS / f"i18n_zh_{tab}.txt").write_text(texts[tab], encoding="utf-8")
                page.screenshot(path=str(ARTIFACTS / f"i18n_zh_{tab}.png"), full_page=True)
            # The header and the Environment report follow the switch to English without a reload.
            page.get_by_label("English").check()
            page.get_by_text("tiny-ltxv: complete").first.wait_for(timeout=30_000)
            page.get_by_text("Things to fix").first.wait_for(timeout=30_000)
            page.get_by_role("tab", name="One-click pipeline").click()
            memory_line = re.compile(r"No NVIDIA GPU: the tiny model|Expected peak memory")  # with or without a GPU
            page.get_by_text(memory_line).first.wait_for(timeout=30_000)
            english = page.inner_text("body")
            page.screenshot(path=str(ARTIFACTS / "i18n_en_pipeline.png"), full_page=True)
            browser.close()
    finally:
        runner.close()
        demo.close()
    problems = {tab: (sorted(set(english_on_page(text, vocabulary))), raw_keys_on_page(text))
                for tab, text in texts.items()}
    assert all(not words and not keys for words, keys in problems.values()), problems
    assert "LTX-Video-0.9.7-diffusers" in texts["environment"] and "缺少" in texts["environment"]
    assert "tiny-ltx2：完整（LTX-2 微型测试模型）" in texts["pipeline"]  # the header names the family
    assert all(label in texts["pipeline"] for label in ("仅视频", "音视频交叉注意力", "参考视频文件夹", "1/4"))
    assert "需要处理的问题" not in english and "incomplete" in english


def test_every_model_folder_problem_is_said_in_chinese(tiny_model_dir, tmp_path):
    """models.folder's problem lines, as check_model_folder writes them for broken downloads."""
    from ltxtrainer.models.folder import check_model_folder
    from ltxtrainer.ui.tab_environment import model_problem_text

    broken = Path(shutil.copytree(tiny_model_dir, tmp_path / "模型 下载"))
    (broken / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    shutil.rmtree(broken / "tokenizer")
    (broken / "scheduler" / "scheduler_config.json").write_text("", encoding="utf-8")
    (broken / "transformer" / "config.json").write_text("{broken", encoding="utf-8")
    for weights in (broken / "text_encoder").glob("*.safetensors"):
        weights.rename(weights.with_suffix(".bin"))
    problems = check_model_folder(broken).problems + check_model_folder(tmp_path / "nowhere").problems
    assert len(problems) >= 6
    for problem in problems:
        text = model_problem_text(problem, "zh")
        assert not text.startswith("问题："), problem  # said by a pattern, not passed through
        assert not english_on_page(text, english_vocabulary()), text
