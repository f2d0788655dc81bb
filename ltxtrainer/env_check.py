"""What this machine can train with, and what to fix before trying.

The seed GUI's users lost hours to three silent failures: a CPU-only torch installed over the
CUDA one, a driver older than torch's CUDA build, and a model folder with a missing shard. This
report names each of them in plain words with the command that fixes it, and runs anywhere
(no GPU, no nvidia-smi, even no torch) because it is the first thing to run when nothing works.

`check_environment(...).to_dict()` is the JSON the GUI reads; its keys:
python, platform, torch {version, cuda, cuda_available}, driver {version, cuda, nvidia_smi, gpu_count},
gpus [{index, name, total_memory_gb, free_memory_gb, bf16, compute_capability, usable_by_torch}],
disk {path, free_gb, total_gb}, ffmpeg {path, source}, models [{name, path, kind, ok, variant,
problems}], problems [{severity, message, fix, code, values}], ok (no problem of severity "error").
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ltxtrainer.models.folder import DEFAULT_MODEL_DIR, check_model_folder

CUDA_INDEX_URL = "https://download.pytorch.org/whl/cu128"
# 13B weights, T5 and a run's latents and checkpoints: below this a run can die mid-way.
LOW_DISK_GB = 20.0
NVIDIA_SMI_TIMEOUT_S = 10
# Older Windows drivers install nvidia-smi here without putting it on PATH.
_WINDOWS_NVIDIA_SMI = Path(r"C:\Program Files\NVIDIA Corporation\NVSMI\nvidia-smi.exe")

NO_GPU_CONSEQUENCE = "training will run on CPU: fine for the tiny demo, far too slow for real models."


@dataclass
class Problem:
    severity: str  # "error": training on the GPU cannot work; "warning": it works, worse; "info"
    message: str
    fix: str = ""
    # What the problem is and its particulars, so the GUI can say it in the user's language
    # (ltxtrainer.ui.i18n "envp.<code>" and "envp.<code>.fix" take these values).
    code: str = ""
    values: dict = field(default_factory=dict)


@dataclass
class GpuInfo:
    index: int
    name: str
    total_memory_gb: float | None
    free_memory_gb: float | None
    bf16: bool | None  # None when torch cannot see the card, so nobody can tell
    compute_capability: str | None
    usable_by_torch: bool


@dataclass
class ModelFolderState:
    name: str
    path: str
    kind: str  # "ltx-video" (an LTX folder of either family, checked) or "other" (a captioner or text model; not checked)
    ok: bool
    variant: str
    problems: list[str] = field(default_factory=list)
    family: str | None = None  # "ltx_video" (0.9) or "ltx2" (LTX-2, 2.3), from model_index.json; None for "other"


@dataclass
class EnvReport:
    python: str
    platform: str
    torch: dict
    driver: dict
    gpus: list[GpuInfo]
    disk: dict
    ffmpeg: dict
    models: list[ModelFolderState]
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(problem.severity == "error" for problem in self.problems)

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


# ---------------------------------------------------------------- NVIDIA driver (nvidia-smi)


def find_nvidia_smi() -> str | None:
    found = shutil.which("nvidia-smi")
    if found:
        return found
    if os.name == "nt" and _WINDOWS_NVIDIA_SMI.is_file():
        return str(_WINDOWS_NVIDIA_SMI)
    return None


def _run(command: list[str]) -> str | None:
    """stdout of a short command, or None when it is missing, fails or hangs (a wedged driver)."""
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def parse_driver_banner(text: str) -> tuple[str | None, str | None]:
    """(driver version, highest CUDA version the driver supports) from plain `nvidia-smi` output."""
    driver = re.search(r"Driver Version:\s*([\d.]+)", text)
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", text)
    return (driver.group(1) if driver else None, cuda.group(1) if cuda else None)


def parse_gpu_query(text: str) -> list[GpuInfo]:
    """GPUs from `nvidia-smi --query-gpu=index,name,memory.total,memory.free --format=csv,noheader,nounits`."""
    gpus = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) < 4 or not parts[0].isdigit():
            continue
        gpus.append(
            GpuInfo(
                index=int(parts[0]),
                name=parts[1],
                total_memory_gb=_mib_to_gb(parts[2]),
                free_memory_gb=_mib_to_gb(parts[3]),
                bf16=None,
                compute_capability=None,
                usable_by_torch=False,
            )
        )
    return gpus


def _mib_to_gb(value: str) -> float | None:
    try:
        return round(float(value) / 1024, 1)
    except ValueError:
        return None


def query_driver() -> tuple[dict, list[GpuInfo]]:
    """The driver as nvidia-smi sees it, independent of which torch build is installed."""
    smi = find_nvidia_smi()
    driver = {"version": None, "cuda": None, "nvidia_smi": smi, "gpu_count": 0}
    if smi is None:
        return driver, []
    banner = _run([smi])
    if banner:
        driver["version"], driver["cuda"] = parse_driver_banner(banner)
    gpus = query_gpus(smi)
    driver["gpu_count"] = len(gpus)
    return driver, gpus


def query_gpus(smi: str | None = None) -> list[GpuInfo]:
    """The NVIDIA GPUs and their memory as nvidia-smi lists them; [] without nvidia-smi.

    No torch: the GUI process asks this for its memory verdict and header, and the GUI never
    imports torch (that would cost seconds at start and hold CUDA in a process that trains nothing).
    """
    smi = smi or find_nvidia_smi()
    if smi is None:
        return []
    query = _run([smi, "--query-gpu=index,name,memory.total,memory.free", "--format=csv,noheader,nounits"])
    return parse_gpu_query(query or "")


# ---------------------------------------------------------------- torch


def query_torch() -> tuple[dict, list[GpuInfo]]:
    """torch's version, the CUDA it was built for, and the GPUs it can actually use."""
    try:
        import torch
    except ImportError:
        return {"version": None, "cuda": None, "cuda_available": False}, []
    info = {"version": torch.__version__, "cuda": torch.version.cuda, "cuda_available": False}
    gpus: list[GpuInfo] = []
    try:
        info["cuda_available"] = bool(torch.cuda.is_available())
        for index in range(torch.cuda.device_count() if info["cuda_available"] else 0):
            props = torch.cuda.get_device_properties(index)
            free, total = torch.cuda.mem_get_info(index)
            gpus.append(
                GpuInfo(
                    index=index,
                    name=props.name,
                    total_memory_gb=round(total / 1024**3, 1),
                    free_memory_gb=round(free / 1024**3, 1),
                    bf16=props.major >= 8,  # native bf16 from Ampere (RTX 30xx, A100) on
                    compute_capability=f"{props.major}.{props.minor}",
                    usable_by_torch=True,
                )
            )
    except RuntimeError:  # a broken driver makes CUDA calls raise rather than return False
        info["cuda_available"] = False
    return info, gpus


# ---------------------------------------------------------------- disk, ffmpeg, models


def query_disk(outputs_dir: Path) -> dict:
    """Free space where runs are written (the nearest existing folder if outputs/ is not made yet)."""
    probe = outputs_dir.resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return {
        "path": str(outputs_dir.resolve()),
        "free_gb": round(usage.free / 1024**3, 1),
        "total_gb": round(usage.total / 1024**3, 1),
    }


def find_ffmpeg() -> dict:
    """A system ffmpeg first, else the binary imageio-ffmpeg ships (scenedetect finds either)."""
    system = shutil.which("ffmpeg")
    if system:
        return {"path": system, "source": "system"}
    try:
        import imageio_ffmpeg

        return {"path": imageio_ffmpeg.get_ffmpeg_exe(), "source": "imageio-ffmpeg"}
    except (ImportError, RuntimeError):
        return {"path": None, "source": None}


def _looks_like_ltx(folder: Path) -> bool:
    """LTX-Video folders get checked; captioner and text-model folders beside them are listed only."""
    if (folder / "model_index.json").is_file() or (folder / "transformer").is_dir():
        return True
    return "ltx" in folder.name.lower()


def scan_models(models_dir: Path) -> list[ModelFolderState]:
    states = []
    folders = (
        sorted(p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        if models_dir.is_dir()
        else []
    )
    for folder in folders:
        if not _looks_like_ltx(folder):
            states.append(ModelFolderState(folder.name, str(folder), "other", True, "n/a"))
            continue
        report = check_model_folder(folder)
        states.append(
            ModelFolderState(
                folder.name, str(report.path), "ltx-video", report.ok, report.variant, list(report.problems),
                report.family,
            )
        )
    return states


# ---------------------------------------------------------------- judging


def _version_tuple(version: str | None) -> tuple[int, ...] | None:
    if not version:
        return None
    numbers = re.findall(r"\d+", version)
    return tuple(int(n) for n in numbers[:2]) if numbers else None


def find_problems(report: EnvReport, models_dir: Path) -> list[Problem]:
    """Plain-language problems, each with the fix; the order is the order to fix them in."""
    problems: list[Problem] = []
    torch_info, driver = report.torch, report.driver
    smi_sees_gpu = driver["gpu_count"] > 0
    venv_python = r".venv\Scripts\python.exe" if os.name == "nt" else ".venv/bin/python"
    launcher = r".\run.ps1" if os.name == "nt" else "./run.sh"

    if sys.version_info[:2] > (3, 12):
        problems.append(
            Problem(
                "warning",
                f"Python {report.python} is newer than the tested 3.10-3.12: some packages may lack wheels for it.",
                "If an install fails, use Python 3.12 or Anaconda.",
                code="python_new",
                values={"python": report.python},
            )
        )
    if torch_info["version"] is None:
        problems.append(
            Problem(
                "error",
                "torch is not installed in this Python.",
                f"Run {launcher}: it installs torch first.",
                code="torch_missing",
                values={"launcher": launcher},
            )
        )
    elif torch_info["cuda"] is None and smi_sees_gpu:
        problems.append(
            Problem(
                "error",
                f"torch {torch_info['version']} is a CPU-only build, but nvidia-smi sees an NVIDIA GPU: "
                "training would ignore the GPU.",
                f"Replace it with the CUDA build: `{venv_python} -m pip uninstall -y torch` then "
                f"`{venv_python} -m pip install torch --index-url {CUDA_INDEX_URL}`, then start {launcher} again.",
                code="torch_cpu_build",
                values={"version": torch_info["version"], "venv_python": venv_python, "index_url": CUDA_INDEX_URL, "launcher": launcher},
            )
        )
    torch_cuda, driver_cuda = _version_tuple(torch_info["cuda"]), _version_tuple(driver["cuda"])
    if torch_cuda and driver_cuda and torch_cuda > driver_cuda:
        problems.append(
            Problem(
                "error" if torch_cuda[0] > driver_cuda[0] or not torch_info["cuda_available"] else "warning",
                f"The NVIDIA driver {driver['version']} supports CUDA up to {driver['cuda']}, but torch was "
                f"built for CUDA {torch_info['cuda']}: the driver is too old.",
                "Update the NVIDIA driver (https://www.nvidia.com/Download/index.aspx), then restart.",
                code="driver_old",
                values={"driver": driver["version"], "driver_cuda": driver["cuda"], "torch_cuda": torch_info["cuda"]},
            )
        )
    elif torch_info["cuda"] and smi_sees_gpu and not torch_info["cuda_available"]:
        problems.append(
            Problem(
                "error",
                f"torch is a CUDA {torch_info['cuda']} build and nvidia-smi sees a GPU, yet torch cannot use it.",
                "Update the NVIDIA driver and restart; if that does not help, reinstall torch "
                f"from {CUDA_INDEX_URL}.",
                code="cuda_unusable",
                values={"torch_cuda": torch_info["cuda"], "index_url": CUDA_INDEX_URL},
            )
        )
    if not report.gpus:
        where = "nvidia-smi not found" if driver["nvidia_smi"] is None else "nvidia-smi lists no GPU"
        problems.append(
            Problem(
                "warning",
                f"No NVIDIA GPU found ({where}): {NO_GPU_CONSEQUENCE}",
                "Install an NVIDIA GPU driver if this machine has an NVIDIA card.",
                code="no_gpu",
                values={"nvidia_smi_found": driver["nvidia_smi"] is not None},
            )
        )
    for gpu in report.gpus:
        if gpu.bf16 is False:
            problems.append(
                Problem(
                    "warning",
                    f"GPU {gpu.index} ({gpu.name}) has no native bf16: bf16 training is slow or fails on it.",
                    "Use an RTX 30xx/40xx/50xx, A-series or newer card for training.",
                    code="no_bf16",
                    values={"index": gpu.index, "name": gpu.name},
                )
            )
    if report.disk["free_gb"] < LOW_DISK_GB:
        problems.append(
            Problem(
                "warning",
                f"Only {report.disk['free_gb']} GB free at {report.disk['path']}: runs write latents and "
                "checkpoints there and may stop half-way.",
                f"Free at least {LOW_DISK_GB:.0f} GB, or move the project to a larger drive.",
                code="low_disk",
                values={"free_gb": report.disk["free_gb"], "path": report.disk["path"], "need_gb": LOW_DISK_GB},
            )
        )
    if report.ffmpeg["path"] is None:
        problems.append(
            Problem(
                "info",
                "No ffmpeg found (neither on PATH nor from imageio-ffmpeg). ltxtrainer's own stages decode and "
                "write video with PyAV and do not need it; tools that call ffmpeg (e.g. scenedetect's splitter) do.",
                f"`{venv_python} -m pip install imageio-ffmpeg` (it is in requirements.txt)",
                code="no_ffmpeg",
                values={"venv_python": venv_python},
            )
        )
    for state in report.models:
        if state.kind == "ltx-video" and not state.ok:
            problems.append(
                Problem(
                    "error",
                    f"Model folder {state.name} is incomplete: " + "; ".join(state.problems),
                    f"Download the missing files again into {state.path} (diffusers layout).",
                    code="model_incomplete",
                    values={"name": state.name, "path": state.path, "problems": list(state.problems)},
                )
            )
    if not any(state.kind == "ltx-video" and state.ok and state.variant != "tiny" for state in report.models):
        problems.append(
            Problem(
                "info",
                f"No complete LTX-Video model in {models_dir}: real training needs one; the tiny demo does not.",
                f"Download LTX-Video-0.9.7-diffusers into {models_dir / DEFAULT_MODEL_DIR.name} "
                "(see INSTALLATION_CN.md).",
                code="no_model",
                values={"models_dir": str(models_dir), "target": str(models_dir / DEFAULT_MODEL_DIR.name)},
            )
        )
    return problems


def check_environment(models_dir: str | Path = "models", outputs_dir: str | Path = "outputs") -> EnvReport:
    """Gather everything, then judge it; never raises for a missing GPU, driver, torch or model."""
    models_dir, outputs_dir = Path(models_dir), Path(outputs_dir)
    torch_info, torch_gpus = query_torch()
    driver, smi_gpus = query_driver()
    report = EnvReport(
        python=platform.python_version(),
        platform=f"{platform.system()} {platform.release()} ({platform.machine()})",
        torch=torch_info,
        driver=driver,
        gpus=torch_gpus or smi_gpus,
        disk=query_disk(outputs_dir),
        ffmpeg=find_ffmpeg(),
        models=scan_models(models_dir),
    )
    report.problems = find_problems(report, models_dir)
    return report
