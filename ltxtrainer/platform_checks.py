"""Options that build native code on first use, refused up front where no compiler is to be had.

Some training options do not run on prebuilt code: optimum-quanto compiles a C++/CUDA extension
(`torch.utils.cpp_extension.load`) the first time certain kernels run, and `torch.compile` with
inductor generates triton and C++ code. On Linux g++ is usually there; a Windows user has no
MSVC (`cl.exe`), no CUDA Toolkit (`nvcc`) and no triton (INSTALLATION_CN.md promises none is
needed), so there the run would fail minutes in, after loading the model, with a compiler error.
Which kernels compile (optimum-quanto 0.2.x):
  int2-quanto: always (packed 2-bit kernels, on CPU too);
  int4-quanto: on the CPU, on cards below compute capability 8.0 and with fp16 (AWQ/Marlin
               kernels); with bf16 on Ampere or newer it uses torch's own int4 matmul;
  fp8-quanto / fp8uz-quanto with fp16: the Marlin fp8 kernel;
  int8-quanto: pure torch, everywhere.
"""

from __future__ import annotations

import torch

from ltxtrainer.config import ConfigError, TrainerConfig

COMPILER_FREE_ADVICE = "acceleration.quantization: int8-quanto, which needs no compiler"


def compute_capability(device: torch.device) -> tuple[int, int] | None:
    """The CUDA card's compute capability, or None on the CPU (or any other device)."""
    return tuple(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None  # type: ignore[return-value]


def options_needing_a_compiler(config: TrainerConfig, capability: tuple[int, int] | None) -> list[str]:
    """One sentence per chosen option that compiles code on first use on this device."""
    acceleration = config.acceleration
    quantization = acceleration.quantization_choice
    fp16 = acceleration.mixed_precision_mode == "fp16"
    where = "on the CPU" if capability is None else f"on a GPU of compute capability {capability[0]}.{capability[1]}"
    problems = []
    if quantization == "int2-quanto":
        problems.append(f"acceleration.quantization: int2-quanto compiles optimum-quanto's 2-bit kernels (C++/CUDA) "
                        f"on first use; use {COMPILER_FREE_ADVICE}.")
    elif quantization == "int4-quanto" and (capability is None or capability < (8, 0) or fp16):
        reason = "with mixed_precision_mode fp16" if fp16 else where
        problems.append(f"acceleration.quantization: int4-quanto {reason} compiles optimum-quanto's 4-bit kernels "
                        f"(C++/CUDA) on first use; use {COMPILER_FREE_ADVICE}, or bf16 on an RTX 30xx or newer card.")
    elif quantization in ("fp8-quanto", "fp8uz-quanto") and fp16:
        problems.append(f"acceleration.quantization: {quantization} with mixed_precision_mode fp16 compiles "
                        f"optimum-quanto's fp8 kernel (CUDA) on first use; use mixed_precision_mode bf16 or "
                        f"{COMPILER_FREE_ADVICE}.")
    if acceleration.compile_with_inductor:
        problems.append("acceleration.compile_with_inductor: true needs triton and a C++ compiler (MSVC cl.exe), which "
                        "Windows does not have; set it to false (training is slower, otherwise the same).")
    return problems


def refuse_options_needing_a_compiler(platform: str, config: TrainerConfig, capability: tuple[int, int] | None) -> None:
    """Raise ConfigError before anything loads when `platform` (sys.platform) has no compiler for a chosen option.

    Only Windows is refused: Linux and macOS setups have a system compiler, and the tests there
    run these options for real.
    """
    if platform != "win32":
        return
    problems = options_needing_a_compiler(config, capability)
    if problems:
        raise ConfigError("These options need a compiler that Windows does not have:\n- " + "\n- ".join(problems))
