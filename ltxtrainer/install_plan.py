"""What the launchers install: the torch wheel index for this machine's driver, and the torch pin.

run.sh, run.ps1 and run_system_python.ps1 run this file by its path (`python
ltxtrainer/install_plan.py torch-index`), in a fresh virtual environment before anything is
installed, so it uses the standard library only and imports nothing else of the package. One
rule for all three launchers lives here, tested with tables on Linux, instead of being restated
in bash and PowerShell.

Which CUDA build a driver runs (NVIDIA's minor version compatibility; PyTorch's wheels bundle
the CUDA runtime and ship compiled kernels, so only the driver's major CUDA family matters):
  CUDA 12.x wheels (cu126, cu128): driver >= 525.60.13 on Linux, >= 528.33 on Windows;
  CUDA 11.x wheels (cu118):        driver >= 450.80.02 on Linux, >= 452.39 on Windows.
Which builds hold kernels for a card (PyTorch's CUDA support matrix since 2.8):
  cu128: Turing (7.5) to Blackwell (10.0, 12.0); Blackwell needs cu128 and an R570 driver;
  cu126: Maxwell (5.0) to Hopper (9.0) -- the build for GTX 9xx/10xx and Volta cards;
  cu118: Maxwell (5.0) to Hopper (9.0), the last one for CUDA 11 drivers (torch <= 2.7).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

PYTORCH_INDEX = "https://download.pytorch.org/whl/"
TORCH_INDEX_ENV = "TORCH_INDEX_URL"

# (Linux, Windows) minimum driver versions; Windows drivers are numbered differently (e.g. 528.33).
CUDA12_DRIVER = {"linux": (525, 60, 13), "windows": (528, 33)}
CUDA11_DRIVER = {"linux": (450, 80, 2), "windows": (452, 39)}
BLACKWELL_DRIVER = {"linux": (570, 26), "windows": (570, 65)}  # CUDA 12.8's own minimum
OLDEST_CARD = (5, 0)  # Maxwell; older cards have no CUDA build of torch 2.x at all
CU128_OLDEST_CARD = (7, 5)  # Turing; cu128 dropped Maxwell, Pascal and Volta
BLACKWELL = (10, 0)


@dataclass(frozen=True)
class TorchChoice:
    """The wheel index to install torch from, and one sentence saying why (shown by the launcher)."""

    index_url: str
    reason: str

    @property
    def build(self) -> str:
        return self.index_url.rstrip("/").rsplit("/", 1)[-1]


def parse_version(text: str) -> tuple[int, ...]:
    """'528.49' -> (528, 49); '525.60.13' -> (525, 60, 13); '8.6' -> (8, 6)."""
    return tuple(int(part) for part in text.strip().split("."))


def parse_gpu_query(output: str) -> list[tuple[tuple[int, ...], tuple[int, ...] | None]]:
    """(driver version, compute capability or None) per GPU from
    `nvidia-smi --query-gpu=driver_version,compute_cap --format=csv,noheader` (or driver_version alone)."""
    gpus = []
    for line in output.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if not fields[0]:
            continue
        try:
            driver = parse_version(fields[0])
            capability = parse_version(fields[1]) if len(fields) > 1 and fields[1] not in ("", "[N/A]") else None
        except ValueError:
            continue  # a line that is not data (a warning nvidia-smi printed on stdout)
        gpus.append((driver, capability))
    return gpus


def choose_torch_index(platform: str, driver: tuple[int, ...] | None, capability: tuple[int, ...] | None) -> TorchChoice:
    """The PyTorch wheel index for a machine: `platform` is "linux" or "windows"; `driver` the NVIDIA
    driver version (None: no NVIDIA driver answers); `capability` GPU 0's compute capability (None:
    unknown, as with drivers too old to report it)."""
    cpu = PYTORCH_INDEX + "cpu"
    if driver is None:
        return TorchChoice(cpu, "no NVIDIA driver answers nvidia-smi, so torch runs on the CPU")
    shown = ".".join(map(str, driver))
    update = "update the NVIDIA driver (https://www.nvidia.com/Download/index.aspx), then delete .venv and start again"
    if capability is not None and capability < OLDEST_CARD:
        return TorchChoice(cpu, f"this GPU (compute capability {capability[0]}.{capability[1]}) is too old for any "
                                "CUDA build of torch 2.x; torch runs on the CPU")
    if capability is not None and capability >= BLACKWELL:
        if driver >= BLACKWELL_DRIVER[platform]:
            return TorchChoice(PYTORCH_INDEX + "cu128", f"Blackwell GPU, driver {shown}: CUDA 12.8 build")
        needed = ".".join(map(str, BLACKWELL_DRIVER[platform]))
        return TorchChoice(cpu, f"a Blackwell GPU needs driver {needed} or newer (found {shown}); {update}")
    old_card = capability is not None and capability < CU128_OLDEST_CARD
    if driver >= CUDA12_DRIVER[platform]:
        if old_card:
            return TorchChoice(PYTORCH_INDEX + "cu126", f"driver {shown}, a pre-Turing GPU: CUDA 12.6 build "
                                                        "(the CUDA 12.8 build has no kernels for it)")
        return TorchChoice(PYTORCH_INDEX + "cu128", f"driver {shown}: CUDA 12.8 build")
    if driver >= CUDA11_DRIVER[platform]:
        return TorchChoice(PYTORCH_INDEX + "cu118", f"driver {shown} runs only CUDA 11 builds: CUDA 11.8 build "
                                                    f"(torch 2.7 at most; {update} for a current torch)")
    return TorchChoice(cpu, f"driver {shown} is too old for any CUDA build of torch; {update}")


def query_gpu() -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    """(driver version, GPU 0's compute capability) from nvidia-smi; (None, None) without a driver."""
    for fields in ("driver_version,compute_cap", "driver_version"):  # compute_cap needs driver 510+
        try:
            result = subprocess.run(
                [_nvidia_smi(), f"--query-gpu={fields}", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=60, check=False,
            )
        except (OSError, subprocess.TimeoutExpired):  # no driver, or a wedged one
            return None, None
        gpus = parse_gpu_query(result.stdout) if result.returncode == 0 else []
        if gpus:
            return gpus[0]
    return None, None


def _nvidia_smi() -> str:
    on_path = shutil.which("nvidia-smi")
    if on_path:
        return on_path
    # Older Windows drivers install nvidia-smi here without putting it on PATH.
    classic = os.path.join(os.environ.get("ProgramFiles", r"C:\Program Files"), "NVIDIA Corporation", "NVSMI",
                           "nvidia-smi.exe")
    return classic if os.name == "nt" and os.path.isfile(classic) else "nvidia-smi"


def torch_constraint(installed_version: str) -> str:
    """The pip constraint that keeps the installed torch: its *metadata* version.

    `torch.__version__` can carry a local label the wheel's metadata lacks (PyPI's Windows and
    Linux wheels say `2.14.1+cpu` / `2.14.1+cu130` at runtime but `2.14.1` to pip); pinning that
    label makes pip find no torch at all (ResolutionImpossible).
    """
    return f"torch=={installed_version.strip()}\n"


def platform_name() -> str:
    return "windows" if os.name == "nt" else "linux"


def cuda_advice(torch_cuda: str | None, cuda_available: bool, driver: tuple[int, ...] | None) -> str | None:
    """What to tell a user whose machine has an NVIDIA driver but whose torch cannot use the GPU; None if fine."""
    if driver is None or cuda_available:
        return None
    shown = ".".join(map(str, driver))
    if torch_cuda is None:
        return (f"torch is a CPU build although NVIDIA driver {shown} is present. Delete the .venv folder and start "
                f"again without {TORCH_INDEX_ENV} (or set it to a CUDA index such as {PYTORCH_INDEX}cu128).")
    return (f"torch (CUDA {torch_cuda}) cannot use the GPU with driver {shown}. Update the NVIDIA driver "
            "(https://www.nvidia.com/Download/index.aspx) and restart the computer; if it still fails, delete "
            ".venv and start again so the launcher picks the build for this driver.")


def main(argv: list[str]) -> int:
    usage = "usage: install_plan.py torch-index | constraint FILE | check-cuda"
    if not argv:
        print(usage, file=sys.stderr)
        return 2
    if argv[0] == "torch-index":
        override = os.environ.get(TORCH_INDEX_ENV)
        if override:
            print(override)
            return 0
        driver, capability = query_gpu()
        choice = choose_torch_index(platform_name(), driver, capability)
        print(f"[ltxtrainer] torch build: {choice.build} ({choice.reason})", file=sys.stderr)
        print(choice.index_url)
        return 0
    if argv[0] == "constraint" and len(argv) == 2:
        with open(argv[1], "w", encoding="utf-8") as handle:
            handle.write(torch_constraint(importlib.metadata.version("torch")))
        return 0
    if argv[0] == "check-cuda":
        import torch  # installed by now; only this command needs it

        advice = cuda_advice(torch.version.cuda, torch.cuda.is_available(), query_gpu()[0])
        if advice:
            print(f"[ltxtrainer] WARNING: {advice}", file=sys.stderr)
        return 0
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
