"""Everything specific to the LTX-Video family (2B 0.9.0-0.9.6, 13B 0.9.7/0.9.8) in one place.

This module is the family's implementation of `models.family.ModelFamily`: loading, the dataset
it trains on (T5 embeddings), the training step, the validation renderer and the ComfyUI file.

Loading goes through diffusers/transformers classes, offline (`local_files_only`), from a folder
checked by `folder.require_model_folder`. Latent conventions are the diffusers `LTXPipeline`'s
own static helpers, so what the trainer feeds the transformer is exactly what inference feeds it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLLTXVideo,
    FlowMatchEulerDiscreteScheduler,
    LTXPipeline,
    LTXVideoTransformer3DModel,
)

from ltxtrainer.config import ConfigError, TrainerConfig
from ltxtrainer.data import PrecomputedDataset
from ltxtrainer.data import collate as collate  # the family's batch is today's collate
from ltxtrainer.models.folder import require_model_folder
from ltxtrainer.training import flow_matching
from ltxtrainer.training.model_setup import QUANTIZE_EXCLUDE as QUANTIZE_EXCLUDE

FAMILY = "ltx_video"

# The pipeline's helpers are static methods: calling them keeps training and inference identical.
pack_latents = LTXPipeline._pack_latents
unpack_latents = LTXPipeline._unpack_latents
normalize_latents = LTXPipeline._normalize_latents
denormalize_latents = LTXPipeline._denormalize_latents

SPATIAL_COMPRESSION = 32
TEMPORAL_COMPRESSION = 8


def latent_size(width: int, height: int, num_frames: int) -> tuple[int, int, int]:
    """(latent frames, latent height, latent width) of a WxHxF clip."""
    return (
        (num_frames - 1) // TEMPORAL_COMPRESSION + 1,
        height // SPATIAL_COMPRESSION,
        width // SPATIAL_COMPRESSION,
    )


def token_count(width: int, height: int, num_frames: int) -> int:
    """Video tokens the transformer sees for a WxHxF clip (1x1x1 patches)."""
    frames, lat_h, lat_w = latent_size(width, height, num_frames)
    return frames * lat_h * lat_w


def rope_interpolation_scale(fps: float) -> tuple[float, float, float]:
    """The scale `LTXPipeline` passes the transformer for a clip at `fps` frames per second."""
    return (TEMPORAL_COMPRESSION / fps, SPATIAL_COMPRESSION, SPATIAL_COMPRESSION)


def _folder(source: str | os.PathLike | None) -> Path:
    return require_model_folder(source)


def load_transformer(
    source: str | os.PathLike | None, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> LTXVideoTransformer3DModel:
    folder = _folder(source)
    model = LTXVideoTransformer3DModel.from_pretrained(
        folder, subfolder="transformer", torch_dtype=dtype, local_files_only=True, use_safetensors=True
    )
    return model.to(device)


def load_vae(
    source: str | os.PathLike | None, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> AutoencoderKLLTXVideo:
    folder = _folder(source)
    vae = AutoencoderKLLTXVideo.from_pretrained(
        folder, subfolder="vae", torch_dtype=dtype, local_files_only=True, use_safetensors=True
    )
    return vae.to(device).eval()


def load_text_encoder(
    source: str | os.PathLike | None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    load_in_8bit: bool = False,
):
    """The T5 encoder; `load_in_8bit` uses bitsandbytes where installed, else a clear error."""
    from transformers import T5EncoderModel

    folder = _folder(source)
    kwargs: dict = {"torch_dtype": dtype, "local_files_only": True, "use_safetensors": True}
    if load_in_8bit:
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError as error:
            raise ConfigError(
                "acceleration.load_text_encoder_in_8bit needs the bitsandbytes package: pip install bitsandbytes "
                "(or set acceleration.load_text_encoder_in_8bit: false)"
            ) from error
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["device_map"] = {"": device}
        return T5EncoderModel.from_pretrained(folder, subfolder="text_encoder", **kwargs).eval()
    model = T5EncoderModel.from_pretrained(folder, subfolder="text_encoder", **kwargs)
    return model.to(device).eval()


def load_tokenizer(source: str | os.PathLike | None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_folder(source), subfolder="tokenizer", local_files_only=True)


def load_scheduler(source: str | os.PathLike | None) -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler.from_pretrained(
        _folder(source), subfolder="scheduler", local_files_only=True
    )


@torch.no_grad()
def encode_prompts(
    tokenizer, text_encoder, prompts: list[str], max_sequence_length: int = 128
) -> tuple[torch.Tensor, torch.Tensor]:
    """T5 embeddings [N, L, D] and boolean attention masks [N, L], exactly as `LTXPipeline` makes them."""
    encoder_only = LTXPipeline(
        scheduler=None, vae=None, text_encoder=text_encoder, tokenizer=tokenizer, transformer=None
    )
    device = next(text_encoder.parameters()).device
    embeds, mask, _, _ = encoder_only.encode_prompt(
        prompts,
        do_classifier_free_guidance=False,
        max_sequence_length=max_sequence_length,
        device=device,
        dtype=text_encoder.dtype,
    )
    return embeds, mask


# ---------------------------------------------------------------- the family interface


def trains_with_reference(config: TrainerConfig) -> bool:
    """An IC-LoRA run (`conditioning.mode: reference_video`; older configs have no conditioning section)."""
    return config.conditioning is not None and config.conditioning.mode == "reference_video"


def open_dataset(config: TrainerConfig, transformer: torch.nn.Module) -> PrecomputedDataset:
    """Latents with T5 prompt embeddings, and each clip's reference latents in an IC-LoRA run; 0.9 has
    no audio stream."""
    if config.model.with_audio:
        raise ConfigError(
            "model.with_audio: true needs an LTX-2 model; LTX-Video 0.9 has no audio stream. "
            "Set model.with_audio: false or choose an LTX-2 model folder."
        )
    reference_dir = None
    if trains_with_reference(config):
        if config.conditioning.reference_downscale_factor != 1:
            raise ConfigError(
                f"conditioning.reference_downscale_factor: {config.conditioning.reference_downscale_factor} needs an "
                "LTX-2 model; LTX-Video 0.9 IC-LoRA references have their clip's own size. Set it to 1 (and "
                "preprocess the references without --reference-downscale) or choose an LTX-2 model folder."
            )
        reference_dir = config.conditioning.reference_dir_name
    return PrecomputedDataset(
        config.data.preprocessed_data_root, expected_channels=transformer.config.in_channels,
        reference_dir_name=reference_dir,
    )


def training_loss(
    model: torch.nn.Module,
    batch: dict,
    config: TrainerConfig,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Flow-matching loss of one collated batch (see `trainer._training_loss` for the seeding).

    Draw order, fixed for exact resume: sigmas, noise, the first-frame coin. Copies to the GPU are
    non-blocking (the DataLoader pins the batch; the noise is drawn into pinned memory). The model
    gets its inputs in the dtype of its frozen weights, as the pipeline feeds it at inference.
    """
    on_gpu = device.type == "cuda"
    latents = batch["latents"]
    batch_size, tokens, _ = latents.shape
    sigmas = flow_matching.sample_sigmas(
        config.flow_matching.timestep_sampling_mode, config.flow_matching.timestep_sampling_params,
        batch_size, tokens, generator,
    )
    noise = torch.randn(latents.shape, generator=generator, pin_memory=on_gpu)
    coin = torch.rand(1, generator=generator).item()  # drawn for every batch, so later draws never shift
    condition_first = coin < config.first_frame_conditioning_p and flow_matching.can_condition_first_frame(
        batch["num_frames"]
    )
    clean_tokens = flow_matching.first_frame_token_count(batch["height"], batch["width"]) if condition_first else 0

    def to_device(tensor: torch.Tensor, to_dtype: torch.dtype | None = None) -> torch.Tensor:
        return tensor.to(device, to_dtype, non_blocking=True)

    noisy, timesteps, target, loss_mask = flow_matching.noisy_inputs(
        to_device(latents), to_device(noise), to_device(sigmas), clean_tokens
    )
    if "reference_latents" in batch:  # IC-LoRA: the target's velocity, predicted beside its clean reference
        prediction = predict_with_reference(
            model,
            to_device(batch["reference_latents"], dtype),
            hidden_states=noisy.to(dtype),
            encoder_hidden_states=to_device(batch["prompt_embeds"], dtype),
            timestep=timesteps,
            encoder_attention_mask=to_device(batch["prompt_attention_mask"]),
            num_frames=batch["num_frames"],
            height=batch["height"],
            width=batch["width"],
            rope_interpolation_scale=batch_rope_interpolation_scale(batch["fps"], device),
        )
        return flow_matching.masked_mse(prediction, target, loss_mask)
    prediction = model(
        hidden_states=noisy.to(dtype),
        encoder_hidden_states=to_device(batch["prompt_embeds"], dtype),
        timestep=timesteps,
        encoder_attention_mask=to_device(batch["prompt_attention_mask"]),
        num_frames=batch["num_frames"],
        height=batch["height"],
        width=batch["width"],
        rope_interpolation_scale=batch_rope_interpolation_scale(batch["fps"], device),
        return_dict=False,
    )[0]
    if not clean_tokens:  # every token counts: the masked mean is the plain mean, in fewer ops
        return torch.nn.functional.mse_loss(prediction.float(), target.float())
    return flow_matching.masked_mse(prediction, target, loss_mask)


def batch_rope_interpolation_scale(fps: float | torch.Tensor, device: torch.device) -> tuple:
    """The RoPE scale `LTXPipeline` passes for each sample's frame rate (one bucket may mix rates).

    A batch of one frame rate gets the pipeline's own tuple. Mixed rates get a temporal scale of
    shape [B, 1, 1, 1, 1]: diffusers' LTX rope multiplies its frame grid [B, 1, F, H, W] by it
    (`LTXVideoRotaryPosEmbed._prepare_video_coords`, diffusers 0.42), so each sample keeps its own.
    """
    scales = [rope_interpolation_scale(float(rate)) for rate in torch.as_tensor(fps).reshape(-1)]
    if all(scale == scales[0] for scale in scales):
        return scales[0]
    temporal = torch.tensor([scale[0] for scale in scales], dtype=torch.float32, device=device)
    return (temporal.view(-1, 1, 1, 1, 1), *scales[0][1:])


def video_coords(
    batch_size: int, num_frames: int, height: int, width: int, rope_interpolation_scale: tuple, device: torch.device
) -> torch.Tensor:
    """RoPE coordinates [B, 3, tokens] of a latent video, in the transformer's `video_coords` units.

    They are the grid `LTXVideoRotaryPosEmbed` builds from `rope_interpolation_scale` itself (diffusers
    0.42 `_prepare_video_coords`: latent index times the scale, before its division by the base sizes;
    0.9 uses 1x1x1 patches), computed in the same order, so the same positions give the same rotations
    bit for bit. The scale's temporal entry may be a per-sample tensor [B, 1, 1, 1, 1].
    """
    axes = [torch.arange(size, dtype=torch.float32, device=device) for size in (num_frames, height, width)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).unsqueeze(0).repeat(batch_size, 1, 1, 1, 1)
    for axis in range(3):
        grid[:, axis : axis + 1] = grid[:, axis : axis + 1] * rope_interpolation_scale[axis]
    return grid.flatten(2, 4)


def predict_with_reference(
    model: torch.nn.Module,
    reference_latents: torch.Tensor,
    *,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    num_frames: int,
    height: int,
    width: int,
    rope_interpolation_scale: tuple,
    **forward_kwargs,
) -> torch.Tensor:
    """The transformer's prediction for the target tokens, with the reference's clean tokens in front.

    As the reference trainer's `ReferenceVideoTrainingStrategy` builds an IC-LoRA sequence:
    [reference tokens, target tokens], the reference at timestep 0 (clean), both halves at the
    target's own RoPE positions (the reference lies on the target, frame for frame). The transformer
    takes the positions of such a sequence through `video_coords`, its supported argument, so nothing
    of diffusers is patched. Only the target's predictions are returned: the reference carries no loss
    and is never denoised. `timestep` is per sample [B] or per target token [B, T].
    """
    batch_size, tokens = hidden_states.shape[:2]
    reference_tokens = reference_latents.shape[1]
    if reference_latents.shape[0] != batch_size:  # one reference for every copy (validation, guidance)
        reference_latents = reference_latents.expand(batch_size, -1, -1)
    if timestep.dim() == 1:
        timestep = timestep[:, None].expand(batch_size, tokens)
    clean = torch.zeros(batch_size, reference_tokens, dtype=timestep.dtype, device=timestep.device)
    coords = video_coords(batch_size, num_frames, height, width, rope_interpolation_scale, hidden_states.device)
    prediction = model(
        hidden_states=torch.cat([reference_latents.to(hidden_states.dtype), hidden_states], dim=1),
        timestep=torch.cat([clean, timestep], dim=1),
        video_coords=torch.cat([coords, coords], dim=2),
        return_dict=False,
        **forward_kwargs,
    )[0]
    return prediction[:, reference_tokens:]


class ReferenceConditionedTransformer(torch.nn.Module):
    """The transformer as diffusers' `LTXPipeline` sees it during an IC-LoRA validation render.

    The pipeline knows nothing of references; this stands in as its `transformer` component and joins
    the reference's clean tokens to every call through `predict_with_reference`, exactly as in training.
    The pipeline then denoises, guides and decodes the target tokens as usual (the reference trainer
    forked the pipeline for this instead).
    """

    def __init__(self, transformer: torch.nn.Module, reference_latents: torch.Tensor):
        super().__init__()
        self.transformer = transformer
        self.reference_latents = reference_latents  # [1, tokens, C], packed and normalised

    # What DiffusionPipeline reads of its transformer component besides calling it (diffusers 0.42).
    @property
    def config(self):
        return self.transformer.config

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    def cache_context(self, name: str):
        return self.transformer.cache_context(name)

    def forward(self, *, return_dict: bool = False, **kwargs) -> tuple[torch.Tensor]:
        return (predict_with_reference(self.transformer, self.reference_latents, **kwargs),)


def validation_renderer(
    model_dir: Path, config: TrainerConfig, dataset: PrecomputedDataset, device: torch.device, dtype: torch.dtype
):
    """`validation.LTXVideoValidation`: T5 prompts encoded now at the dataset's own length."""
    from ltxtrainer.training.validation import LTXVideoValidation

    return LTXVideoValidation(model_dir, config, dataset, device, dtype)

