"""How much memory a training run will need, before it starts: the GUI shows this next to Start.

Weights and LoRA parameters are counted exactly from the transformer's shapes (built on the
`meta` device, so even 13B costs no memory) with the same LoRA targets, quantization exclusions
and dtypes the trainer uses. Activations follow a per-token model calibrated by counting the
tensors autograd keeps for backward (`saved_activation_bytes`) in diffusers' LTX block set up as
the trainer sets it up (frozen base in its own dtype, fp32 adapters computing under autocast on a
GPU and in fp32 on a CPU; the GPU setup was counted on the CPU's autocast). That count does not
depend on the device (the CPU and CUDA attention kernels both keep only q, k, v, the output and a
log-sum-exp), so the constants carry over to CUDA; what differs there is the CUDA context and the
caching allocator's slack, added as `other`.
"""

from __future__ import annotations

import fnmatch
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ltxtrainer.config import TrainerConfig
from ltxtrainer.models import ltx_video
from ltxtrainer.models.tiny import TRANSFORMER_CONFIG as TINY_TRANSFORMER_CONFIG

GB = 1e9
PROMPT_TOKENS = 128  # LTXPipeline's default max_sequence_length, what the preprocessing writes

# The config numbers of the released checkpoints (FIELD_NOTES §1); all other fields are the
# diffusers defaults, which are what those checkpoints use.
MODEL_SHAPES: dict[str, dict] = {
    "tiny": dict(TINY_TRANSFORMER_CONFIG),
    "2b": {
        "in_channels": 128, "out_channels": 128, "num_layers": 28, "num_attention_heads": 32,
        "attention_head_dim": 64, "cross_attention_dim": 2048, "caption_channels": 4096,
    },
    "13b": {
        "in_channels": 128, "out_channels": 128, "num_layers": 48, "num_attention_heads": 32,
        "attention_head_dim": 128, "cross_attention_dim": 4096, "caption_channels": 4096,
    },
}

# Bytes kept for backward per video token, per unit of model width d, per transformer block
# (saved-tensor count, diffusers 0.42, torch 2.13, fitted over token counts and widths with the
# adapter on to_q only and then on every attention projection and the feed-forward).
# The frozen bf16 base keeps 44-46 (fp32: 62-64), well above FIELD_NOTES' 17-20 bf16 elements:
# rope and the q/k RMSNorm keep fp32 copies. Steps with first-frame conditioning pass per-token
# timesteps, so the adaLN values are per token there: +16 (fp32 +32); the peak is that worst case
# whenever first_frame_conditioning_p > 0.
_BASE_PER_TOKEN_WIDTH = {2: 46.0, 4: 64.0}
_PER_TOKEN_TIMESTEP_PER_TOKEN_WIDTH = {2: 16.0, 4: 32.0}
# An adapter keeps its layer's input for its own backward (the frozen layer needs only its weight).
# Adapters computing in the base's dtype (GPU, or fp32 throughout) share it: to_q/to_k/to_v of one
# attention read one tensor, and to_out.0 reads the attention output, which attention keeps anyway.
# fp32 adapters on a bf16 base (the CPU, model_setup.adapters_in_low_precision) each keep their
# own fp32 copy of the input: 4 bytes per input feature and token, to_out.0 included.
_FP32_COPY_BYTES = 4
# Per prompt token, width and block: the cross-attention's keys and values (2 elements), +4 once
# an adapter on attn2's to_k/to_v makes them trainable.
_PROMPT_PER_TOKEN_WIDTH_ELEMENTS = 2.0
_PROMPT_TRAINABLE_KV_PER_TOKEN_WIDTH = 4.0
# optimum-quanto's linear keeps its input for backward even for a frozen weight: 5 elements per
# token and width (bf16 10, measured 10), 13 next to fp32 adapters (their copies are separate).
_QUANTO_EXTRA_ELEMENTS = 5.0
_QUANTO_EXTRA_NEXT_TO_FP32_ADAPTERS = 13.0
# With per-block checkpointing a block keeps only its input (2 bytes bf16, 4 fp32); tensors every
# block shares (the per-token timestep embedding, rope tables) add ~16 per token and width once.
_CHECKPOINT_INPUT_ELEMENTS = 1.0
_CHECKPOINT_SHARED_PER_TOKEN_WIDTH = 16.0
# The backward of one block briefly holds the gradients of its activations. A rough figure: on a
# CPU it cannot be told apart from the allocator's slack, and no GPU has measured it yet.
_BACKWARD_TRANSIENT_PER_TOKEN_WIDTH = 40.0
# CUDA: context and cuBLAS workspaces (not in max_memory_allocated, but taken from the card), and
# the caching allocator's fragmentation as a share of everything else.
CUDA_CONTEXT_BYTES = int(0.8 * GB)
CUDA_ALLOCATOR_SLACK = 0.05
# CPU: glibc keeps part of the memory freed during backward, so the process grows by more than
# the tensors alive at once; measured on the 2B shape as +27% over activations and transient at 512
# tokens (-10% at 128), so 25% of them (docs/benchmarks.md).
CPU_ALLOCATOR_SLACK = 0.25
# optimum-quanto storage per weight element: data plus scales (int8/fp8 per output row; int4/int2
# per group of 128 with a scale and a shift).
_QUANTO_BYTES_PER_ELEMENT = {
    "int8-quanto": 1.0, "fp8-quanto": 1.0, "fp8uz-quanto": 1.0, "int4-quanto": 0.5, "int2-quanto": 0.25,
}
_QUANTO_GROUP = 128
# The LTX-Video VAE (diffusers default shape) in bf16, resident once validation has run.
VAE_PARAMETERS = 419_000_000


@dataclass
class MemoryEstimate:
    weights: int
    lora_and_optimizer: int
    activations: int
    other: int
    total_bytes: int
    breakdown: dict[str, int] = field(default_factory=dict)  # bytes per item
    notes: list[str] = field(default_factory=list)
    trained_parameters: int = 0

    def to_dict(self) -> dict:
        return {
            "weights": self.weights, "lora_and_optimizer": self.lora_and_optimizer,
            "activations": self.activations, "other": self.other, "total_bytes": self.total_bytes,
            "breakdown": dict(self.breakdown), "notes": list(self.notes),
            "trained_parameters": self.trained_parameters,
        }


def resolve_transformer_config(variant_or_config: str | dict | Path) -> dict:
    """'tiny' / '2b' / '13b', a transformer config dict, or a model folder (its transformer/config.json)."""
    if isinstance(variant_or_config, dict):
        return dict(variant_or_config)
    if isinstance(variant_or_config, str) and variant_or_config.lower() in MODEL_SHAPES:
        return dict(MODEL_SHAPES[variant_or_config.lower()])
    folder = Path(variant_or_config)
    config_file = folder / "transformer" / "config.json"
    if not config_file.is_file():
        config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(
            f"{variant_or_config!s} is neither a model variant ({', '.join(MODEL_SHAPES)}) nor a model folder "
            "with transformer/config.json"
        )
    return json.loads(config_file.read_text(encoding="utf-8"))


def _meta_transformer(shape: dict):
    from diffusers import LTXVideoTransformer3DModel

    allowed = inspect.signature(LTXVideoTransformer3DModel.__init__).parameters
    with torch.device("meta"):
        return LTXVideoTransformer3DModel(**{key: value for key, value in shape.items() if key in allowed})


def _is_lora_target(module_name: str, targets: list[str]) -> bool:
    """peft's rule for a list of target names: the full name or its last dotted parts match."""
    return any(module_name == target or module_name.endswith("." + target) for target in targets)


def _is_quantized(module_name: str) -> bool:
    from ltxtrainer.training.model_setup import QUANTIZE_EXCLUDE

    return not any(fnmatch.fnmatch(module_name, pattern) for pattern in QUANTIZE_EXCLUDE)


def _adapter_input(module_name: str) -> tuple[str, str | None]:
    """(what the layer reads: "video" or "prompt", the key of the tensor its adapter shares or None
    when attention keeps that tensor anyway) for an adapted linear of the transformer."""
    parent, _, leaf = module_name.rpartition(".")
    if leaf == "0" and parent.endswith(".to_out"):
        return "video", None
    if parent.endswith(".attn2") and leaf in ("to_k", "to_v"):
        return "prompt", parent + ".kv"
    if parent.endswith(".attn1") and leaf in ("to_q", "to_k", "to_v"):
        return "video", parent + ".qkv"
    return "video", module_name


def count_parameters(shape: dict, lora_targets: list[str], rank: int) -> dict[str, int]:
    """Exact counts: all base parameters, the quantizable linear weights, the LoRA parameters, and
    the input features of the adapted layers (by what they read; shared tensors once, and each)."""
    transformer = _meta_transformer(shape)
    counts = {"base": 0, "quantizable_linear_weights": 0, "quantized_rows": 0, "lora": 0, "lora_video_modules": 0,
              "video_inputs_shared": 0, "video_inputs_each": 0, "prompt_inputs_shared": 0, "prompt_inputs_each": 0}
    counts["base"] = sum(parameter.numel() for parameter in transformer.parameters())
    shared: set[str] = set()
    for name, module in transformer.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if _is_quantized(name):
            counts["quantizable_linear_weights"] += module.weight.numel()
            counts["quantized_rows"] += module.out_features
        if _is_lora_target(name, lora_targets):
            counts["lora"] += rank * (module.in_features + module.out_features)
            reads, key = _adapter_input(name)
            counts[f"{reads}_inputs_each"] += module.in_features
            if key is not None and key not in shared:
                shared.add(key)
                counts[f"{reads}_inputs_shared"] += module.in_features
            if reads == "video":
                counts["lora_video_modules"] += 1
    return counts


def _weight_bytes(counts: dict[str, int], element: int, quantization: str | None) -> int:
    if not quantization:
        return counts["base"] * element
    quantized = counts["quantizable_linear_weights"]
    per_element = _QUANTO_BYTES_PER_ELEMENT[quantization]
    if per_element >= 1.0:
        scales = counts["quantized_rows"] * element
    else:
        scales = int(quantized / _QUANTO_GROUP * 2 * element)
    return int((counts["base"] - quantized) * element + quantized * per_element + scales)


def estimate_memory(
    config: TrainerConfig,
    width: int,
    height: int,
    frames: int,
    variant_or_transformer_config: str | dict | Path,
    batch_size: int | None = None,
    device_type: str = "cuda",
    vae_resident: bool | None = None,
) -> MemoryEstimate:
    """Peak memory of one training step of `config` at WxHxF on a `device_type` device.

    `vae_resident` defaults to whether validation videos are on (the VAE stays loaded after the
    first validation); the text encoder is never resident during training (the trainer encodes
    validation prompts on the CPU first and frees it).
    """
    shape = resolve_transformer_config(variant_or_transformer_config)
    batch = batch_size or config.optimization.batch_size
    tokens = ltx_video.token_count(width, height, frames) * batch
    from ltxtrainer.training.model_setup import adapters_in_low_precision, weight_dtype

    device = torch.device(device_type)
    dtype = weight_dtype(config, device)
    element = torch.empty((), dtype=dtype).element_size()
    model_width = shape.get("num_attention_heads", 32) * shape.get("attention_head_dim", 64)
    layers = shape.get("num_layers", 28)
    lora = config.lora
    lora_mode = config.model.training_mode == "lora"
    quantization = config.acceleration.quantization_choice if lora_mode else None
    rank = lora.rank if lora_mode and lora else 0
    counts = count_parameters(shape, lora.target_modules if lora_mode and lora else [], rank)
    notes: list[str] = []

    weights = _weight_bytes(counts, element, quantization)
    trained = counts["lora"] if lora_mode else counts["base"]
    adapter_bytes = 4  # trained weights stay fp32 (model_setup.add_lora / weight_dtype)
    optimizer_state = 2 if config.optimization.optimizer_type == "adamw8bit" else 8
    lora_and_optimizer = trained * (adapter_bytes * 2 + optimizer_state)
    if not lora_mode:
        weights = 0  # the trained weights are the base, counted with their gradients and moments

    blocks = max(layers, 1)
    # Adapters computing in the base's bf16/fp16 share its tensors and keep bf16 casts of their
    # weights; fp32 adapters on a bf16/fp16 base (the CPU) each keep an fp32 copy of their input.
    low_precision_adapters = adapters_in_low_precision(config, device)
    copies = lora_mode and element == 2 and not low_precision_adapters
    video_inputs = counts["video_inputs_each"] * _FP32_COPY_BYTES if copies else counts["video_inputs_shared"] * element
    prompt_inputs = counts["prompt_inputs_each"] * _FP32_COPY_BYTES if copies else counts["prompt_inputs_shared"] * element
    adapter_element = 4 if copies else element  # the adapters' rank-sized intermediate results
    per_block = _BASE_PER_TOKEN_WIDTH[element] + video_inputs / blocks / model_width
    if config.first_frame_conditioning_p > 0:
        per_block += _PER_TOKEN_TIMESTEP_PER_TOKEN_WIDTH[element]
    if quantization:
        per_block += _QUANTO_EXTRA_NEXT_TO_FP32_ADAPTERS if copies else _QUANTO_EXTRA_ELEMENTS * element
    per_prompt = _PROMPT_PER_TOKEN_WIDTH_ELEMENTS * element + prompt_inputs / blocks / model_width
    if counts["prompt_inputs_each"]:
        per_prompt += _PROMPT_TRAINABLE_KV_PER_TOKEN_WIDTH
    prompt_tokens = PROMPT_TOKENS * batch
    weight_casts = counts["lora"] * element if low_precision_adapters else 0
    block_saved = (
        tokens * (model_width * per_block + counts["lora_video_modules"] / blocks * rank * adapter_element)
        + prompt_tokens * model_width * per_prompt
        + weight_casts / blocks
    )
    checkpointing = config.optimization.enable_gradient_checkpointing
    if checkpointing:
        kept = tokens * model_width * (layers * _CHECKPOINT_INPUT_ELEMENTS * element + _CHECKPOINT_SHARED_PER_TOKEN_WIDTH)
        activations = int(kept + block_saved)  # plus one block recomputed during its backward
    else:
        activations = int(block_saved * layers)

    transient = int(tokens * model_width * _BACKWARD_TRANSIENT_PER_TOKEN_WIDTH * element / 2)
    breakdown = {
        "transformer_weights": weights,
        "trained_weights_and_grads": trained * adapter_bytes * 2,
        "optimizer_state": trained * optimizer_state,
        "saved_activations": activations,
        "adapter_weight_casts": int(weight_casts if not checkpointing else weight_casts / blocks),
        **({"checkpoint_inputs": int(kept), "recomputed_block": int(block_saved)} if checkpointing else {}),
        "backward_transient": transient,
    }
    if vae_resident is None:
        vae_resident = bool(config.validation.prompts and config.validation.interval)
    if vae_resident:
        breakdown["vae_weights"] = VAE_PARAMETERS * element
        notes.append("Validation videos need extra memory while they decode; that peak is not included.")
    if config.acceleration.block_offload and device_type == "cuda":
        streamed = weights - weights // max(layers, 1) * 2  # two blocks on the card at a time
        breakdown["offloaded_to_host"] = streamed
        weights -= streamed
        breakdown["transformer_weights"] = weights
        notes.append(f"Block offload keeps {streamed / GB:.1f} GB of weights in host memory.")
    if device_type == "cpu":
        breakdown["allocator_slack"] = int((activations + transient) * CPU_ALLOCATOR_SLACK)
    if device_type == "cuda":
        tensors = weights + lora_and_optimizer + activations + transient + breakdown.get("vae_weights", 0)
        breakdown["allocator_slack"] = int(tensors * CUDA_ALLOCATOR_SLACK)
        breakdown["cuda_context"] = CUDA_CONTEXT_BYTES
    other = transient + sum(breakdown.get(key, 0) for key in ("vae_weights", "allocator_slack", "cuda_context"))
    total = weights + lora_and_optimizer + activations + other
    return MemoryEstimate(weights, lora_and_optimizer, activations, other, int(total), breakdown, notes, trained)


def fits(estimate: MemoryEstimate, free_bytes: int | None) -> tuple[bool, str]:
    """(fits, one plain sentence) for showing next to the Start button."""
    need = estimate.total_bytes / GB
    if free_bytes is None:
        return True, f"Needs about {need:.1f} GB; no GPU was found to compare with."
    have = free_bytes / GB
    parts = (
        f"weights {estimate.weights / GB:.1f} GB, LoRA and optimizer {estimate.lora_and_optimizer / GB:.1f} GB, "
        f"activations {estimate.activations / GB:.1f} GB, other {estimate.other / GB:.1f} GB"
    )
    if estimate.total_bytes <= free_bytes * 0.95:
        return True, f"Fits: needs about {need:.1f} GB of {have:.1f} GB free ({parts})."
    advice = (
        "turn on gradient checkpointing, int8-quanto quantization or block offload, "
        "or train at a smaller resolution, fewer frames, batch size 1 or a lower LoRA rank"
    )
    if estimate.total_bytes <= free_bytes:
        return True, f"Tight: needs about {need:.1f} GB of {have:.1f} GB free ({parts}); if it runs out, {advice}."
    return False, f"Does not fit: needs about {need:.1f} GB but only {have:.1f} GB is free ({parts}). To fit, {advice}."


def gpu_memory_bytes(device_index: int = 0) -> tuple[int, int] | None:
    """(free, total) bytes of the GPU, or None without a usable one."""
    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info(device_index)
    return int(free), int(total)


def saved_activation_bytes(model: torch.nn.Module, inputs: dict) -> int:
    """Bytes of the distinct tensors autograd keeps for backward in one forward, weights excluded.

    This is what calibrated the constants above; tests use it to check the estimate still matches
    the installed diffusers and torch.
    """
    weights = set()
    for parameter in model.parameters():
        try:
            weights.add(parameter.untyped_storage().data_ptr())
        except (RuntimeError, NotImplementedError):  # quanto's quantized weights have no plain storage
            continue
    kept: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        try:
            storage = tensor.untyped_storage()
            pointer = storage.data_ptr()
        except (RuntimeError, NotImplementedError):
            return tensor
        if pointer not in weights:
            kept[pointer] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(**inputs)
    return sum(kept.values())
