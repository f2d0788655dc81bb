"""The memory line against the card, the GUI process without torch, and the Advanced tab's form.

The card is whatever `nvidia-smi` on PATH reports; tests put a stand-in `nvidia-smi` (a shell
script printing what the real one prints for a 24 GB or 80 GB card) first on PATH, so the GUI's
own query and parsing run unchanged.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from ltxtrainer.ui import memory_line
from ltxtrainer.ui.workspace import AppPaths

REPO_ROOT = Path(__file__).resolve().parents[1]
RTX_4090 = "0, NVIDIA GeForce RTX 4090, 24564, 23012"
H100 = "0, NVIDIA H100 80GB HBM3, 81559, 81000"

needs_posix_shell = pytest.mark.skipif(os.name == "nt", reason="the stand-in nvidia-smi is a shell script")


def fake_nvidia_smi(folder: Path, query_line: str | None) -> str:
    """A folder holding an `nvidia-smi` that answers the GPU query with `query_line` (None: no GPU
    on PATH at all), returned as the PATH to use."""
    folder.mkdir(parents=True, exist_ok=True)
    if query_line is not None:
        script = folder / "nvidia-smi"
        script.write_text(f"#!/bin/sh\necho '{query_line}'\n", encoding="utf-8")
        script.chmod(0o755)
    # keep the folders of the shell and python, none with an nvidia-smi of its own
    return os.pathsep.join([str(folder), "/usr/bin", "/bin", str(Path(sys.executable).parent)])


@pytest.fixture
def card(tmp_path, monkeypatch):
    """Set the machine's card for this test: card("4090"), card("h100") or card(None)."""

    if os.name == "nt":
        pytest.skip("the stand-in nvidia-smi is a shell script")

    def use(line: str | None):
        monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin", line))
        memory_line.detect_card.cache_clear()
        return memory_line.detect_card()

    yield use
    memory_line.detect_card.cache_clear()


@pytest.fixture
def paths(tmp_path) -> AppPaths:
    """A GUI without model folders: templates are estimated from the built-in shapes."""
    return AppPaths(root=REPO_ROOT, train_date=tmp_path / "train_date", datasets=tmp_path / "datasets",
                    outputs=tmp_path / "outputs", models=tmp_path / "models", configs=REPO_ROOT / "configs")


def test_on_a_24_gb_card_the_13b_template_does_not_fit_and_the_line_says_what_does(card, paths):
    detected = card(RTX_4090)
    assert detected.name == "NVIDIA GeForce RTX 4090"
    assert detected.total_bytes == pytest.approx(24564 * 2**20, rel=0.005)  # nvidia-smi's MiB, to 0.1 GB
    line = memory_line.memory_text(paths, "13b", "768x512", 49, "zh", detected)
    assert line.startswith("❌") and "超出 NVIDIA GeForce RTX 4090（24.0 GB）" in line
    assert "改为：使用 int8-quanto 量化" in line
    english = memory_line.memory_text(paths, "13b", "768x512", 49, "en", detected)
    assert "will not fit the NVIDIA GeForce RTX 4090 (24.0 GB)" in english and "To fit: use int8-quanto" in english
    assert memory_line.memory_text(paths, "13b-int8", "768x512", 49, "zh", detected).startswith("✅")
    assert memory_line.suggested_template(paths, detected) == "13b-int8"


def test_the_tiny_template_uses_the_tiny_shapes_and_grows_with_the_size(card, paths):
    """Without the tiny model folder the tiny template once was estimated with 13B shapes (108.8 GB)."""
    assert card(None) is None
    small = memory_line.memory_estimate(paths, "tiny", 64, 64, 9, None)
    large = memory_line.memory_estimate(paths, "tiny", 1280, 736, 121, None)
    assert small["verdict"] == large["verdict"] == "cpu"
    assert small["total_bytes"] < 50 * 2**20 < large["total_bytes"] < 2**30
    assert memory_line.memory_text(paths, "tiny", "64x64", 9, "zh", None).startswith("未检测到 NVIDIA GPU：将在 CPU 上")


@pytest.mark.parametrize(("line", "template"), [(None, "tiny"), (RTX_4090, "13b-int8"), (H100, "13b")])
def test_the_page_starts_with_the_biggest_template_that_fits_the_card(card, paths, line, template):
    assert memory_line.suggested_template(paths, card(line)) == template


def test_without_a_gpu_a_real_model_template_is_refused_plainly(card, paths):
    assert card(None) is None
    line = memory_line.memory_text(paths, "13b-int8", "768x512", 49, "zh", None)
    assert line.startswith("❌ 未检测到 NVIDIA GPU") and "微型演示模型" in line


def test_a_mistyped_size_is_named_in_the_language(paths):
    assert "“768x50”" in memory_line.memory_text(paths, "2b", "768x50", 49, "zh", None)


@needs_posix_shell
def test_building_and_using_the_gui_never_imports_torch(tmp_path, tiny_model_dir):
    """The GUI process stays free of torch, peft and diffusers: build the app on a 24 GB card,
    ask every template's memory line and the header, then look at sys.modules."""
    code = f"""
import json, sys
from pathlib import Path
from ltxtrainer.ui.app import build_app
from ltxtrainer.ui.jobs import JobRunner
from ltxtrainer.ui.workspace import AppPaths
from ltxtrainer.ui import memory_line, tab_environment
from ltxtrainer.pipeline import TEMPLATES
root = Path({str(tmp_path)!r})
paths = AppPaths(root=Path({str(REPO_ROOT)!r}), train_date=root / "train_date", datasets=root / "datasets",
                 outputs=root / "outputs", models=Path({str(tiny_model_dir.parent)!r}),
                 configs=Path({str(REPO_ROOT / "configs")!r}))
demo = build_app(paths, JobRunner(paths.jobs), "zh")
card = memory_line.detect_card()
lines = [memory_line.memory_text(paths, name, "768x512", 49, "zh", card) for name in TEMPLATES]
header = tab_environment.header_text(paths, "zh")
print(json.dumps({{"modules": [m for m in ("torch", "peft", "diffusers", "transformers") if m in sys.modules],
                  "lines": lines, "header": header}}))
"""
    environment = {**os.environ, "PATH": fake_nvidia_smi(tmp_path / "bin", RTX_4090)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8",
                            env=environment, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["modules"] == []
    assert all("NVIDIA GeForce RTX 4090" in line for line in report["lines"])
    assert "NVIDIA GeForce RTX 4090" in report["header"]


# ---- the Advanced tab ----------------------------------------------------------------------------


def test_every_field_has_a_short_label_in_both_languages_and_a_complete_hint():
    """Labels were raw schema paths, cut off ("optimization.gradient_accu"), and a field with only a
    lower bound showed "范围 1 – 。"."""
    from ltxtrainer.ui.config_form import form_fields
    from ltxtrainer.ui.i18n import field_label
    from ltxtrainer.ui.tab_advanced import hint

    for field in form_fields():
        for lang in ("zh", "en"):
            label, text = field_label(field.path, lang), hint(field, lang)
            assert label and label != field.path and len(label) <= 24, (field.path, label)
            key = field.path.removesuffix(".enabled") if field.kind == "section" else field.path
            assert text.endswith(f"YAML{'：' if lang == 'zh' else ': '}{key}"), text
            assert not re.search(r"–\s*(·|。|$)", text) and not re.search(r"(^|·)\s*–", text), text
    fields = {field.path: field for field in form_fields()}
    assert "范围 1 – 1024" in hint(fields["lora.rank"], "zh")
    assert "不小于 0" in hint(fields["optimization.max_grad_norm"], "zh")
    assert "at least 1" in hint(fields["checkpoints.interval"], "en")


def test_data_choices_are_every_precomputed_set_in_both_layouts(tmp_path, paths):
    def precomputed(*parts: str) -> Path:
        folder = paths.datasets.joinpath(*parts)
        for part in ("latents", "conditions"):
            (folder / part).mkdir(parents=True)
        return folder

    old_layout = precomputed("old project", "scenes", ".precomputed")
    keyed = precomputed("新项目", "scenes", ".precomputed", "768x512x49-1a2b")
    half = paths.datasets / "新项目" / "scenes" / ".precomputed" / "64x64x9-3c4d" / "latents"
    half.mkdir(parents=True)  # preprocessing stopped before the text embeddings: not a set
    from ltxtrainer.ui.tab_advanced import data_choices

    assert data_choices(paths) == [str(old_layout), str(keyed)]


@pytest.mark.parametrize(("line", "source"), [(None, "tiny_demo.yaml"),
                                              (RTX_4090, "ltx_13b_lora_int8-quanto_template.yaml")])
def test_the_advanced_form_starts_from_the_template_that_fits_the_card(card, paths, line, source):
    from ltxtrainer.ui import actions
    from ltxtrainer.ui.tab_advanced import default_source

    card(line)
    assert default_source(paths, actions.list_configs(paths)) == source


def test_the_advanced_form_shows_its_memory_against_the_card(card, paths):
    from ltxtrainer.config import load_config
    from ltxtrainer.ui.config_form import form_fields, values_from_config
    from ltxtrainer.ui.tab_advanced import form_memory_text

    card(RTX_4090)
    values = values_from_config(load_config(REPO_ROOT / "configs" / "ltx_13b_lora_template.yaml"))
    line = form_memory_text(paths, values, "zh")
    assert line.startswith("按 768x512x49：❌") and "超出 NVIDIA GeForce RTX 4090" in line
    values[[field.path for field in form_fields()].index("acceleration.quantization")] = "int8-quanto"
    assert "✅" in form_memory_text(paths, values, "zh")
    values[[field.path for field in form_fields()].index("lora.rank")] = 0
    assert form_memory_text(paths, values, "en").startswith("No memory estimate while a value is invalid")


@pytest.fixture
def advanced_server(tmp_path, tiny_model_dir):
    """The real app (gradio server) with the tiny model and one precomputed set."""
    from gradio_client import Client

    from ltxtrainer.ui.app import free_port, launch
    from ltxtrainer.ui.jobs import JobRunner

    (tmp_path / "configs").mkdir()
    shutil.copy(REPO_ROOT / "configs" / "tiny_demo.yaml", tmp_path / "configs")
    dataset = tmp_path / "datasets" / "APT" / "scenes" / ".precomputed" / "64x64x9-abcd"
    for part in ("latents", "conditions"):
        (dataset / part).mkdir(parents=True)
    paths = AppPaths(root=REPO_ROOT, train_date=tmp_path / "train_date", datasets=tmp_path / "datasets",
                     outputs=tmp_path / "outputs", models=tiny_model_dir.parent, configs=tmp_path / "configs")
    runner = JobRunner(paths.jobs)
    demo, url = launch(paths, language="zh", port=free_port(8060), prevent_thread_lock=True, runner=runner)
    yield Client(url, verbose=False), runner, paths, dataset
    runner.close()
    demo.close()


def test_start_names_a_missing_model_or_data_folder_and_queues_nothing(advanced_server, tmp_path):
    from ltxtrainer.ui.config_form import form_fields

    client, runner, paths, dataset = advanced_server
    *values, _ = client.predict("tiny_demo.yaml", api_name="/load_config")
    index = {field.path: i for i, field in enumerate(form_fields())}
    values[index["model.model_source"]] = str(tmp_path / "models" / "不存在 的模型")
    values[index["data.preprocessed_data_root"]] = str(dataset)
    message, _ = client.predict(*values, "missing_model", api_name="/start_training")
    assert "模型文件夹不可用" in message and "找不到文件夹" in message and "未加入队列" in message
    values[index["model.model_source"]] = str(paths.models / "tiny-ltxv")
    values[index["data.preprocessed_data_root"]] = str(tmp_path / "datasets" / "APT" / "scenes")  # no set there
    message, _ = client.predict(*values, "missing_data", api_name="/start_training")
    assert "预处理数据不可用" in message and "模型文件夹" not in message
    assert runner.jobs() == []
    assert not list(paths.configs.glob("missing_*"))
    # the folders a user picks from the lists pass (the relative model folder means one in the GUI's root)
    from ltxtrainer.ui.config_form import config_from_values
    from ltxtrainer.ui.tab_advanced import folder_problems

    values[index["data.preprocessed_data_root"]] = str(dataset)
    assert folder_problems(paths, config_from_values(values), "zh") == []
    values[index["model.model_source"]] = f"{paths.models.name}/tiny-ltxv"
    assert folder_problems(replace(paths, root=paths.models.parent), config_from_values(values), "zh") == []


def test_a_broken_config_json_in_a_model_folder_does_not_break_the_line(paths):
    folder = paths.models / "LTX-Video-0.9.7-diffusers" / "transformer"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{half a downl", encoding="utf-8")
    assert memory_line.model_shape(paths, "models/LTX-Video-0.9.7-diffusers") == "13b"
    assert "GB" in memory_line.memory_text(paths, "13b", "768x512", 49, "en", None)


def test_a_training_started_on_the_advanced_tab_shows_its_outcome_there(advanced_server, tmp_path):
    """The Advanced tab said "Queued:" forever; its banner now follows its own job to the finished state."""
    import time

    from ltxtrainer.ui.config_form import form_fields
    from tests.precomputed import write_sample

    client, runner, paths, _ = advanced_server
    own_data = tmp_path / "我的 数据"  # a dataset of one's own, in the reference trainer's layout
    write_sample(own_data, "clip", frames=2, height=2, width=2, seed=0)
    *values, _ = client.predict("tiny_demo.yaml", api_name="/load_config")
    index = {field.path: i for i, field in enumerate(form_fields())}
    values[index["model.model_source"]] = str(paths.models / "tiny-ltxv")
    values[index["data.preprocessed_data_root"]] = str(own_data)
    values[index["output_dir"]] = str(tmp_path / "outputs" / "高级 run")
    values[index["optimization.steps"]] = 2
    client.predict(*values, "advanced_run", api_name="/start_training")
    assert [job.meta["tab"] for job in runner.jobs()] == ["advanced"]
    deadline = time.monotonic() + 300
    banner = ""
    while time.monotonic() < deadline and 'data-state="finished"' not in banner:
        time.sleep(1)
        banner = client.predict(api_name="/poll_advanced")
    assert 'data-state="finished"' in banner, runner.read_log(runner.jobs()[0].id)
    assert "已完成" in banner and "lora_weights.safetensors" in banner  # the session is in 中文


# ---- the Pipeline tab's model folder: LTX-2 options and IC-LoRA flags -----------------------------


@pytest.fixture(scope="module")
def tiny_ltx2_models(tmp_path_factory, tiny_model_dir) -> Path:
    """A models/ folder with the tiny LTX-2 model (real diffusers layout) beside the tiny 0.9 one."""
    from ltxtrainer.models.tiny_ltx2 import save_tiny_ltx2_model

    models = tmp_path_factory.mktemp("模型 models")
    save_tiny_ltx2_model(models / "tiny-ltx2")
    shutil.copytree(tiny_model_dir, models / "tiny-ltxv")
    return models


def test_the_lora_presets_name_the_modules_ltx2_lora_target_modules_names():
    """The GUI's preset names are the switches of the model family's own (torch-free) function."""
    from itertools import product

    from ltxtrainer.models import ltx2
    from ltxtrainer.ui import model_choice

    for switches in product((False, True), repeat=3):
        presets = [preset for preset, on in zip(model_choice.LORA_PRESETS, switches, strict=True) if on]
        assert model_choice.lora_target_modules(presets) == ltx2.lora_target_modules(*switches), presets
    assert model_choice.template_presets("ltx2") == ["audio", "cross_modal"]  # the shipped template's targets


def test_the_model_folder_decides_the_family_and_the_templates_offered(tiny_ltx2_models, tmp_path):
    from ltxtrainer.ui import model_choice

    paths = AppPaths(root=REPO_ROOT, train_date=tmp_path / "train_date", datasets=tmp_path / "datasets",
                     outputs=tmp_path / "outputs", models=tiny_ltx2_models, configs=REPO_ROOT / "configs")
    folders = {name: (family, here) for name, family, here in model_choice.model_folders(paths)}
    assert folders["tiny-ltx2"] == ("ltx2", True) and folders["tiny-ltxv"] == ("ltx_video", True)
    assert folders["LTX-2-diffusers"] == ("ltx2", False)  # the LTX-2 template's folder, not downloaded: by its name
    assert folders["LTX-Video-0.9.7-diffusers"] == ("ltx_video", False)
    assert model_choice.family_templates("ltx2")[0] == "ltx2"
    assert "ltx2" not in model_choice.family_templates("ltx_video") and "tiny" in model_choice.family_templates("ltx_video")
    assert model_choice.template_for("ltx2", "tiny", "tiny") == "ltx2"  # a 0.9 template never trains an LTX-2 folder
    assert model_choice.template_for("ltx_video", "2b", "tiny") == "2b"
    assert model_choice.default_model(paths, {}, "tiny") == "tiny-ltxv"  # the template's folder, downloaded
    assert model_choice.default_model(paths, {"model": "tiny-ltx2"}, "tiny") == "tiny-ltx2"  # remembered
    only_ltx2 = replace(paths, models=tmp_path / "only ltx2")
    shutil.copytree(tiny_ltx2_models / "tiny-ltx2", only_ltx2.models / "tiny-ltx2")
    assert model_choice.default_model(only_ltx2, {}, "tiny") == "tiny-ltx2"  # a folder there, not a missing one


def test_a_start_on_an_ltx2_folder_carries_the_sound_lora_and_reference_flags(tiny_ltx2_models, tmp_path):
    from ltxtrainer.ui import actions
    from ltxtrainer.ui.jobs import JobRunner

    paths = AppPaths(root=REPO_ROOT, train_date=tmp_path / "train_date", datasets=tmp_path / "datasets",
                     outputs=tmp_path / "outputs", models=tiny_ltx2_models, configs=REPO_ROOT / "configs")
    (paths.train_date / "APT").mkdir(parents=True)
    own_references = tmp_path / "我的 参考"
    own_references.mkdir()
    runner = JobRunner(paths.jobs, start_worker=False)

    def argv(**choices) -> list[str]:
        job = actions.start_pipeline(runner, paths, project="APT", resolution="64x64", frames=9, steps=["train"],
                                     template=choices.pop("template", "ltx2"), captioner="demo", **choices)
        runner.cancel(job.id)
        return job.argv

    ltx2_run = argv(model="tiny-ltx2", audio="without", lora_presets=["feed_forward"], conditioning="reference_video",
                    reference_kind="folder", reference_dir=str(own_references), reference_downscale=2)
    assert ltx2_run[ltx2_run.index("--model-path") + 1] == str(tiny_ltx2_models / "tiny-ltx2")
    overrides = [ltx2_run[i + 1] for i, arg in enumerate(ltx2_run) if arg == "--set"]
    assert overrides == ["model.with_audio=false",
                         'lora.target_modules=["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", '
                         '"attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2"]']
    assert ltx2_run[-8:] == ["--conditioning", "reference_video", "--reference-kind", "folder",
                             "--reference-dir", str(own_references), "--reference-downscale", "2"]
    assert "model.with_audio=true" in argv(model="tiny-ltx2", audio="with", lora_presets=["audio"])
    # on an LTX-Video 0.9 folder the LTX-2 options and the downscale are not passed
    plain = argv(model="tiny-ltxv", template="tiny", audio="without", lora_presets=["audio"], conditioning="reference_video",
                 reference_kind="canny", reference_downscale=4)
    assert "--set" not in plain and plain[-4:] == ["--conditioning", "reference_video", "--reference-kind", "canny"]
    assert "--conditioning" not in argv(model="tiny-ltxv", template="tiny")
    with pytest.raises(ValueError, match="reference folder not found"):
        argv(model="tiny-ltx2", conditioning="reference_video", reference_kind="folder", reference_dir=str(tmp_path / "nowhere"))
    runner.close()


def test_an_ltx2_template_is_estimated_against_the_card_for_a_folder_there_or_only_named(card, tiny_ltx2_models, tmp_path):
    """LTX-2 runs get the same verdict line as 0.9 ones: the downloaded folder's own config, or
    the built-in LTX-2 shape its name points to; the page starts with the LTX-2 template that fits."""
    paths = AppPaths(root=REPO_ROOT, train_date=tmp_path / "train_date", datasets=tmp_path / "datasets",
                     outputs=tmp_path / "outputs", models=tiny_ltx2_models, configs=REPO_ROOT / "configs")
    rtx_4090, h100 = card(RTX_4090), card(H100)
    for template in ("ltx2", "ltx2-32gb", "ltx2-80gb"):
        line = memory_line.memory_text(paths, template, "512x512", 49, "en", h100, model="LTX-2-diffusers")
        assert "NVIDIA H100 80GB HBM3" in line and "No memory estimate" not in line, line
    assert memory_line.memory_estimate(paths, "ltx2", 512, 512, 49, h100, "LTX-2.3-diffusers")["known"]
    assert memory_line.suggested_template(paths, h100, "ltx2") == "ltx2-80gb"
    assert memory_line.suggested_template(paths, rtx_4090, "ltx2") == "ltx2"
    tiny = memory_line.memory_estimate(paths, "ltx2", 64, 64, 17, None, model="tiny-ltx2")
    assert tiny["known"] and tiny["verdict"] == "cpu"
    assert memory_line.memory_text(paths, "ltx2", "64x64", 17, "zh", None, model="tiny-ltx2").startswith("未检测到 NVIDIA GPU")
