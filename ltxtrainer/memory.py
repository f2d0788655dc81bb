"""How much memory a training run will need, before it starts: the GUI shows this next to Start.

Plain arithmetic on plain numbers, with no torch, so the GUI process can ask it (the GUI never
imports torch or peft: those live in the training subprocesses). The inputs are the transformer's
shape (its config.json, or the built-in table of the released 2B/13B and LTX-2/2.3 shapes and our
tiny ones), the clip size, and the run's settings (`TrainingSetup`: LoRA rank and targets,
quantization, precision, gradient checkpointing, block offload, batch size, optimizer, and for
LTX-2 whether the audio stream trains too).

Weights and LoRA parameters are counted exactly from the shape, module by module as diffusers'
`LTXVideoTransformer3DModel` or `LTX2VideoTransformer3DModel` builds them (the family is told
by the config: LTX-2 has an audio stream), with peft's target-name rule and the family's
quantization exclusions (tests check the counts against the model built on `meta` and against
peft). LTX-2's activations are counted per token of each stream (video, audio, and the 1024
caption tokens of each stream's prompt attention), with constants counted the same way. Activations follow a per-token model calibrated by counting the tensors autograd keeps for
backward (`ltxtrainer.benchmark.saved_activation_bytes`) in diffusers' LTX block set up as the
trainer sets it up (frozen base in its own dtype, fp32 adapters computing under autocast on a
GPU and in fp32 on a CPU; the GPU setup was counted on the CPU's autocast). That count does not
depend on the device (the CPU and CUDA attention kernels both keep only q, k, v, the output and a
log-sum-exp), so the constants carry over to CUDA; what differs there is the CUDA context and the
caching allocator's slack, added as `other`.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from ltxtrainer.config import TrainerConfig
from ltxtrainer.models.ltx2_targets import CROSS_MODAL_ATTENTION

GB = 1e9
PROMPT_TOKENS = 128  # LTXPipeline's default max_sequence_length, what the preprocessing writes
# The VAE's compression (FIELD_NOTES §1), as ltxtrainer.models.ltx_video has it (that module
# imports torch; a test checks the two agree).
SPATIAL_COMPRESSION = 32
TEMPORAL_COMPRESSION = 8
# The trainer's quantization exclusions, as ltxtrainer.training.model_setup.QUANTIZE_EXCLUDE has
# them (a test checks they are the same list).
QUANTIZE_EXCLUDE = ("proj_in", "proj_out", "time_embed*", "caption_projection*", "norm_out", "scale_shift_table")

# diffusers' LTXVideoTransformer3DModel defaults: what the released checkpoints use for every
# field their config.json does not name.
_DIFFUSERS_DEFAULTS: dict = {
    "in_channels": 128, "out_channels": 128, "num_attention_heads": 32, "attention_head_dim": 64,
    "cross_attention_dim": 2048, "num_layers": 28, "caption_channels": 4096, "qk_norm": "rms_norm_across_heads",
    "norm_elementwise_affine": False, "attention_bias": True, "attention_out_bias": True,
}
# The config numbers of the released checkpoints (FIELD_NOTES §1) and of our tiny test model
# (ltxtrainer.models.tiny.TRANSFORMER_CONFIG, which imports torch; a test checks they agree).
MODEL_SHAPES: dict[str, dict] = {
    "tiny": {
        "in_channels": 16, "out_channels": 16, "patch_size": 1, "patch_size_t": 1, "num_attention_heads": 2,
        "attention_head_dim": 16, "cross_attention_dim": 32, "num_layers": 2, "caption_channels": 32,
        "activation_fn": "gelu-approximate", "qk_norm": "rms_norm_across_heads", "norm_elementwise_affine": False,
        "norm_eps": 1e-6, "attention_bias": True, "attention_out_bias": True,
    },
    "2b": {
        "in_channels": 128, "out_channels": 128, "num_layers": 28, "num_attention_heads": 32,
        "attention_head_dim": 64, "cross_attention_dim": 2048, "caption_channels": 4096,
    },
    "13b": {
        "in_channels": 128, "out_channels": 128, "num_layers": 48, "num_attention_heads": 32,
        "attention_head_dim": 128, "cross_attention_dim": 4096, "caption_channels": 4096,
    },
    # LTX-2 (19 B) and LTX-2.3 (22 B): the transformer configs of diffusers'
    # scripts/convert_ltx2_to_diffusers.py (`get_ltx2_transformer_config`, versions "2.0" and
    # "2.3"), the fields that decide the shape; everything else is LTX2VideoTransformer3DModel's
    # default, which those configs repeat.
    "ltx2": {
        "_class_name": "LTX2VideoTransformer3DModel", "in_channels": 128, "out_channels": 128,
        "num_attention_heads": 32, "attention_head_dim": 128, "cross_attention_dim": 4096,
        "audio_in_channels": 128, "audio_out_channels": 128, "audio_num_attention_heads": 32,
        "audio_attention_head_dim": 64, "audio_cross_attention_dim": 2048, "num_layers": 48,
        "caption_channels": 3840, "gated_attn": False, "cross_attn_mod": False, "audio_gated_attn": False,
        "audio_cross_attn_mod": False, "use_prompt_embeddings": True, "rope_type": "split",
    },
    "ltx2.3": {
        "_class_name": "LTX2VideoTransformer3DModel", "in_channels": 128, "out_channels": 128,
        "num_attention_heads": 32, "attention_head_dim": 128, "cross_attention_dim": 4096,
        "audio_in_channels": 128, "audio_out_channels": 128, "audio_num_attention_heads": 32,
        "audio_attention_head_dim": 64, "audio_cross_attention_dim": 2048, "num_layers": 48,
        "caption_channels": 3840, "gated_attn": True, "cross_attn_mod": True, "audio_gated_attn": True,
        "audio_cross_attn_mod": True, "use_prompt_embeddings": False, "rope_type": "split",
        "perturbed_attn": True,
    },
    # ltxtrainer.models.tiny_ltx2.transformer_config("2.0") (that module imports torch; a test
    # checks they agree).
    "tiny-ltx2": {
        "_class_name": "LTX2VideoTransformer3DModel", "in_channels": 16, "out_channels": 16, "patch_size": 1,
        "patch_size_t": 1, "num_attention_heads": 2, "attention_head_dim": 16, "cross_attention_dim": 32,
        "vae_scale_factors": (8, 32, 32), "gated_attn": False, "cross_attn_mod": False, "audio_in_channels": 32,
        "audio_out_channels": 32, "audio_num_attention_heads": 2, "audio_attention_head_dim": 8,
        "audio_cross_attention_dim": 16, "audio_scale_factor": 4, "audio_sampling_rate": 16000,
        "audio_hop_length": 160, "audio_gated_attn": False, "audio_cross_attn_mod": False, "num_layers": 2,
        "caption_channels": 32, "use_prompt_embeddings": True,
    },
}
LTX2_CLASS = "LTX2VideoTransformer3DModel"
# diffusers' LTX2VideoTransformer3DModel defaults (0.42), for fields a config.json leaves out.
_LTX2_DEFAULTS: dict = {
    "in_channels": 128, "out_channels": 128, "num_attention_heads": 32, "attention_head_dim": 128,
    "cross_attention_dim": 4096, "gated_attn": False, "cross_attn_mod": False, "audio_in_channels": 128,
    "audio_out_channels": 128, "audio_num_attention_heads": 32, "audio_attention_head_dim": 64,
    "audio_cross_attention_dim": 2048, "audio_gated_attn": False, "audio_cross_attn_mod": False, "num_layers": 48,
    "norm_elementwise_affine": False, "caption_channels": 3840, "attention_bias": True, "attention_out_bias": True,
    "use_prompt_embeddings": True, "ff_bias": True, "audio_ff_bias": True, "use_prompt_adaln_single": True,
    "use_keyframes_abs_pos_embedding": False, "audio_sampling_rate": 16000, "audio_hop_length": 160,
    "audio_scale_factor": 4,
}
# LTX-2's quantization exclusions, as ltxtrainer.models.ltx2.QUANTIZE_EXCLUDE has them (a test
# checks they are the same list): everything outside the blocks, both streams.
LTX2_QUANTIZE_EXCLUDE = (
    "proj_in", "audio_proj_in", "proj_out", "audio_proj_out", "norm_out", "audio_norm_out",
    "time_embed*", "audio_time_embed*", "av_cross_attn_*", "prompt_adaln*", "audio_prompt_adaln*",
    "caption_projection*", "audio_caption_projection*", "scale_shift_table", "audio_scale_shift_table",
)
# The text length every LTX-2 step attends to: LTX2Pipeline pads Gemma to 1024 tokens and the
# connectors' registers fill every position (ltx2.TEXT_MAX_SEQUENCE_LENGTH).
LTX2_TEXT_TOKENS = 1024
# The audio stream of a joint run: audio latent frames per second (16 kHz / hop 160 / 4 = 25),
# over the clip's frames at LTX2Pipeline's default frame rate. A video-only run feeds one token.
LTX2_FPS = 24.0
_TIMESTEP_CHANNELS = 256  # diffusers' PixArtAlphaCombinedTimestepSizeEmbeddings sinusoid width
_FEED_FORWARD_MULT = 4  # diffusers' FeedForward default

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
# LTX-2 (saved-tensor count, diffusers 0.42, torch 2.13, on a 2-block LTX-2 at 1/8 of the real
# widths with their ratios: audio width = video width / 2, text widths = stream widths), per token
# of each stream, per unit of that stream's width, per block, adapters not included (they follow
# the rules above, stream by stream):
# - video: 54 in bf16 (70 fp32); a joint step runs the audio<->video attention: +17 (fp32 +19);
# - audio: 56 in bf16 (74 fp32); a video-only step feeds one dummy token;
# - text: every step attends to 1024 caption tokens in both streams; the video prompt attention
#   keeps its keys and values (2 elements, as 0.9), the audio one keeps 1 element in a joint step
#   (the isolated video-only step skips it); trainable keys/values add 4 per width next to fp32
#   adapter copies, 3 next to bf16 adapters, 2 in fp32;
# - adapters inside the audio stream (audio attention, audio_ff) make the whole audio stream
#   trainable: +26 per audio token and width, and the audio prompt keeps 2 elements like the video
#   one (also in a video-only step); adapters only on the audio<->video attention add +6;
# - LTX-2.3: per-token timesteps modulate 9 vectors instead of 6 (+24 rather than +16); with bf16
#   adapters (the GPU's setup) its gated attention keeps +4.2 per video token and width and +1 per
#   text token and width (measured; the CPU's fp32-copy setup shows neither);
# - optimum-quanto: as 0.9 on the video stream, +4 more in a joint step; +14 on the audio stream;
# - per-block checkpointing keeps each block's inputs (1 element per token and width of either
#   stream), plus rope and timestep tables shared by the blocks (2 per width, 16 with per-token
#   timesteps) and 1.5 elements per text token and width, once.
_LTX2_VIDEO_PER_TOKEN_WIDTH = {2: 54.2, 4: 70.2}
_LTX2_JOINT_VIDEO_PER_TOKEN_WIDTH = {2: 17.1, 4: 19.1}
_LTX2_AUDIO_PER_TOKEN_WIDTH = {2: 56.4, 4: 74.4}
_LTX2_JOINT_AUDIO_TEXT_ELEMENTS = 1.0
_LTX2_TRAINABLE_AUDIO_PER_TOKEN_WIDTH = 26.0
_LTX2_CROSS_MODAL_AUDIO_PER_TOKEN_WIDTH = 6.0
_LTX2_TRAINABLE_KV_COPIES = 4.0
_LTX2_TRAINABLE_KV_SHARED = {2: 3.0, 4: 2.0}
_LTX2_JOINT_QUANTO_EXTRA = 4.0
_LTX2_AUDIO_QUANTO_EXTRA = 14.0
_LTX2_GATED_VIDEO_PER_TOKEN_WIDTH = 4.2
_LTX2_GATED_TEXT_PER_TOKEN_WIDTH = 1.0
_LTX2_CHECKPOINT_SHARED = 2.0
_LTX2_CHECKPOINT_SHARED_FIRST_FRAME = 16.0
_LTX2_CHECKPOINT_TEXT_ELEMENTS = 1.5
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
# The LTX-Video VAE (diffusers default shape), resident once validation has run, and our tiny
# test VAE (ltxtrainer.models.tiny.VAE_CONFIG; a test counts both on `meta`). The transformer's
# latent channels tell them apart: 128 for every released VAE, 16 for the tiny one.
VAE_PARAMETERS = 419_193_649
TINY_VAE_PARAMETERS = 461_229
RELEASED_LATENT_CHANNELS = 128




@dataclass(frozen=True)
class TrainingSetup:
    """The settings of a run that decide its memory, as plain values (`from_config` reads a config)."""

    training_mode: str = "lora"  # "lora" or "full"
    rank: int = 32
    lora_targets: tuple[str, ...] = ("to_k", "to_q", "to_v", "to_out.0")
    quantization: str | None = None  # an optimum-quanto choice such as "int8-quanto", or None
    mixed_precision: str | None = "bf16"  # "bf16", "fp16" or "no"
    optimizer: str = "adamw"
    batch_size: int = 1
    gradient_checkpointing: bool = False
    block_offload: bool = False
    first_frame_conditioning: bool = True  # first_frame_conditioning_p > 0: per-token timesteps on some steps
    validation_videos: bool = False  # the VAE stays loaded after the first validation
    with_audio: bool = False  # LTX-2: the audio stream trains with the video (model.with_audio)
    # IC-LoRA (conditioning.mode reference_video): the reference's clean tokens join every step's
    # sequence, at 1/N of the clip's width and height; None for a run without references.
    reference_downscale: int | None = None

    @classmethod
    def from_config(cls, config: TrainerConfig) -> TrainingSetup:
        lora_mode = config.model.training_mode == "lora"
        lora = config.lora if lora_mode else None
        return cls(
            training_mode=config.model.training_mode,
            rank=lora.rank if lora else 0,
            lora_targets=tuple(lora.target_modules) if lora else (),
            quantization=config.acceleration.quantization_choice if lora_mode else None,
            mixed_precision=config.acceleration.mixed_precision_mode,
            optimizer=config.optimization.optimizer_type,
            batch_size=config.optimization.batch_size,
            gradient_checkpointing=config.optimization.enable_gradient_checkpointing,
            block_offload=config.acceleration.block_offload,
            first_frame_conditioning=config.first_frame_conditioning_p > 0,
            validation_videos=bool(config.validation.prompts and config.validation.interval),
            with_audio=config.model.with_audio,
            reference_downscale=(
                config.conditioning.reference_downscale_factor
                if config.conditioning is not None and config.conditioning.mode == "reference_video" else None
            ),
        )


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


def token_count(width: int, height: int, frames: int) -> int:
    """Video tokens of a WxHxF clip (ltx_video.token_count: 1x1x1 patches of the latent)."""
    return ((frames - 1) // TEMPORAL_COMPRESSION + 1) * (height // SPATIAL_COMPRESSION) * (width // SPATIAL_COMPRESSION)


def ltx2_audio_tokens(frames: int, with_audio: bool, fps: float = LTX2_FPS) -> int:
    """Audio tokens of an LTX-2 step: 25 a second of the clip (ltx2.audio_latent_frames) in a joint
    run; one dummy token in a video-only run (ltx2.predict)."""
    if not with_audio:
        return 1
    per_second = _LTX2_DEFAULTS["audio_sampling_rate"] / _LTX2_DEFAULTS["audio_hop_length"] / 4.0
    return max(1, round(frames / fps * per_second))


def weight_element_bytes(setup: TrainingSetup, device_type: str) -> int:
    """Bytes per frozen weight element: model_setup.weight_dtype's rule (fp16 falls back to fp32 off CUDA)."""
    if setup.training_mode == "full" or setup.mixed_precision in (None, "no"):
        return 4
    if setup.mixed_precision == "fp16" and device_type != "cuda":
        return 4
    return 2


def adapters_in_low_precision(setup: TrainingSetup, device_type: str) -> bool:
    """model_setup.adapters_in_low_precision's rule: on a GPU the adapters compute in the base's bf16/fp16."""
    return setup.training_mode == "lora" and device_type != "cpu" and weight_element_bytes(setup, device_type) != 4


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


def _linears(shape: dict) -> Iterator[tuple[str, int, int, bool]]:
    """(module name, in features, out features, bias) of every nn.Linear of diffusers'
    LTXVideoTransformer3DModel (0.42), in its own names, so peft's and quanto's name rules apply."""
    width = shape["num_attention_heads"] * shape["attention_head_dim"]
    bias, out_bias = shape["attention_bias"], shape["attention_out_bias"]
    yield "proj_in", shape["in_channels"], width, True
    yield "time_embed.emb.timestep_embedder.linear_1", _TIMESTEP_CHANNELS, width, True
    yield "time_embed.emb.timestep_embedder.linear_2", width, width, True
    yield "time_embed.linear", width, 6 * width, True  # adaLN: shift, scale and gate of two sub-layers
    yield "caption_projection.linear_1", shape["caption_channels"], width, True
    yield "caption_projection.linear_2", width, width, True
    for index in range(shape["num_layers"]):
        block = f"transformer_blocks.{index}"
        for attention, key_features in (("attn1", width), ("attn2", shape["cross_attention_dim"])):
            yield f"{block}.{attention}.to_q", width, width, bias
            yield f"{block}.{attention}.to_k", key_features, width, bias
            yield f"{block}.{attention}.to_v", key_features, width, bias
            yield f"{block}.{attention}.to_out.0", width, width, out_bias
        yield f"{block}.ff.net.0.proj", width, _FEED_FORWARD_MULT * width, True
        yield f"{block}.ff.net.2", _FEED_FORWARD_MULT * width, width, True
    yield "proj_out", width, shape["out_channels"], True


def _other_parameters(shape: dict) -> int:
    """Parameters outside the linears: adaLN tables, the q/k RMSNorms, the blocks' optional norm weights."""
    width = shape["num_attention_heads"] * shape["attention_head_dim"]
    per_block = 6 * width + 2 * 2 * width  # scale_shift_table; attn1/attn2 norm_q and norm_k
    if shape["norm_elementwise_affine"]:
        per_block += 2 * width  # norm1, norm2
    return 2 * width + shape["num_layers"] * per_block  # the output's scale_shift_table; norm_out has none


def is_ltx2(shape: dict) -> bool:
    """An LTX-2 transformer config (its class name, or the audio stream only LTX-2 has)."""
    return shape.get("_class_name") == LTX2_CLASS or "audio_in_channels" in shape


def full_shape(shape: dict) -> dict:
    """The config with diffusers' defaults of its family filled in."""
    return {**(_LTX2_DEFAULTS if is_ltx2(shape) else _DIFFUSERS_DEFAULTS), **shape}


def _attention(name: str, query: int, heads: int, head_dim: int, keys: int, shape: dict, gated: bool):
    """diffusers' LTX2Attention: q from the query stream, k/v from `keys` features, per-head gates (2.3)."""
    inner = heads * head_dim
    yield f"{name}.to_q", query, inner, shape["attention_bias"]
    yield f"{name}.to_k", keys, inner, shape["attention_bias"]
    yield f"{name}.to_v", keys, inner, shape["attention_bias"]
    yield f"{name}.to_out.0", inner, query, shape["attention_out_bias"]
    if gated:
        yield f"{name}.to_gate_logits", query, heads, True


def _adaln(name: str, width: int, outputs: int):
    """LTX2AdaLayerNormSingle: a timestep MLP, then `outputs` modulation vectors of `width`."""
    yield f"{name}.emb.timestep_embedder.linear_1", _TIMESTEP_CHANNELS, width, True
    yield f"{name}.emb.timestep_embedder.linear_2", width, width, True
    yield f"{name}.linear", width, outputs * width, True


def _ltx2_linears(shape: dict) -> Iterator[tuple[str, int, int, bool]]:
    """(module name, in features, out features, bias) of every nn.Linear of diffusers'
    LTX2VideoTransformer3DModel (0.42): both streams, their prompt and cross-modal attention."""
    video = shape["num_attention_heads"] * shape["attention_head_dim"]
    audio = shape["audio_num_attention_heads"] * shape["audio_attention_head_dim"]
    video_heads, video_head_dim = shape["num_attention_heads"], shape["attention_head_dim"]
    audio_heads, audio_head_dim = shape["audio_num_attention_heads"], shape["audio_attention_head_dim"]
    video_gated, audio_gated = shape["gated_attn"], shape["audio_gated_attn"]
    video_mod, audio_mod = shape["cross_attn_mod"], shape["audio_cross_attn_mod"]
    yield "proj_in", shape["in_channels"], video, True
    yield "audio_proj_in", shape["audio_in_channels"], audio, True
    if shape["use_prompt_embeddings"]:  # LTX-2.0; 2.3 projects in the connectors instead
        yield "caption_projection.linear_1", shape["caption_channels"], video, True
        yield "caption_projection.linear_2", video, video, True
        yield "audio_caption_projection.linear_1", shape["caption_channels"], audio, True
        yield "audio_caption_projection.linear_2", audio, audio, True
    yield from _adaln("time_embed", video, 9 if video_mod else 6)
    yield from _adaln("audio_time_embed", audio, 9 if audio_mod else 6)
    yield from _adaln("av_cross_attn_video_scale_shift", video, 4)
    yield from _adaln("av_cross_attn_audio_scale_shift", audio, 4)
    yield from _adaln("av_cross_attn_video_a2v_gate", video, 1)
    yield from _adaln("av_cross_attn_audio_v2a_gate", audio, 1)
    if (video_mod or audio_mod) and shape["use_prompt_adaln_single"]:
        yield from _adaln("prompt_adaln", video, 2)
        yield from _adaln("audio_prompt_adaln", audio, 2)
    for index in range(shape["num_layers"]):
        block = f"transformer_blocks.{index}"
        yield from _attention(f"{block}.attn1", video, video_heads, video_head_dim, video, shape, video_gated)
        yield from _attention(f"{block}.audio_attn1", audio, audio_heads, audio_head_dim, audio, shape, audio_gated)
        yield from _attention(
            f"{block}.attn2", video, video_heads, video_head_dim, shape["cross_attention_dim"], shape, video_gated)
        yield from _attention(f"{block}.audio_attn2", audio, audio_heads, audio_head_dim,
                              shape["audio_cross_attention_dim"], shape, audio_gated)
        # audio<->video attention runs at the audio stream's heads in both directions
        yield from _attention(
            f"{block}.audio_to_video_attn", video, audio_heads, audio_head_dim, audio, shape, video_gated)
        yield from _attention(
            f"{block}.video_to_audio_attn", audio, audio_heads, audio_head_dim, video, shape, audio_gated)
        yield f"{block}.ff.net.0.proj", video, _FEED_FORWARD_MULT * video, shape["ff_bias"]
        yield f"{block}.ff.net.2", _FEED_FORWARD_MULT * video, video, shape["ff_bias"]
        yield f"{block}.audio_ff.net.0.proj", audio, _FEED_FORWARD_MULT * audio, shape["audio_ff_bias"]
        yield f"{block}.audio_ff.net.2", _FEED_FORWARD_MULT * audio, audio, shape["audio_ff_bias"]
    yield "proj_out", video, shape["out_channels"] or shape["in_channels"], True
    yield "audio_proj_out", audio, shape["audio_out_channels"] or shape["audio_in_channels"], True


def _ltx2_other_parameters(shape: dict) -> int:
    """LTX-2's parameters outside the linears: the q/k RMSNorms of every attention (affine in
    LTX2Attention whatever the config says), the blocks' and the output's modulation tables."""
    video = shape["num_attention_heads"] * shape["attention_head_dim"]
    audio = shape["audio_num_attention_heads"] * shape["audio_attention_head_dim"]
    video_mod, audio_mod = shape["cross_attn_mod"], shape["audio_cross_attn_mod"]
    # norm_q + norm_k at each attention's inner width: attn1, attn2 (video); the other four audio
    per_block = 2 * (2 * video + 4 * audio)
    per_block += (9 if video_mod else 6) * video + (9 if audio_mod else 6) * audio  # scale_shift_tables
    if video_mod or audio_mod:
        per_block += 2 * video + 2 * audio  # prompt_scale_shift_table, audio_prompt_scale_shift_table
    per_block += 5 * video + 5 * audio  # the a2v/v2a cross-attention tables
    if shape["norm_elementwise_affine"]:
        per_block += 4 * video + 4 * audio  # norm1-3 and the cross-modal norm of each stream
    top = 2 * video + 2 * audio  # the output scale_shift_tables
    if shape["use_keyframes_abs_pos_embedding"]:
        top += video
    return top + shape["num_layers"] * per_block


def _is_lora_target(module_name: str, targets: tuple[str, ...] | list[str]) -> bool:
    """peft's rule for a list of target names: the full name or its last dotted parts match."""
    return any(module_name == target or module_name.endswith("." + target) for target in targets)


def _is_quantized(module_name: str, exclude: tuple[str, ...] = QUANTIZE_EXCLUDE) -> bool:
    """optimum-quanto's rule: a module is left alone when its name matches an `exclude` pattern."""
    return not any(fnmatch.fnmatch(module_name, pattern) for pattern in exclude)


# What each LTX-2 attention reads: (its query stream, its key/value stream).
_LTX2_ATTENTION_STREAMS = {
    "attn1": ("video", "video"), "audio_attn1": ("audio", "audio"), "attn2": ("video", "prompt"),
    "audio_attn2": ("audio", "audio_prompt"), "audio_to_video_attn": ("video", "audio"),
    "video_to_audio_attn": ("audio", "video"),
}
STREAMS = ("video", "prompt", "audio", "audio_prompt")
_AUDIO_STREAM_MODULES = ("audio_attn1", "audio_attn2", "audio_ff")


def _adapter_input(module_name: str) -> tuple[str, str | None]:
    """(the token stream the layer reads: "video", "prompt", "audio" or "audio_prompt"; the key of
    the tensor its adapter shares with others, or None when attention keeps that tensor anyway)
    for an adapted linear of either family's transformer."""
    parent, _, leaf = module_name.rpartition(".")
    if leaf == "0" and parent.endswith(".to_out"):
        attention = parent.rpartition(".")[0].rpartition(".")[2]
        return _LTX2_ATTENTION_STREAMS.get(attention, ("video", ""))[0], None
    attention = parent.rpartition(".")[2]
    if attention in _LTX2_ATTENTION_STREAMS:
        query, keys = _LTX2_ATTENTION_STREAMS[attention]
        if leaf in ("to_k", "to_v"):
            return keys, parent + (".q" if keys == query else ".kv")
        return query, parent + ".q"  # to_q, to_gate_logits
    if ".audio_ff." in module_name:
        return "audio", module_name
    return "video", module_name


def count_parameters(
    shape: dict, lora_targets: tuple[str, ...] | list[str], rank: int, modalities_isolated: bool = False
) -> dict[str, int]:
    """Exact counts: all base parameters, the quantizable linear weights, the LoRA parameters, and
    per token stream the input features of the adapted layers (shared tensors once, and each) and
    the number of adapters reading it. `modalities_isolated` (an LTX-2 video-only step): the
    audio<->video attention does not run, so its adapters keep no inputs."""
    shape = full_shape(shape)
    ltx2 = is_ltx2(shape)
    linears = _ltx2_linears(shape) if ltx2 else _linears(shape)
    exclude = LTX2_QUANTIZE_EXCLUDE if ltx2 else QUANTIZE_EXCLUDE
    counts = {"base": _ltx2_other_parameters(shape) if ltx2 else _other_parameters(shape),
              "quantizable_linear_weights": 0, "quantized_rows": 0, "lora": 0,
              "audio_stream_adapters": 0, "cross_modal_adapters": 0}
    for stream in STREAMS:
        counts.update({f"{stream}_inputs_shared": 0, f"{stream}_inputs_each": 0, f"lora_{stream}_modules": 0})
    shared: set[str] = set()
    for name, in_features, out_features, bias in linears:
        counts["base"] += in_features * out_features + (out_features if bias else 0)
        if _is_quantized(name, exclude):
            counts["quantizable_linear_weights"] += in_features * out_features
            counts["quantized_rows"] += out_features
        if _is_lora_target(name, lora_targets):
            counts["lora"] += rank * (in_features + out_features)
            cross_modal = any(f".{attention}." in name for attention in CROSS_MODAL_ATTENTION)
            counts["cross_modal_adapters"] += cross_modal
            counts["audio_stream_adapters"] += any(f".{part}." in name for part in _AUDIO_STREAM_MODULES)
            if modalities_isolated and cross_modal:
                continue
            reads, key = _adapter_input(name)
            counts[f"{reads}_inputs_each"] += in_features
            counts[f"lora_{reads}_modules"] += 1
            if key is not None and key not in shared:
                shared.add(key)
                counts[f"{reads}_inputs_shared"] += in_features
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


@dataclass(frozen=True)
class _Adapters:
    """How the adapters of a run keep their inputs (see the activation constants above)."""

    copies: bool  # fp32 adapters on a bf16/fp16 base: each keeps its own fp32 copy of its input
    element: int  # bytes of a base activation element
    rank: int

    def input_bytes(self, counts: dict[str, int], stream: str) -> int:
        """Bytes per token of `stream` that its adapters keep, over all blocks."""
        if self.copies:
            return counts[f"{stream}_inputs_each"] * _FP32_COPY_BYTES
        return counts[f"{stream}_inputs_shared"] * self.element

    def rank_bytes(self, counts: dict[str, int], stream: str) -> int:
        """Bytes per token of the adapters' rank-sized intermediate results, over all blocks."""
        return counts[f"lora_{stream}_modules"] * self.rank * (4 if self.copies else self.element)


def _ltx_video_activations(
    setup: TrainingSetup, shape: dict, counts: dict[str, int], adapters: _Adapters, tokens: int,
    weight_casts: int, quantization: str | None,
) -> tuple[int, int]:
    """(saved bytes of one block, bytes kept across the blocks by checkpointing) for LTX-Video 0.9."""
    element, blocks = adapters.element, max(shape["num_layers"], 1)
    model_width = shape["num_attention_heads"] * shape["attention_head_dim"]
    per_block = _BASE_PER_TOKEN_WIDTH[element] + adapters.input_bytes(counts, "video") / blocks / model_width
    if setup.first_frame_conditioning:
        per_block += _PER_TOKEN_TIMESTEP_PER_TOKEN_WIDTH[element]
    if quantization:
        per_block += _QUANTO_EXTRA_NEXT_TO_FP32_ADAPTERS if adapters.copies else _QUANTO_EXTRA_ELEMENTS * element
    per_prompt = _PROMPT_PER_TOKEN_WIDTH_ELEMENTS * element + adapters.input_bytes(counts, "prompt") / blocks / model_width
    if counts["prompt_inputs_each"]:
        per_prompt += _PROMPT_TRAINABLE_KV_PER_TOKEN_WIDTH
    prompt_tokens = PROMPT_TOKENS * setup.batch_size
    block_saved = (
        tokens * (model_width * per_block + adapters.rank_bytes(counts, "video") / blocks)
        + prompt_tokens * model_width * per_prompt
        + weight_casts / blocks
    )
    kept = tokens * model_width * (shape["num_layers"] * _CHECKPOINT_INPUT_ELEMENTS * element
                                   + _CHECKPOINT_SHARED_PER_TOKEN_WIDTH)
    return int(block_saved), int(kept)


def _ltx2_activations(
    setup: TrainingSetup, shape: dict, counts: dict[str, int], adapters: _Adapters, video_tokens: int,
    audio_tokens: int, weight_casts: int, quantization: str | None,
) -> tuple[int, int]:
    """(saved bytes of one block, bytes kept across the blocks by checkpointing) for LTX-2: the
    video, audio and two text streams, each per token and per unit of its own width."""
    element, blocks = adapters.element, max(shape["num_layers"], 1)
    video = shape["num_attention_heads"] * shape["attention_head_dim"]
    audio = shape["audio_num_attention_heads"] * shape["audio_attention_head_dim"]
    video_text, audio_text = shape["cross_attention_dim"], shape["audio_cross_attention_dim"]
    joint = setup.with_audio
    text_tokens = LTX2_TEXT_TOKENS * setup.batch_size

    per_video = _LTX2_VIDEO_PER_TOKEN_WIDTH[element]
    per_audio = _LTX2_AUDIO_PER_TOKEN_WIDTH[element]
    if joint:
        per_video += _LTX2_JOINT_VIDEO_PER_TOKEN_WIDTH[element]
    if setup.first_frame_conditioning:  # per-token adaLN values: 6 vectors, 9 with prompt modulation (2.3)
        per_video += _PER_TOKEN_TIMESTEP_PER_TOKEN_WIDTH[element] * (9 / 6 if shape["cross_attn_mod"] else 1)
    gated_next_to_low_precision_adapters = shape["gated_attn"] and not adapters.copies and element == 2
    if gated_next_to_low_precision_adapters:
        per_video += _LTX2_GATED_VIDEO_PER_TOKEN_WIDTH
    if quantization:
        per_video += _QUANTO_EXTRA_NEXT_TO_FP32_ADAPTERS if adapters.copies else _QUANTO_EXTRA_ELEMENTS * element
        per_video += _LTX2_JOINT_QUANTO_EXTRA if joint else 0.0
        per_audio += _LTX2_AUDIO_QUANTO_EXTRA
    trainable_kv = (_LTX2_TRAINABLE_KV_COPIES if adapters.copies
                    else _LTX2_TRAINABLE_KV_SHARED[element])
    per_video_text = _PROMPT_PER_TOKEN_WIDTH_ELEMENTS * element + (trainable_kv if counts["prompt_inputs_each"] else 0)
    if gated_next_to_low_precision_adapters:
        per_video_text += _LTX2_GATED_TEXT_PER_TOKEN_WIDTH
    # The audio prompt attention's keys and values are kept when anything trainable needs them:
    # its own adapters (even in a video-only step, whose audio output is dropped) or the video.
    audio_text_elements = (
        _PROMPT_PER_TOKEN_WIDTH_ELEMENTS if counts["audio_stream_adapters"]
        else _LTX2_JOINT_AUDIO_TEXT_ELEMENTS if joint else 0.0
    )
    per_audio_text = audio_text_elements * element + (trainable_kv if counts["audio_prompt_inputs_each"] else 0)
    if counts["audio_stream_adapters"]:
        per_audio += _LTX2_TRAINABLE_AUDIO_PER_TOKEN_WIDTH
    elif joint and counts["cross_modal_adapters"]:
        per_audio += _LTX2_CROSS_MODAL_AUDIO_PER_TOKEN_WIDTH

    def adapter_bytes(stream: str) -> float:
        return (adapters.input_bytes(counts, stream) + adapters.rank_bytes(counts, stream)) / blocks

    block_saved = (
        video_tokens * (video * per_video + adapter_bytes("video"))
        + audio_tokens * (audio * per_audio + adapter_bytes("audio"))
        + text_tokens * (video_text * per_video_text + adapter_bytes("prompt"))
        + text_tokens * (audio_text * per_audio_text + adapter_bytes("audio_prompt"))
        + weight_casts / blocks
    )
    shared_video = _LTX2_CHECKPOINT_SHARED_FIRST_FRAME if setup.first_frame_conditioning else _LTX2_CHECKPOINT_SHARED
    kept = (
        video_tokens * video * (shape["num_layers"] * _CHECKPOINT_INPUT_ELEMENTS * element + shared_video)
        + audio_tokens * audio * (shape["num_layers"] * _CHECKPOINT_INPUT_ELEMENTS * element + _LTX2_CHECKPOINT_SHARED)
        + text_tokens * video_text * _LTX2_CHECKPOINT_TEXT_ELEMENTS * element
    )
    return int(block_saved), int(kept)


def estimate(
    setup: TrainingSetup,
    width: int,
    height: int,
    frames: int,
    variant_or_transformer_config: str | dict | Path,
    device_type: str = "cuda",
) -> MemoryEstimate:
    """Peak memory of one training step of `setup` at WxHxF on a `device_type` device ("cuda" or "cpu").

    The text encoder is never resident during training (the trainer encodes validation prompts on
    the CPU first and frees it); the VAE is when `setup.validation_videos`. For LTX-2 the audio
    stream counts when `setup.with_audio` (25 tokens a second at 24 fps), else one dummy token. An
    IC-LoRA step (`setup.reference_downscale`) adds the reference's tokens to the video stream.
    """
    shape = full_shape(resolve_transformer_config(variant_or_transformer_config))
    ltx2 = is_ltx2(shape)
    batch = setup.batch_size
    tokens = token_count(width, height, frames) * batch
    if setup.reference_downscale:
        # Reference tokens pass through every block like the target's (their loss is masked, not
        # their activations), so they count as video tokens.
        factor = setup.reference_downscale
        tokens += token_count(width // factor, height // factor, frames) * batch
    element = weight_element_bytes(setup, device_type)
    layers = shape["num_layers"]
    lora_mode = setup.training_mode == "lora"
    quantization = setup.quantization if lora_mode else None
    rank = setup.rank if lora_mode else 0
    counts = count_parameters(shape, setup.lora_targets if lora_mode else (), rank)
    notes: list[str] = []

    weights = _weight_bytes(counts, element, quantization)
    trained = counts["lora"] if lora_mode else counts["base"]
    adapter_bytes = 4  # trained weights stay fp32 (model_setup.add_lora / weight_dtype)
    optimizer_state = 2 if setup.optimizer == "adamw8bit" else 8
    lora_and_optimizer = trained * (adapter_bytes * 2 + optimizer_state)
    if not lora_mode:
        weights = 0  # the trained weights are the base, counted with their gradients and moments

    blocks = max(layers, 1)
    # Adapters computing in the base's bf16/fp16 share its tensors and keep bf16 casts of their
    # weights; fp32 adapters on a bf16/fp16 base (the CPU) each keep an fp32 copy of their input.
    low_precision_adapters = adapters_in_low_precision(setup, device_type)
    adapters = _Adapters(copies=lora_mode and element == 2 and not low_precision_adapters, element=element, rank=rank)
    weight_casts = counts["lora"] * element if low_precision_adapters else 0
    if ltx2:
        # A video-only step isolates the modalities: the audio<->video attention (and its adapters) never runs.
        active = counts if setup.with_audio else count_parameters(
            shape, setup.lora_targets if lora_mode else (), rank, modalities_isolated=True)
        audio_tokens = ltx2_audio_tokens(frames, setup.with_audio) * batch
        block_saved, kept = _ltx2_activations(
            setup, shape, active, adapters, tokens, audio_tokens, weight_casts, quantization)
    else:
        block_saved, kept = _ltx_video_activations(setup, shape, counts, adapters, tokens, weight_casts, quantization)
    checkpointing = setup.gradient_checkpointing
    if checkpointing:
        activations = kept + block_saved  # plus one block recomputed during its backward
    else:
        activations = block_saved * layers

    model_width = shape["num_attention_heads"] * shape["attention_head_dim"]
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
    if setup.validation_videos and ltx2:
        # validation_ltx2 moves the VAEs, vocoder and connectors to the device only while it renders
        notes.append("Validation loads the video and audio decoders only while it renders; that peak is not included.")
    elif setup.validation_videos:
        vae = VAE_PARAMETERS if shape["in_channels"] == RELEASED_LATENT_CHANNELS else TINY_VAE_PARAMETERS
        breakdown["vae_weights"] = vae * element
        notes.append("Validation videos need extra memory while they decode; that peak is not included.")
    if setup.block_offload and device_type == "cuda":
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
    """`estimate` for a training config; `batch_size` and `vae_resident` override the config's."""
    setup = TrainingSetup.from_config(config)
    if batch_size is not None:
        setup = replace(setup, batch_size=batch_size)
    if vae_resident is not None:
        setup = replace(setup, validation_videos=vae_resident)
    return estimate(setup, width, height, frames, variant_or_transformer_config, device_type)


# ---- against a card ---------------------------------------------------------------------------

# Below this share of the card a run fits with room for the desktop, other programs and the
# allocator's spikes; up to the whole card it is tight.
COMFORTABLE_SHARE = 0.9


def judge(total_bytes: int, card_bytes: int) -> str:
    """"fits", "tight" or "too_big" for a run needing `total_bytes` on a card of `card_bytes`."""
    if total_bytes <= card_bytes * COMFORTABLE_SHARE:
        return "fits"
    return "tight" if total_bytes <= card_bytes else "too_big"


@dataclass(frozen=True)
class Advice:
    """The smallest change (in the order users give up least) after which the run fits the card."""

    changes: dict[str, object]  # TrainingSetup field or "frames" -> new value
    total_bytes: int


def _memory_savers(setup: TrainingSetup, device_type: str) -> Iterator[dict[str, object]]:
    """Cumulative changes, cheapest first: checkpointing, int8 weights, smaller batch, block offload."""
    changes: dict[str, object] = {}
    if not setup.gradient_checkpointing:
        changes = {**changes, "gradient_checkpointing": True}
        yield changes
    if setup.training_mode == "lora" and setup.quantization is None:
        changes = {**changes, "quantization": "int8-quanto"}
        yield changes
    if setup.batch_size > 1:
        changes = {**changes, "batch_size": 1}
        yield changes
    if device_type == "cuda" and not setup.block_offload:
        changes = {**changes, "block_offload": True}
        yield changes


def advise(
    setup: TrainingSetup, width: int, height: int, frames: int, shape: str | dict | Path, card_bytes: int,
    device_type: str = "cuda",
) -> Advice | None:
    """The first change that makes the run fit comfortably, then fewer frames on top; None if nothing does."""
    changes: dict[str, object] = {}
    for changes in _memory_savers(setup, device_type):
        changed = replace(setup, **changes)
        need = estimate(changed, width, height, frames, shape, device_type).total_bytes
        if judge(need, card_bytes) == "fits":
            return Advice(changes, need)
    changed = replace(setup, **changes)
    fewer = frames
    while fewer > 1 + TEMPORAL_COMPRESSION:
        fewer = max(1 + TEMPORAL_COMPRESSION, (fewer - 1) // 2 // TEMPORAL_COMPRESSION * TEMPORAL_COMPRESSION + 1)
        need = estimate(changed, width, height, fewer, shape, device_type).total_bytes
        if judge(need, card_bytes) == "fits":
            return Advice({**changes, "frames": fewer}, need)
    return None
