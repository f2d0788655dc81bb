"""Precompute for LTX-2: clips and captions -> the files an LTX-2 run trains from.

The layout under `<dataset>/.precomputed/` (names relative, as for 0.9, so `data.PrecomputedDataset`
pairs them):

- `latents/<name>.pt`: {"latents": [tokens, C] packed normalised video latents, "num_frames",
  "height", "width" (latent sizes), "fps"} — the 0.9 layout; LTX-2 conditions its RoPE on fps.
- `audio_latents/<name>.pt`: {"latents": [L, C*M/4]} packed normalised audio latents of the clip's
  first num_frames / fps seconds (25 latent frames a second), only when the run trains audio.
- `conditions/<name>.pt`: {"video_embeds": [1024, Dv], "audio_embeds": [1024, Da]}, the connector
  outputs in bf16 (15.7 MB a caption for LTX-2; see `ltx2.text_embedding_bytes`).
- `reference_latents/<name>.pt` (IC-LoRA): the latents layout plus "downscale_factor" N, of the clip's
  reference video cut as the clip (same first frames) and resized to W/N x H/N.

`precompute_ltx2_samples` and `precompute_ltx2_references` are what the preprocess stage calls for an
LTX-2 model folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ltxtrainer.atomic import write_atomic
from ltxtrainer.config import REFERENCE_LATENTS_DIR
from ltxtrainer.data import AUDIO_LATENTS_DIR
from ltxtrainer.media import load_clip
from ltxtrainer.models import ltx2

STORED_TEXT_DTYPE = torch.bfloat16


class MissingAudioError(ValueError):
    """A joint audio+video run was given a clip without sound; the message names it."""


class ReferenceSizeError(ValueError):
    """A bucket's width or height does not divide into a reference size the VAE can encode."""


@dataclass(frozen=True)
class ClipToEncode:
    """One training clip: the video file, its caption, its name under .precomputed/ (no suffix) and,
    for IC-LoRA data, its reference video."""

    path: Path
    caption: str
    name: str
    reference: Path | None = None


def vae_spatial_compression(model_dir: str | os.PathLike) -> int:
    """Pixels per latent along width and height, from the VAE's config (no weights loaded)."""
    config = json.loads((Path(model_dir) / "vae" / "config.json").read_text(encoding="utf-8"))
    return int(config["spatial_compression_ratio"])


def reference_size(width: int, height: int, downscale_factor: int, spatial_compression: int) -> tuple[int, int]:
    """(width, height) of the references of a width x height bucket at 1/downscale_factor.

    A reduced reference costs far fewer tokens (1/4 at N = 2), but its size must still be whole VAE
    latents: raises ReferenceSizeError with the sizes that would work when it is not.
    """
    for name, size in (("width", width), ("height", height)):
        if size % (downscale_factor * spatial_compression):
            raise ReferenceSizeError(
                f"a reference at 1/{downscale_factor} of the {name} {size} would be {size / downscale_factor:g} "
                f"pixels, not a multiple of the VAE's {spatial_compression}: use a bucket whose width and height "
                f"are multiples of {downscale_factor * spatial_compression}, or a smaller reference downscale"
            )
    return width // downscale_factor, height // downscale_factor


def has_sound(path: str | os.PathLike) -> bool:
    """Whether a media file has an audio track (a still image or a silent clip has none)."""
    import av

    with av.open(str(path)) as container:
        return bool(container.streams.audio)


def _save(payload: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda temp: torch.save(payload, temp))


@torch.no_grad()
def precompute_ltx2_samples(
    model_dir: str | os.PathLike,
    clips: list[ClipToEncode],
    output_root: str | os.PathLike,
    width: int,
    height: int,
    num_frames: int,
    with_audio: bool,
    fps: float | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    load_text_encoder_in_8bit: bool = False,
) -> list[Path]:
    """Encode every clip (first `num_frames` frames, resized and cropped to width x height, at `fps`
    or the clip's own rate) and its caption; returns the latents files written.

    With `with_audio` every clip must have a sound track (`MissingAudioError` names the first that
    has none) and its audio over the same seconds is encoded too. Gemma runs first and is freed
    before the VAEs load, so a 24 GB card holds one model at a time.
    """
    device = torch.device(device)
    root = Path(output_root)
    _write_caption_embeddings(model_dir, clips, root, device, load_text_encoder_in_8bit)

    vae = ltx2.load_component(model_dir, "vae", dtype, device)
    audio_vae = ltx2.load_component(model_dir, "audio_vae", dtype, device) if with_audio else None
    written = []
    for clip in clips:
        frames, clip_fps = load_clip(clip.path, width, height, num_frames, fps)
        duration = num_frames / clip_fps
        if audio_vae is not None:
            waveform = ltx2.read_audio(
                clip.path, audio_vae.config.sample_rate, audio_vae.config.in_channels, 0.0, duration
            )
            if waveform is None:
                raise MissingAudioError(
                    f"{clip.path} has no sound track, but model.with_audio is true: every clip of a joint "
                    "audio+video run needs sound. Remove the clip or train video only (model.with_audio: false)."
                )
            audio_latents = ltx2.encode_audio(audio_vae, waveform[None], duration)[0]
            _save({"latents": audio_latents.float().cpu()}, root / AUDIO_LATENTS_DIR / f"{clip.name}.pt")
        pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0
        latents = ltx2.encode_video(vae, pixels)[0]
        latent_frames, latent_height, latent_width = ltx2.latent_size(dict(vae.config), width, height, num_frames)
        path = root / "latents" / f"{clip.name}.pt"
        _save(
            {
                "latents": latents.float().cpu(),
                "num_frames": latent_frames,
                "height": latent_height,
                "width": latent_width,
                "fps": float(clip_fps),
            },
            path,
        )
        written.append(path)
    return written


@torch.no_grad()
def precompute_ltx2_references(
    model_dir: str | os.PathLike,
    clips: list[ClipToEncode],
    output_root: str | os.PathLike,
    width: int,
    height: int,
    num_frames: int,
    downscale_factor: int = 1,
    fps: float | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> list[Path]:
    """Encode each clip's reference (its first `num_frames` frames at `fps` or its own rate, as the
    clip is cut) at width/N x height/N to `reference_latents/<name>.pt`; returns the files written.

    Only the video VAE is loaded. Raises ReferenceSizeError before loading it when the bucket does
    not divide by N into whole latents; MediaError names a reference that cannot be read or is short.
    """
    reference_width, reference_height = reference_size(
        width, height, downscale_factor, vae_spatial_compression(model_dir)
    )
    root = Path(output_root)
    vae = ltx2.load_component(model_dir, "vae", dtype, torch.device(device))
    written = []
    for clip in clips:
        frames, reference_fps = load_clip(clip.reference, reference_width, reference_height, num_frames, fps)
        pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0
        latent_frames, latent_height, latent_width = ltx2.latent_size(
            dict(vae.config), reference_width, reference_height, num_frames
        )
        path = root / REFERENCE_LATENTS_DIR / f"{clip.name}.pt"
        _save(
            {
                "latents": ltx2.encode_video(vae, pixels)[0].float().cpu(),
                "num_frames": latent_frames,
                "height": latent_height,
                "width": latent_width,
                "fps": float(reference_fps),
                # The trainer places these tokens on the target's grid scaled by N, and validation
                # must shrink its reference videos alike; both read N from here.
                "downscale_factor": downscale_factor,
            },
            path,
        )
        written.append(path)
    return written


def _write_caption_embeddings(
    model_dir: str | os.PathLike, clips: list[ClipToEncode], root: Path, device: torch.device, load_in_8bit: bool
) -> None:
    """conditions/<name>.pt for every clip: the (video, audio) connector outputs in bf16, one caption
    at a time and written at once (Gemma's stacked hidden states of one 1024-token caption are
    385 MB in bf16 for Gemma 3 12B; a stored caption is 15.7 MB)."""
    tokenizer = ltx2.load_component(model_dir, "tokenizer")
    text_encoder = ltx2.load_text_encoder(model_dir, device, load_in_8bit)
    connectors = ltx2.load_component(model_dir, "connectors", text_encoder.dtype, device)
    for clip in clips:
        (text,) = ltx2.encode_prompts(tokenizer, text_encoder, connectors, [clip.caption])
        _save(
            {"video_embeds": text.video.to(STORED_TEXT_DTYPE), "audio_embeds": text.audio.to(STORED_TEXT_DTYPE)},
            root / "conditions" / f"{clip.name}.pt",
        )
    del text_encoder, connectors
    if device.type == "cuda":
        torch.cuda.empty_cache()
