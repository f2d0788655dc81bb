"""The environment report: runs on a machine without a GPU, says so, and names what to fix."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ltxtrainer.env_check import (
    CUDA_INDEX_URL,
    EnvReport,
    check_environment,
    find_nvidia_smi,
    find_problems,
    parse_driver_banner,
    parse_gpu_query,
)

DOCUMENTED_KEYS = {
    "python",
    "platform",
    "torch",
    "driver",
    "gpus",
    "disk",
    "ffmpeg",
    "models",
    "problems",
    "ok",
}
NO_GPU_HERE = find_nvidia_smi() is None

# What `nvidia-smi` prints on a Windows machine with one RTX 4090 (banner lines only).
BANNER = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 572.16                 Driver Version: 572.16         CUDA Version: 12.8     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                  Driver-Model | Bus-Id          Disp.A | Volatile Uncorr. ECC |
|   0  NVIDIA GeForce RTX 4090      WDDM  |   00000000:01:00.0  On |                  Off |
"""


def _run_script(repo_root: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(repo_root / "scripts" / "check_env.py"), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=cwd,
        timeout=120,
        check=False,
    )


@pytest.fixture
def models_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A models/ folder users could have: the tiny model, a broken LTX download, a captioner model."""
    root = tmp_path / "模型 folder"
    shutil.copytree(tiny_model_dir, root / "tiny-ltxv")
    broken = Path(shutil.copytree(tiny_model_dir, root / "LTX-Video-0.9.7-diffusers"))
    (broken / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    (root / "LLaVA-NeXT-Video-7B-hf").mkdir()
    (root / "LLaVA-NeXT-Video-7B-hf" / "config.json").write_text("{}", encoding="utf-8")
    return root


@pytest.mark.skipif(not NO_GPU_HERE, reason="this machine has nvidia-smi")
def test_report_on_a_machine_without_gpu_says_so_plainly(tmp_path: Path) -> None:
    report = check_environment(tmp_path / "models", tmp_path / "outputs")
    assert report.gpus == []
    assert report.driver["nvidia_smi"] is None
    assert report.ok  # no GPU is a warning, not a broken environment
    messages = [problem.message for problem in report.problems if problem.severity == "warning"]
    assert any(
        "No NVIDIA GPU found" in message and "fine for the tiny demo, far too slow for real models" in message
        for message in messages
    ), messages
    assert report.torch["version"]
    assert report.disk["free_gb"] > 0  # outputs/ does not exist yet: its nearest parent is measured


def test_model_folders_are_checked_and_broken_ones_named(models_dir: Path, tmp_path: Path) -> None:
    report = check_environment(models_dir, tmp_path)
    states = {state.name: state for state in report.models}
    assert states["tiny-ltxv"].ok and states["tiny-ltxv"].variant == "tiny"
    broken = states["LTX-Video-0.9.7-diffusers"]
    assert not broken.ok and any("missing weights" in p and p.endswith("vae") for p in broken.problems)
    assert states["LLaVA-NeXT-Video-7B-hf"].kind == "other"  # a captioner beside it is not an error
    assert not report.ok
    errors = [problem for problem in report.problems if problem.severity == "error"]
    assert len(errors) == 1 and "LTX-Video-0.9.7-diffusers" in errors[0].message


def test_each_model_folder_is_labelled_with_its_family_in_the_report_and_the_header(models_dir: Path) -> None:
    """An LTX-2 download beside the 0.9 ones is named LTX-2, not LTX-Video, in both languages."""
    from ltxtrainer.models.tiny_ltx2 import save_tiny_ltx2_model
    from ltxtrainer.ui.tab_environment import models_lines

    save_tiny_ltx2_model(models_dir / "tiny-ltx2")
    states = {state.name: state for state in check_environment(models_dir, models_dir).models}
    assert states["tiny-ltx2"].family == "ltx2" and states["tiny-ltx2"].ok
    assert states["tiny-ltxv"].family == "ltx_video"
    assert states["LLaVA-NeXT-Video-7B-hf"].family is None
    rows = [vars(state) for state in states.values()]
    for lang, tiny in (("en", "tiny test model"), ("zh", "微型测试模型")):
        lines = models_lines(rows, lang)
        assert any(line.startswith("✅ tiny-ltx2") and f"LTX-2 {tiny}" in line for line in lines), lines
        assert any(line.startswith("✅ tiny-ltxv") and f"LTX-Video {tiny}" in line for line in lines), lines


def test_json_output_parses_and_has_the_documented_keys(
    repo_root: Path, models_dir: Path, tmp_path: Path
) -> None:
    result = _run_script(
        repo_root,
        "--json",
        "--models-dir",
        str(models_dir),
        "--outputs-dir",
        str(tmp_path / "输出"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)  # one object, nothing else on stdout
    assert set(data) == DOCUMENTED_KEYS
    assert set(data["torch"]) == {"version", "cuda", "cuda_available"}
    assert set(data["driver"]) == {"version", "cuda", "nvidia_smi", "gpu_count"}
    assert set(data["disk"]) == {"path", "free_gb", "total_gb"}
    assert set(data["ffmpeg"]) == {"path", "source"}
    assert all(set(problem) == {"severity", "message", "fix", "code", "values"} for problem in data["problems"])
    assert all(problem["code"] for problem in data["problems"])  # the GUI says each in the user's language
    names = {model["name"]: model for model in data["models"]}
    assert names["tiny-ltxv"]["ok"] is True
    assert names["LTX-Video-0.9.7-diffusers"]["ok"] is False
    assert data["disk"]["path"].endswith("输出")
    if NO_GPU_HERE:
        assert data["gpus"] == [] and data["torch"]["cuda_available"] is False


def test_table_for_people_exits_zero_and_names_the_problems(
    repo_root: Path, models_dir: Path, tmp_path: Path
) -> None:
    result = _run_script(repo_root, "--models-dir", str(models_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "LTX-Video-0.9.7-diffusers" in result.stdout
    assert "fix:" in result.stdout
    if NO_GPU_HERE:
        assert "No NVIDIA GPU found" in result.stdout


def test_nvidia_smi_output_is_read() -> None:
    assert parse_driver_banner(BANNER) == ("572.16", "12.8")
    gpus = parse_gpu_query("0, NVIDIA GeForce RTX 4090, 24564, 23012\n1, NVIDIA RTX A6000, 49140, 48000\n")
    assert [(gpu.name, gpu.total_memory_gb) for gpu in gpus] == [
        ("NVIDIA GeForce RTX 4090", 24.0),
        ("NVIDIA RTX A6000", 48.0),
    ]
    assert not any(gpu.usable_by_torch for gpu in gpus)


def _report(torch: dict, driver: dict, gpus: list) -> EnvReport:
    return EnvReport(
        python="3.12.4",
        platform="Windows 11",
        torch=torch,
        driver=driver,
        gpus=gpus,
        disk={"path": "D:/ltxtrainer/outputs", "free_gb": 500.0, "total_gb": 1000.0},
        ffmpeg={"path": "ffmpeg.exe", "source": "system"},
        models=[],
    )


def test_cpu_torch_on_a_gpu_machine_is_an_error_with_the_cuda_reinstall_command(tmp_path: Path) -> None:
    gpus = parse_gpu_query("0, NVIDIA GeForce RTX 4090, 24564, 23012")
    report = _report(
        {"version": "2.7.1+cpu", "cuda": None, "cuda_available": False},
        {"version": "572.16", "cuda": "12.8", "nvidia_smi": "nvidia-smi", "gpu_count": 1},
        gpus,
    )
    problems = find_problems(report, tmp_path)
    errors = [problem for problem in problems if problem.severity == "error"]
    assert len(errors) == 1
    assert "CPU-only build" in errors[0].message
    assert CUDA_INDEX_URL in errors[0].fix and "pip uninstall -y torch" in errors[0].fix
    assert not any("No NVIDIA GPU found" in problem.message for problem in problems)


def test_driver_older_than_torchs_cuda_build_is_named(tmp_path: Path) -> None:
    report = _report(
        {"version": "2.7.1+cu128", "cuda": "12.8", "cuda_available": False},
        {"version": "536.25", "cuda": "12.2", "nvidia_smi": "nvidia-smi", "gpu_count": 1},
        parse_gpu_query("0, NVIDIA GeForce RTX 3090, 24576, 24000"),
    )
    errors = [problem for problem in find_problems(report, tmp_path) if problem.severity == "error"]
    assert len(errors) == 1
    assert "536.25" in errors[0].message and "12.8" in errors[0].message and "too old" in errors[0].message
    assert "Update the NVIDIA driver" in errors[0].fix


def test_low_disk_is_a_warning(tmp_path: Path) -> None:
    report = _report(
        {"version": "2.7.1", "cuda": None, "cuda_available": False},
        {"nvidia_smi": None, "gpu_count": 0, "cuda": None, "version": None},
        [],
    )
    report.disk["free_gb"] = 3.5
    warnings = [
        problem.message for problem in find_problems(report, tmp_path) if problem.severity == "warning"
    ]
    assert any("Only 3.5 GB free" in message for message in warnings), warnings
