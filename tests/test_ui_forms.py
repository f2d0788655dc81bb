"""The memory line against the card, the GUI process without torch, and the Advanced tab's form.

The card is whatever `nvidia-smi` on PATH reports; tests put a stand-in `nvidia-smi` (a shell
script printing what the real one prints for a 24 GB or 80 GB card) first on PATH, so the GUI's
own query and parsing run unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltxtrainer.ui import memory_line
from ltxtrainer.ui.workspace import AppPaths

REPO_ROOT = Path(__file__).resolve().parents[1]
RTX_4090 = "0, NVIDIA GeForce RTX 4090, 24564, 23012"
H100 = "0, NVIDIA H100 80GB HBM3, 81559, 81000"

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the stand-in nvidia-smi is a shell script")


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
    assert line.startswith("❌ 未检测到 NVIDIA GPU") and "微型演示模板" in line


def test_a_mistyped_size_is_named_in_the_language(paths):
    assert "“768x50”" in memory_line.memory_text(paths, "2b", "768x50", 49, "zh", None)


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
