"""The schema of a training run: one pydantic model, the single source of defaults and limits.

Section and field names are those of the reference LTX-Video-Trainer (both the spring-2025
generation with `optimization.first_frame_conditioning_p` and the later one with a
`conditioning` section, `wandb`, `validation.reference_videos`), so a config written for it
loads here unchanged. Our own additions are separate fields whose description starts with
"ltxtrainer addition" (`validation.frame_rate`, `acceleration.block_offload`, ...).
Every section forbids unknown keys, so a typo is an error, and `load_config` turns pydantic's
error list into one line per problem: the field's dotted path, the bad value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ltxtrainer.atomic import write_text_atomic

QUANTIZATION_CHOICES = ("int8-quanto", "int4-quanto", "int2-quanto", "fp8-quanto", "fp8uz-quanto")
DEFAULT_NEGATIVE_PROMPT = "worst quality, inconsistent motion, blurry, jittery, distorted"


class ConfigError(ValueError):
    """A config that cannot be used; the message names every bad field."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @field_validator("*", mode="before")
    @classmethod
    def _strict_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """`rank: true` is a slip, not rank 1 (pydantic's lax mode reads a boolean as 1 or 0), and a
        whole number must be written as one. Float fields still take text: PyYAML reads `1e-4`
        (no dot) as a string, and the reference configs write learning rates that way."""
        annotation = cls.model_fields[info.field_name].annotation
        types = {annotation, *getattr(annotation, "__args__", ())}
        if bool in types or not types & {int, float}:
            return value
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        if isinstance(value, str) and float not in types:
            raise ValueError(f"expected an integer, got the text {value!r}")
        return value


class ModelConfig(Section):
    model_source: str = Field(
        default="models/LTX-Video-0.9.7-diffusers",
        description="Local diffusers model folder, Hugging Face cache folder, or a repo id already in the local cache.",
    )
    training_mode: Literal["lora", "full"] = Field(default="lora", description="Train a LoRA adapter or every weight.")
    load_checkpoint: str | None = Field(
        default=None,
        description="A checkpoint folder or LoRA file to start from, or 'latest' for this run's latest checkpoint.",
    )
    with_audio: bool = Field(
        default=False,
        description="ltxtrainer addition, LTX-2 models only: train the audio stream with the video (joint "
        "audio+video LoRA; every clip needs sound, preprocessed into audio_latents/). False trains video only. "
        "The model family itself is read from the model folder.",
    )


class LoraConfig(Section):
    rank: int = Field(default=64, ge=1, le=1024, description="LoRA rank (size of the adapter).")
    alpha: int = Field(default=64, ge=1, le=4096, description="LoRA alpha; the adapter is scaled by alpha/rank.")
    dropout: float = Field(default=0.0, ge=0.0, le=1.0, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["to_k", "to_q", "to_v", "to_out.0"],
        min_length=1,
        description="Module names (inside transformer_blocks) that get adapters.",
    )


class OptimizationConfig(Section):
    learning_rate: float = Field(default=5e-4, gt=0.0, le=1.0)
    steps: int = Field(default=3000, ge=1, le=1_000_000, description="Optimizer steps to train.")
    batch_size: int = Field(default=2, ge=1, le=256)
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=1024)
    max_grad_norm: float = Field(default=1.0, ge=0.0, description="Gradient clipping; 0 turns it off.")
    optimizer_type: Literal["adamw", "adamw8bit"] = "adamw"
    scheduler_type: Literal["constant", "linear", "cosine", "cosine_with_restarts", "polynomial"] = "linear"
    scheduler_params: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra arguments of the torch LR scheduler (e.g. end_factor, eta_min, power, T_0) and warmup_steps.",
    )
    enable_gradient_checkpointing: bool = Field(default=False, description="Recompute activations: far less memory, ~1.5x time.")
    first_frame_conditioning_p: float = Field(
        default=0.1, ge=0.0, le=1.0, description="Probability of keeping the first frame clean (image-to-video)."
    )
    weight_decay: float = Field(default=0.01, ge=0.0, le=1.0, description="ltxtrainer addition: AdamW weight decay.")


class AccelerationConfig(Section):
    mixed_precision_mode: Literal["no", "fp16", "bf16"] | None = Field(default="bf16")
    quantization: Literal["int8-quanto", "int4-quanto", "int2-quanto", "fp8-quanto", "fp8uz-quanto", "none"] | None = Field(
        default=None, description="Quantize the frozen base transformer with optimum-quanto (LoRA mode only)."
    )
    load_text_encoder_in_8bit: bool = False
    compile_with_inductor: bool = Field(default=False, description="torch.compile each transformer block.")
    compilation_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    block_offload: bool = Field(
        default=False,
        description="ltxtrainer addition: keep transformer blocks in host memory and stream them to the GPU "
        "(diffusers group offloading, block level) for small cards.",
    )
    attention_backend: str | None = Field(
        default=None,
        description="ltxtrainer addition: a diffusers attention backend (flash, sage, xformers, _native_cudnn, ...). "
        "Empty: PyTorch's scaled-dot-product attention, which picks its fastest kernel itself.",
    )

    @field_validator("attention_backend")
    @classmethod
    def _known_attention_backend(cls, name: str | None) -> str | None:
        if not name:
            return None
        from diffusers.models.attention_dispatch import AttentionBackendName

        known = [backend.value for backend in AttentionBackendName]
        if name.lower() not in known:
            raise ValueError(f"unknown attention backend {name!r}; allowed: {', '.join(known)}, or empty")
        return name.lower()

    @property
    def quantization_choice(self) -> str | None:
        return None if self.quantization in (None, "none") else self.quantization


class DataConfig(Section):
    preprocessed_data_root: str = Field(description="Dataset folder or its .precomputed folder.")
    num_dataloader_workers: int = Field(default=2, ge=0, le=64)


class ValidationConfig(Section):
    prompts: list[str] = Field(default_factory=list)
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    images: list[str | None] | None = Field(
        default=None, description="First-frame images for image-to-video, one per prompt (null for text-only)."
    )
    reference_videos: list[str] | None = None
    video_dims: tuple[int, int, int] = Field(default=(704, 480, 161), description="Width, height, frames.")
    seed: int = 42
    # At least 2: with one step diffusers' FlowMatchEulerDiscreteScheduler (0.42) indexes past its
    # sigma schedule and the pipeline raises an IndexError.
    inference_steps: int = Field(default=50, ge=2, le=500, description="Denoising steps of each validation video (2 or more).")
    interval: int | None = Field(default=100, ge=1, description="Steps between validation videos; null disables.")
    videos_per_prompt: int = Field(default=1, ge=1, le=16)
    guidance_scale: float = Field(default=3.5, ge=0.0, le=50.0)
    skip_initial_validation: bool = False
    frame_rate: float | None = Field(
        default=None, gt=0.0, le=120.0,
        description="ltxtrainer addition: fps given to the pipeline and written into the videos; empty: the "
        "median fps of the dataset's clips (written into the run's training_config.yaml).",
    )

    @field_validator("video_dims")
    @classmethod
    def _dims_follow_the_vae(cls, dims: tuple[int, int, int]) -> tuple[int, int, int]:
        width, height, frames = dims
        if width % 32 or height % 32 or width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive multiples of 32, got {width}x{height}")
        if frames < 1 or (frames - 1) % 8:
            raise ValueError(f"frames must be 8k+1 (1, 9, 17, 25, ...), got {frames}")
        return dims


class CheckpointsConfig(Section):
    interval: int | None = Field(default=None, ge=1, description="Steps between checkpoints; null saves only at the end.")
    keep_last_n: int = Field(default=1, ge=-1, description="Checkpoints kept; -1 keeps all.")

    @field_validator("keep_last_n")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("keep_last_n must be -1 (keep all) or at least 1")
        return value


class HubConfig(Section):
    push_to_hub: bool = False
    hub_token: str | None = None
    hub_model_id: str | None = None


class FlowMatchingConfig(Section):
    timestep_sampling_mode: Literal["uniform", "shifted_logit_normal"] = "shifted_logit_normal"
    timestep_sampling_params: dict[str, Any] = Field(default_factory=dict)


REFERENCE_LATENTS_DIR = "reference_latents"  # what the reference trainer's IC config names; its schema default is wrong


class ConditioningConfig(Section):
    """The later reference generation's home of first-frame and reference-video (IC-LoRA) conditioning."""

    mode: Literal["none", "reference_video"] = Field(
        default="none",
        description="none: text (and first frame) only; reference_video: IC-LoRA, each clip guided by its "
        "reference video (edges, depth, pose, ...) whose latents sit under reference_latents_dir.",
    )
    first_frame_conditioning_p: float = Field(default=0.1, ge=0.0, le=1.0)
    reference_latents_dir: str | None = Field(
        default=None,
        description="Folder of the reference latents beside latents/ and conditions/ (reference_video mode; "
        f"empty: {REFERENCE_LATENTS_DIR}).",
    )
    reference_downscale_factor: Literal[1, 2, 4] = Field(
        default=1,
        description="ltxtrainer addition, LTX-2 only: the references were precomputed at 1/N of the clips' "
        "width and height; validation encodes its reference videos the same way, and the LoRA file records N.",
    )

    @property
    def reference_dir_name(self) -> str:
        """Where reference latents live for this run (reference_video mode)."""
        return self.reference_latents_dir or REFERENCE_LATENTS_DIR


class WandbConfig(Section):
    enabled: bool = False
    project: str = "ltxv-trainer"
    entity: str | None = None
    tags: list[str] = Field(default_factory=list)
    log_validation_videos: bool = True


class TrainerConfig(Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    lora: LoraConfig | None = None
    optimization: OptimizationConfig = Field(default_factory=OptimizationConfig)
    acceleration: AccelerationConfig = Field(default_factory=AccelerationConfig)
    data: DataConfig
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    checkpoints: CheckpointsConfig = Field(default_factory=CheckpointsConfig)
    hub: HubConfig = Field(default_factory=HubConfig)
    flow_matching: FlowMatchingConfig = Field(default_factory=FlowMatchingConfig)
    conditioning: ConditioningConfig | None = None
    wandb: WandbConfig = Field(default_factory=WandbConfig)
    seed: int = 42
    output_dir: str = "outputs"

    @model_validator(mode="after")
    def _cross_checks(self) -> TrainerConfig:
        if self.model.training_mode == "lora" and self.lora is None:
            raise ValueError("training_mode 'lora' needs a 'lora' section (rank, alpha, dropout, target_modules)")
        if self.model.training_mode == "full" and self.acceleration.quantization_choice:
            raise ValueError("quantization is only possible in training_mode 'lora' (a quantized base cannot be trained)")
        return self

    @property
    def first_frame_conditioning_p(self) -> float:
        """The later schema's `conditioning` section wins over the older optimization field."""
        if self.conditioning is not None:
            return self.conditioning.first_frame_conditioning_p
        return self.optimization.first_frame_conditioning_p


def _describe(error: dict) -> str:
    path = ".".join(str(part) for part in error["loc"]) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{path}: unknown field (check the spelling; see configs/*.yaml for the fields)"
    if kind == "missing":
        return f"{path}: required field is missing"
    value = error.get("input")
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if not error["loc"]:  # a check across sections: its message names the fields
        return message
    if isinstance(value, dict):  # a whole section: its fields are in the user's file, not worth repeating
        return f"{path}: {message}"
    return f"{path} = {value!r}: {message}"


def _unknown_field_hint(error: dict) -> str:
    """Name the allowed fields of the section that has an unknown key."""
    section: type[BaseModel] = TrainerConfig
    for part in error["loc"][:-1]:
        field = section.model_fields.get(str(part))
        if field is None:
            return ""
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        section = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if section is None:
            return ""
    return " (allowed: " + ", ".join(section.model_fields) + ")"


def format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        line = _describe(item)
        if item["type"] == "extra_forbidden":
            line += _unknown_field_hint(item)
        lines.append("  - " + line)
    return "Invalid training config:\n" + "\n".join(lines)


def config_from_dict(data: dict) -> TrainerConfig:
    try:
        return TrainerConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error)) from None


def load_config(path: str | Path) -> TrainerConfig:
    """Read and validate a YAML config; every problem is reported in one ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (model, lora, optimization, ...)")
    return config_from_dict(data)


def config_to_yaml(config: TrainerConfig) -> str:
    """YAML that `load_config` accepts back (tuples written as lists)."""
    data = config.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def save_config(config: TrainerConfig, path: str | Path) -> Path:
    return write_text_atomic(path, config_to_yaml(config))
