"""Everything specific to the LTX-Video family (2B 0.9.0-0.9.6, 13B 0.9.7/0.9.8) in one place.

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

from ltxtrainer.config import ConfigError
from ltxtrainer.models.folder import require_model_folder

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
