"""Preparing the transformer for training: dtype, quantization, LoRA, checkpointing, compile, offload.

Order matters: the frozen base is quantized first (optimum-quanto), then peft adds the adapter on
top of the quantized linears, so only the adapter trains in higher precision.
"""

from __future__ import annotations

from types import MethodType

import torch
from peft import LoraConfig as PeftLoraConfig
from peft.tuners.tuners_utils import BaseTunerLayer

from ltxtrainer import progress
from ltxtrainer.config import ConfigError, TrainerConfig

ADAPTER_NAME = "default"
# Modules outside the repeated blocks stay unquantized: they are small and precision-sensitive.
QUANTIZE_EXCLUDE = ["proj_in", "proj_out", "time_embed*", "caption_projection*", "norm_out", "scale_shift_table"]
_QUANTO_WEIGHTS = {
    "int8-quanto": "qint8",
    "int4-quanto": "qint4",
    "int2-quanto": "qint2",
    "fp8-quanto": "qfloat8",
    "fp8uz-quanto": "qfloat8_e4m3fnuz",
}


def weight_dtype(config: TrainerConfig, device: torch.device) -> torch.dtype:
    """Frozen weights in the mixed-precision dtype (halves memory); trained weights stay fp32."""
    mode = config.acceleration.mixed_precision_mode
    if config.model.training_mode == "full" or mode in (None, "no"):
        return torch.float32
    if mode == "fp16" and device.type != "cuda":  # the trainer falls back to full precision there
        return torch.float32
    return torch.bfloat16 if mode == "bf16" else torch.float16


def quantize_transformer(
    transformer: torch.nn.Module, choice: str, exclude: list[str] = QUANTIZE_EXCLUDE
) -> None:
    """Quantize and freeze the base transformer's weights in place, but for the family's `exclude` modules."""
    from optimum import quanto

    weights = getattr(quanto, _QUANTO_WEIGHTS[choice])
    quanto.quantize(transformer, weights=weights, exclude=exclude)
    quanto.freeze(transformer)


def peft_lora_config(config: TrainerConfig) -> PeftLoraConfig:
    lora = config.lora
    assert lora is not None
    return PeftLoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        init_lora_weights=True,
    )


def check_target_modules(transformer: torch.nn.Module, targets: list[str]) -> None:
    """Every `lora.target_modules` name must adapt something in this transformer.

    peft matches a name when a module path ends with "." + it and refuses only when no name
    matches at all, so a name from another family (`audio_attn1.to_q` on LTX-Video 0.9) would
    silently train less than asked. The message lists the linear layers of the first block.
    """
    names = [name for name, _ in transformer.named_modules()]
    missing = [target for target in targets if not any(name == target or name.endswith("." + target) for name in names)]
    if missing:
        block = "transformer_blocks.0."
        valid = [
            name.removeprefix(block) for name, module in transformer.named_modules()
            if name.startswith(block) and isinstance(module, torch.nn.Linear)
        ]
        raise ConfigError(
            f"lora.target_modules {missing} match no module of this model ({type(transformer).__name__}). "
            f"Names inside every transformer block: {', '.join(valid)} (or their last parts, e.g. to_q)."
        )


def add_lora(transformer: torch.nn.Module, config: TrainerConfig) -> None:
    """Freeze the base and add the adapter; adapter weights are kept in fp32 for stable updates."""
    check_target_modules(transformer, config.lora.target_modules)
    transformer.requires_grad_(False)
    transformer.add_adapter(peft_lora_config(config), adapter_name=ADAPTER_NAME)
    for name, parameter in transformer.named_parameters():
        if "lora_" in name:
            parameter.data = parameter.data.float()
            parameter.requires_grad_(True)


def adapters_in_low_precision(config: TrainerConfig, device: torch.device) -> bool:
    """Whether the fp32 adapters compute in the base's bf16/fp16 (under autocast) or in fp32.

    On a GPU in the low precision: tensor cores, and no fp32 copy of each adapted layer's input.
    On a CPU in fp32, peft's default: bf16 matmul speed there depends on the CPU (native with
    AVX512-BF16 or AMX, emulated elsewhere) and even where native it is slower for small matrices
    (a 256x32 by 32x64 product: 26 us in bf16, 23 us in fp32 on an AVX512-BF16 EPYC), so fp32
    adapters are never slower than the plain way on any CPU. The frozen base runs in its own dtype
    either way, without autocast, as at inference.
    """
    return config.model.training_mode == "lora" and device.type != "cpu" and weight_dtype(config, device) != torch.float32


def _adapter_forward_in_autocast(self, *args, **kwargs):
    with torch.autocast(self.autocast_device_type, dtype=self.autocast_dtype):
        return type(self).forward(self, *args, **kwargs)


def run_adapters_in_autocast(transformer: torch.nn.Module, device_type: str, dtype: torch.dtype) -> None:
    """Run each adapted layer (frozen layer + its fp32 adapter) under autocast, and nothing else.

    The adapter's matmuls then run in bf16/fp16 with fp32 weights and gradients, while the rest of
    the base runs as it does at inference. peft's own cast of each input to the adapter's fp32 is
    turned off: under autocast it made two copies of every adapted layer's input per step (to fp32,
    then back), one of them kept for backward, 11-14% of a block's activations
    (`benchmark.saved_activation_bytes`); now the adapter reads the tensor the frozen layer keeps.
    Bound as a method (as accelerate wraps forwards), so a deepcopy rebinds it to the copy.
    """
    for module in transformer.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False
            module.autocast_device_type, module.autocast_dtype = device_type, dtype
            module.forward = MethodType(_adapter_forward_in_autocast, module)


def set_attention_backend(transformer: torch.nn.Module, name: str) -> None:
    """Use a diffusers attention backend; an unusable one (package missing, wrong GPU) is named."""
    try:
        transformer.set_attention_backend(name)
    except (ValueError, RuntimeError, ImportError) as error:
        raise ConfigError(
            f"acceleration.attention_backend {name!r} is not usable here: {error} Leave it empty to use "
            "PyTorch's scaled-dot-product attention."
        ) from None


def trainable_parameters(transformer: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [parameter for parameter in transformer.parameters() if parameter.requires_grad]


def prepare_transformer(
    transformer: torch.nn.Module,
    config: TrainerConfig,
    device: torch.device,
    gpu_setup: bool | None = None,
    quantize_exclude: list[str] = QUANTIZE_EXCLUDE,
) -> torch.nn.Module:
    """Apply quantization, LoRA and memory options to a loaded transformer; returns it on `device`.

    `gpu_setup` chooses the GPU's way: adapters under autocast (`adapters_in_low_precision`) and
    block offload (on a CUDA device). Neither needs CUDA itself, so tests run both on the CPU by
    passing True; None decides from `device`.
    """
    autocast_adapters = adapters_in_low_precision(config, device) if gpu_setup is None else (
        gpu_setup and config.model.training_mode == "lora" and weight_dtype(config, device) != torch.float32
    )
    offload = device.type == "cuda" if gpu_setup is None else gpu_setup
    if config.model.training_mode == "lora":
        choice = config.acceleration.quantization_choice
        if choice:
            quantize_transformer(transformer, choice, quantize_exclude)
        add_lora(transformer, config)
        if autocast_adapters:
            run_adapters_in_autocast(transformer, device.type, weight_dtype(config, device))
    else:
        transformer.requires_grad_(True)
    if config.optimization.enable_gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    if config.acceleration.block_offload and offload:
        # diffusers streams one block at a time to the GPU; the rest waits in pinned host memory.
        # CUDA streams overlap the copies with compute; without CUDA (tests) the copies are plain.
        transformer.enable_group_offload(
            onload_device=device, offload_device=torch.device("cpu"), offload_type="block_level",
            num_blocks_per_group=1, use_stream=device.type == "cuda",
        )
    else:
        if config.acceleration.block_offload:
            progress.say(
                "acceleration.block_offload streams blocks to a CUDA GPU; on this device the whole transformer "
                "stays in memory, so the setting changes nothing here."
            )
        transformer.to(device)
    if config.acceleration.attention_backend:
        set_attention_backend(transformer, config.acceleration.attention_backend)
    if config.acceleration.compile_with_inductor:
        transformer.compile_repeated_blocks(mode=config.acceleration.compilation_mode, dynamic=False)
    transformer.train()
    return transformer
