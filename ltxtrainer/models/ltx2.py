"""Everything specific to the LTX-2 family (LTX-2, 2.3, 2.5; video-only or joint audio+video).

Plain functions, one per job: loading, encoding text / video / audio for precompute, the
flow-matching inputs and forward of a training step, LoRA target presets and the ComfyUI key map.
The end of the module implements `models.family.ModelFamily` with them (dataset, collate, training
loss, validation renderer). Latent conventions are `LTX2Pipeline`'s own
static helpers, so what the trainer feeds the transformer is exactly what inference feeds it.

Training math follows Lightricks' successor trainer (LTX-2 repo, `packages/ltx-trainer`): both
streams are noised with the same sigma, the transformer predicts the velocity noise - x0 on each,
and the loss is the video MSE (first-frame tokens left out when conditioning on them) plus the
audio MSE. Without audio the audio stream is a single dummy token and the audio<->video
cross-attention is switched off (`isolate_modalities`), which is what the reference model does
when a modality is absent: the video prediction cannot depend on the dummy.
"""

from __future__ import annotations

import importlib
import json
import os
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import LTX2Pipeline

from ltxtrainer.config import TrainerConfig
from ltxtrainer.data import PrecomputedDataset, reference_conditioning
from ltxtrainer.models.folder import require_model_folder
from ltxtrainer.models.ltx2_targets import lora_target_modules as lora_target_modules  # the family's presets
from ltxtrainer.training import flow_matching

FAMILY = "ltx2"
# Everything outside the repeated blocks stays unquantized (small, precision-sensitive), both streams.
QUANTIZE_EXCLUDE = [
    "proj_in", "audio_proj_in", "proj_out", "audio_proj_out", "norm_out", "audio_norm_out",
    "time_embed*", "audio_time_embed*", "av_cross_attn_*", "prompt_adaln*", "audio_prompt_adaln*",
    "caption_projection*", "audio_caption_projection*", "scale_shift_table", "audio_scale_shift_table",
]
# What a conditions file of an LTX-2 sample holds: the connector outputs [S, Dv] and [S, Da].
TEXT_CONDITIONS: dict[str, torch.dtype] = {"video_embeds": torch.float32, "audio_embeds": torch.float32}

# The pipeline's helpers are static methods: calling them keeps training and inference identical.
pack_latents = LTX2Pipeline._pack_latents
unpack_latents = LTX2Pipeline._unpack_latents
normalize_latents = LTX2Pipeline._normalize_latents
denormalize_latents = LTX2Pipeline._denormalize_latents
pack_audio_latents = LTX2Pipeline._pack_audio_latents
unpack_audio_latents = LTX2Pipeline._unpack_audio_latents
normalize_audio_latents = LTX2Pipeline._normalize_audio_latents
denormalize_audio_latents = LTX2Pipeline._denormalize_audio_latents

# STFT size of LTX-2's mel front end (ltx-core `AudioProcessor`, filter_length 1024); the audio
# VAE config carries the sample rate, hop and mel bins but not this.
N_FFT = 1024
LOG_MEL_FLOOR = 1e-5
# Gemma is left-padded to this many tokens, as `LTX2Pipeline` does by default.
TEXT_MAX_SEQUENCE_LENGTH = 1024


class AudioFileError(ValueError):
    """A clip's audio track cannot be read; the message names the file."""


# ---------------------------------------------------------------- loading


def _component_class(folder: Path, name: str):
    """The class model_index.json names for `name` (diffusers, transformers or diffusers' ltx2 package)."""
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    library, class_name = index[name]
    module = {"ltx2": "diffusers.pipelines.ltx2"}.get(library, library)
    return getattr(importlib.import_module(module), class_name)


def load_component(
    source: str | os.PathLike | None,
    name: str,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
):
    """One component of a checked LTX-2 folder (transformer, vae, audio_vae, vocoder, connectors,
    text_encoder, tokenizer, scheduler), offline, as the class its model_index.json names, so Gemma 3
    (LTX-2, 2.3) and Gemma 4 (2.5) load alike."""
    folder = require_model_folder(source)
    cls = _component_class(folder, name)
    if name in ("tokenizer", "scheduler"):  # no weights, no dtype
        return cls.from_pretrained(folder, subfolder=name, local_files_only=True)
    model = cls.from_pretrained(
        folder, subfolder=name, torch_dtype=dtype, local_files_only=True, use_safetensors=True
    )
    return model.to(device).eval()


def load_text_encoder(
    source: str | os.PathLike | None, device: torch.device, load_in_8bit: bool = False
) -> torch.nn.Module:
    """Gemma for precompute and validation prompts: bf16 on a GPU (8-bit through bitsandbytes with
    `load_in_8bit`, which a 24 GB card needs for Gemma 3 12B), fp32 on the CPU, where 8 bits save nothing."""
    if not (load_in_8bit and device.type == "cuda"):
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        return load_component(source, "text_encoder", dtype, device)
    from transformers import BitsAndBytesConfig

    folder = require_model_folder(source)
    return _component_class(folder, "text_encoder").from_pretrained(
        folder, subfolder="text_encoder", local_files_only=True, use_safetensors=True, torch_dtype=torch.bfloat16,
        quantization_config=BitsAndBytesConfig(load_in_8bit=True), device_map={"": device},
    ).eval()


def load_pipeline(source: str | os.PathLike | None, dtype: torch.dtype = torch.float32) -> LTX2Pipeline:
    """The whole `LTX2Pipeline` (validation with sound), offline."""
    folder = require_model_folder(source)
    return LTX2Pipeline.from_pretrained(folder, torch_dtype=dtype, local_files_only=True)


# ---------------------------------------------------------------- text


@dataclass
class TextEmbeddings:
    """What the transformer attends to for one caption, after the connectors.

    `video` [S, Dv] and `audio` [S, Da] hold the tokens the connectors' output mask marks as
    attended. That is all 1024, not only the caption's real tokens: with learnable registers (all
    released LTX-2 models: 128) the connectors move the real tokens to the front and fill the rest
    with register tokens that attend to the caption, and diffusers 0.42 marks every position as
    attended even without registers. Dropping any of them would change what the transformer sees
    compared with inference, so nothing is trimmed that the pipeline's transformer reads.
    """

    video: torch.Tensor
    audio: torch.Tensor


def text_embedding_bytes(connectors_config: dict, bytes_per_value: int = 2) -> int:
    """Bytes one stored caption takes (bf16 by default), for disk and memory estimates.

    Real models, 1024 tokens kept (registers): LTX-2 connectors are 30 heads x 128 = 3840 wide for
    video and audio, 1024 x 7680 x 2 B = 15.7 MB a caption; LTX-2.3's are 4096 (video) + 2048
    (audio), 12.6 MB. The raw Gemma 3 12B stack they are made from (49 hidden states x 3840 per
    token) would be 385 MB a caption in bf16.
    """
    video = (
        connectors_config["video_connector_num_attention_heads"]
        * connectors_config["video_connector_attention_head_dim"]
    )
    audio = (
        connectors_config["audio_connector_num_attention_heads"]
        * connectors_config["audio_connector_attention_head_dim"]
    )
    return TEXT_MAX_SEQUENCE_LENGTH * (video + audio) * bytes_per_value


@torch.no_grad()
def encode_prompts(
    tokenizer,
    text_encoder,
    connectors,
    prompts: list[str],
    max_sequence_length: int = TEXT_MAX_SEQUENCE_LENGTH,
) -> list[TextEmbeddings]:
    """Caption embeddings exactly as `LTX2Pipeline.__call__` makes them (Gemma hidden states stacked,
    left padding, connectors), one per prompt, kept to the tokens the transformer attends to.

    Storing these instead of Gemma's raw stack is what makes precompute affordable: see
    `text_embedding_bytes` for the real sizes (15.7 MB instead of 385 MB a caption)."""
    encoder_only = LTX2Pipeline(
        scheduler=None,
        vae=None,
        audio_vae=None,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        connectors=connectors,
        transformer=None,
        vocoder=None,
    )
    device = next(text_encoder.parameters()).device
    embeds, mask, _, _ = encoder_only.encode_prompt(
        prompts,
        do_classifier_free_guidance=False,
        max_sequence_length=max_sequence_length,
        device=device,
        dtype=text_encoder.dtype,
    )
    connector_dtype = next(connectors.parameters()).dtype
    video, audio, keep = connectors(embeds.to(connector_dtype), mask, padding_side=tokenizer.padding_side)
    keep = keep.bool()
    return [TextEmbeddings(video[i][keep[i]].cpu(), audio[i][keep[i]].cpu()) for i in range(len(prompts))]


def collate_text(embeddings: list[TextEmbeddings]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(video [B, S, Dv], audio [B, S, Da], mask [B, S]) padded on the right to the longest caption."""
    length = max(item.video.shape[0] for item in embeddings)
    video = torch.zeros(
        len(embeddings), length, embeddings[0].video.shape[-1], dtype=embeddings[0].video.dtype
    )
    audio = torch.zeros(
        len(embeddings), length, embeddings[0].audio.shape[-1], dtype=embeddings[0].audio.dtype
    )
    mask = torch.zeros(len(embeddings), length, dtype=torch.long)
    for i, item in enumerate(embeddings):
        tokens = item.video.shape[0]
        video[i, :tokens], audio[i, :tokens], mask[i, :tokens] = item.video, item.audio, 1
    return video, audio, mask


# ---------------------------------------------------------------- video


def latent_size(vae_config: dict, width: int, height: int, num_frames: int) -> tuple[int, int, int]:
    """(latent frames, latent height, latent width) of a WxHxF clip, as the pipeline computes them."""
    spatial = vae_config["spatial_compression_ratio"]
    temporal = vae_config["temporal_compression_ratio"]
    return (num_frames - 1) // temporal + 1, height // spatial, width // spatial


@torch.no_grad()
def encode_video(vae, video: torch.Tensor, patch_size: int = 1, patch_size_t: int = 1) -> torch.Tensor:
    """Packed, normalised latents [B, tokens, C] of pixel video [B, 3, F, H, W] in [-1, 1].

    The posterior mean, normalised with the VAE's statistics and packed with the pipeline's helpers,
    which is what `LTX2Pipeline.prepare_latents` does with given latents.
    """
    latents = vae.encode(video.to(vae.device, vae.dtype)).latent_dist.mode()
    latents = normalize_latents(latents, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    return pack_latents(latents, patch_size, patch_size_t)


# ---------------------------------------------------------------- audio


# Surround downmix to stereo at -3 dB for centre and surrounds (ITU-R BS.775), each side normalised
# to unit gain so nothing clips; channel order is ffmpeg's (FL, FR, FC, LFE, SL/BL, SR/BR, ...).
_SIDE_GAIN = 0.707


def _surround_to_stereo(waveform: torch.Tensor) -> torch.Tensor:
    """[6 or 8, samples] -> [2, samples]; the LFE channel is dropped, as in the usual downmix."""
    centre = waveform[2]
    left_extra, right_extra = waveform[4::2], waveform[5::2]  # SL (+BL), SR (+BR)
    norm = 1.0 + _SIDE_GAIN * (1 + left_extra.shape[0])
    left = (waveform[0] + _SIDE_GAIN * (centre + left_extra.sum(0))) / norm
    right = (waveform[1] + _SIDE_GAIN * (centre + right_extra.sum(0))) / norm
    return torch.stack([left, right])


def to_channels(waveform: torch.Tensor, channels: int) -> torch.Tensor:
    """[any channels, samples] -> [channels (1 or 2), samples] as LTX-2's audio VAE takes them.

    Mono is duplicated at full level for stereo (as Lightricks' trainer does), 5.1 and 7.1 are
    downmixed (`_surround_to_stereo`), other layouts averaged.
    """
    source = waveform.shape[0]
    if channels == 1:
        return waveform.mean(0, keepdim=True)
    if source == 1:
        return waveform.repeat(2, 1)
    if source == 2:
        return waveform
    if source in (6, 8):
        return _surround_to_stereo(waveform)
    return waveform.mean(0, keepdim=True).repeat(2, 1)


def read_audio(
    path: str | os.PathLike, sample_rate: int, channels: int, start_s: float, duration_s: float
) -> torch.Tensor | None:
    """The clip's sound as float32 [channels, round(duration_s * sample_rate)], or None without an audio track.

    PyAV decodes and its resampler (ffmpeg's swresample) converts to the audio VAE's rate, keeping
    the channels; `to_channels` then maps mono/stereo/5.1/7.1 to what the VAE takes. Audio shorter
    than the clip is padded with silence, longer is cut.
    """
    import av

    path = Path(path)
    wanted = round(duration_s * sample_rate)
    start = round(start_s * sample_rate)
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as error:
        raise AudioFileError(f"cannot open {path}: {error}") from error
    pieces: list[np.ndarray] = []
    with container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        collected = 0
        try:
            for frame in container.decode(stream):
                for converted in resampler.resample(frame):
                    pieces.append(converted.to_ndarray())
                    collected += pieces[-1].shape[1]
                if collected >= start + wanted:
                    break
            else:
                for converted in resampler.resample(None):
                    pieces.append(converted.to_ndarray())
        except av.error.FFmpegError as error:
            raise AudioFileError(f"cannot decode the audio of {path}: {error}") from error
        source_channels = stream.codec_context.channels
    decoded = np.concatenate(pieces, axis=1) if pieces else np.zeros((source_channels, 0), dtype=np.float32)
    waveform = to_channels(
        torch.from_numpy(np.ascontiguousarray(decoded[:, start : start + wanted])), channels
    )
    if waveform.shape[1] < wanted:
        waveform = torch.nn.functional.pad(waveform, (0, wanted - waveform.shape[1]))
    return waveform


def mel_spectrogram(waveform: torch.Tensor, audio_vae_config: dict) -> torch.Tensor:
    """Log-mel spectrogram [B, channels, frames, mel_bins] of waveforms [B, channels, samples].

    LTX-2's front end (ltx-core `AudioProcessor`): Hann-windowed STFT of 1024, centred with
    reflection, magnitude (power 1), Slaney mel filters from 0 Hz to Nyquist, log of the values
    clamped at 1e-5. The filter bank is transformers' (torchaudio is not a dependency).
    """
    from transformers.audio_utils import mel_filter_bank

    sample_rate = audio_vae_config["sample_rate"]
    filters = mel_filter_bank(
        num_frequency_bins=N_FFT // 2 + 1,
        num_mel_filters=audio_vae_config["mel_bins"],
        min_frequency=0.0,
        max_frequency=sample_rate / 2.0,
        sampling_rate=sample_rate,
        norm="slaney",
        mel_scale="slaney",
    )
    batch, channels, samples = waveform.shape
    spectrum = torch.stft(
        waveform.reshape(batch * channels, samples).float(),
        n_fft=N_FFT,
        hop_length=audio_vae_config["mel_hop_length"],
        win_length=N_FFT,
        window=torch.hann_window(N_FFT, device=waveform.device),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    ).abs()  # [B*C, freq, frames]
    mel = torch.einsum("nft,fm->ntm", spectrum, torch.from_numpy(filters).float().to(waveform.device))
    mel = torch.log(torch.clamp(mel, min=LOG_MEL_FLOOR))
    return mel.reshape(batch, channels, mel.shape[1], mel.shape[2])


def audio_latent_frames(audio_vae_config: dict, duration_s: float) -> int:
    """Latent audio frames the pipeline generates for `duration_s` seconds (25 a second for LTX-2)."""
    per_second = audio_vae_config["sample_rate"] / audio_vae_config["mel_hop_length"] / 4.0
    return round(duration_s * per_second)


@torch.no_grad()
def encode_audio(audio_vae, waveform: torch.Tensor, duration_s: float) -> torch.Tensor:
    """Packed, normalised audio latents [B, L, C * mel_bins/4] of waveforms [B, channels, samples].

    The waveform must already be at the audio VAE's rate and channel count (`read_audio` does
    that). Latents are cut to the length the pipeline generates for `duration_s`, then packed and
    normalised in the pipeline's order (pack first: the statistics are per packed feature).
    """
    config = dict(audio_vae.config)
    mel = mel_spectrogram(waveform, config).to(audio_vae.device, audio_vae.dtype)
    latents = audio_vae.encode(mel).latent_dist.mode()
    frames = audio_latent_frames(config, duration_s)
    if latents.shape[2] < frames:
        raise ValueError(
            f"the waveform encoded to {latents.shape[2]} latent frames, fewer than the {frames} the pipeline "
            f"generates for {duration_s:.3f} s: pass at least duration_s of sound (read_audio pads to it)"
        )
    latents = pack_audio_latents(latents[:, :, :frames])
    return normalize_audio_latents(latents, audio_vae.latents_mean, audio_vae.latents_std)


# ---------------------------------------------------------------- training step


@dataclass
class LTX2Sample:
    """A batch as precompute stores it: packed normalised latents and connector outputs.

    `latent_frames/height/width` describe the video latents (all samples share one bucket);
    `audio_latents` is None for video-only training; `reference_latents` (IC-LoRA) are the packed
    latents of each clip's reference, encoded at 1/`reference_downscale_factor` of its width and height.
    """

    video_latents: torch.Tensor  # [B, tokens, C]
    latent_frames: int
    latent_height: int
    latent_width: int
    fps: float
    video_text: torch.Tensor  # [B, S, Dv]
    audio_text: torch.Tensor  # [B, S, Da]
    text_mask: torch.Tensor  # [B, S], 1 = attended
    audio_latents: torch.Tensor | None = None  # [B, L, C * M]
    reference_latents: torch.Tensor | None = None  # [B, tokens / N^2, C]
    reference_downscale_factor: int = 1


@dataclass
class LTX2StepInputs:
    """Noised inputs, targets and loss masks of one flow-matching step on both streams."""

    sample: LTX2Sample
    sigmas: torch.Tensor  # [B]
    noisy_video: torch.Tensor  # [B, tokens (+ reference tokens), C]
    video_timesteps: torch.Tensor  # [B], or [B, tokens (+ reference tokens)] with first-frame or reference conditioning
    video_target: torch.Tensor  # like noisy_video; zeros at the reference's tokens
    video_loss_mask: torch.Tensor  # [B, tokens (+ reference tokens)], False where clean
    noisy_audio: torch.Tensor | None  # [B, L, C*M]; None for video-only
    audio_target: torch.Tensor | None


def flow_matching_inputs(
    sample: LTX2Sample, sigmas: torch.Tensor, generator: torch.Generator, condition_first_frame: bool = False
) -> LTX2StepInputs:
    """x_t = (1 - sigma) x0 + sigma noise on both streams with the same sigma; targets noise - x0.

    With `condition_first_frame` the first latent frame's tokens stay clean (timestep 0) and out of
    the loss, as `LTX2ImageToVideoPipeline` feeds a given first image; the audio is noised as usual.
    A sample's reference latents (IC-LoRA) follow the target's tokens clean, at timestep 0 and out of
    the loss, in the order `LTX2InContextPipeline` appends them at inference.
    `sigmas` come from the trainer's sampler; noise is drawn from `generator` (CPU) so a resumed
    run draws the same.
    """
    video = sample.video_latents
    batch, tokens, _ = video.shape
    video_noise = torch.randn(video.shape, generator=generator, dtype=torch.float32).to(
        video.device, video.dtype
    )
    token_sigmas = sigmas.to(video.device, torch.float32)[:, None].expand(batch, tokens).clone()
    loss_mask = torch.ones(batch, tokens, dtype=torch.bool, device=video.device)
    if condition_first_frame:
        first = sample.latent_height * sample.latent_width
        token_sigmas[:, :first] = 0.0
        loss_mask[:, :first] = False
    noisy_video = (1.0 - token_sigmas[..., None]) * video + token_sigmas[..., None] * video_noise
    # Timesteps are sigma x 1000 as the pipeline passes scheduler timesteps; per token only when
    # some tokens are clean (per-sample values keep the adaptive norms at [B, 1, ...]).
    per_token = condition_first_frame or sample.reference_latents is not None
    video_timesteps = token_sigmas * 1000.0 if per_token else sigmas.to(video.device) * 1000.0
    video_target = video_noise - video
    reference = sample.reference_latents
    if reference is not None:
        clean = torch.zeros(batch, reference.shape[1], dtype=torch.float32, device=video.device)
        noisy_video = torch.cat([noisy_video, reference.to(noisy_video.dtype)], dim=1)
        video_timesteps = torch.cat([video_timesteps, clean], dim=1)
        video_target = torch.cat([video_target, torch.zeros_like(reference, dtype=video_target.dtype)], dim=1)
        loss_mask = torch.cat([loss_mask, clean.bool()], dim=1)
    audio = sample.audio_latents
    noisy_audio = audio_target = None
    if audio is not None:
        audio_noise = torch.randn(audio.shape, generator=generator, dtype=torch.float32).to(
            audio.device, audio.dtype
        )
        expanded = sigmas.to(audio.device, torch.float32)[:, None, None]
        noisy_audio = ((1.0 - expanded) * audio + expanded * audio_noise).to(audio.dtype)
        audio_target = audio_noise - audio
    return LTX2StepInputs(
        sample=sample,
        sigmas=sigmas.to(video.device),
        noisy_video=noisy_video.to(video.dtype),
        video_timesteps=video_timesteps,
        video_target=video_target,
        video_loss_mask=loss_mask,
        noisy_audio=noisy_audio,
        audio_target=audio_target,
    )


_UNWRAPPED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside its DDP/FSDP/compile wrappers, looked up once per wrapper.

    accelerate's `extract_model_from_parallel` walks every module to look for compiled regions:
    41 ms a step on the real LTX-2 with the template's adapters (15k modules), and the wrapping
    never changes during a run. The base is held weakly, so a finished run's model is not kept alive.
    """
    from accelerate.utils import extract_model_from_parallel

    base = _UNWRAPPED[model]() if model in _UNWRAPPED else None
    if base is None:
        base = extract_model_from_parallel(model)
        _UNWRAPPED[model] = weakref.ref(base)
    return base


def predict(transformer, inputs: LTX2StepInputs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The transformer's velocity predictions (video, audio or None), called as `LTX2Pipeline` calls it.

    Video-only: one zero audio token stands in for the audio stream and `isolate_modalities`
    switches the audio<->video cross-attention off, so nothing of it reaches the video. With a
    reference the RoPE coordinates of the whole sequence are given (`in_context_video_coords`).
    """
    sample = inputs.sample
    batch = sample.video_latents.shape[0]
    # The call goes through the (DDP/FSDP-)wrapped model; dtype and config are the model's own.
    base = unwrapped(transformer)
    dtype = base.dtype
    timesteps = inputs.sigmas * 1000.0
    video_coords = None if sample.reference_latents is None else in_context_video_coords(base.rope, sample)
    if inputs.noisy_audio is None:
        audio = torch.zeros(
            batch, 1, base.config.audio_in_channels, device=sample.video_latents.device
        )
        audio_frames = 1
    else:
        audio = inputs.noisy_audio
        audio_frames = audio.shape[1]
    video_prediction, audio_prediction = transformer(
        hidden_states=inputs.noisy_video.to(dtype),
        audio_hidden_states=audio.to(dtype),
        encoder_hidden_states=sample.video_text.to(dtype),
        audio_encoder_hidden_states=sample.audio_text.to(dtype),
        timestep=inputs.video_timesteps,
        audio_timestep=timesteps,
        sigma=timesteps,  # prompt cross-attention modulation (LTX-2.3)
        encoder_attention_mask=sample.text_mask,
        audio_encoder_attention_mask=sample.text_mask,
        num_frames=sample.latent_frames,
        height=sample.latent_height,
        width=sample.latent_width,
        fps=sample.fps,
        audio_num_frames=audio_frames,
        video_coords=video_coords,
        isolate_modalities=inputs.noisy_audio is None,
        use_cross_timestep=True,  # the pipeline's default
        return_dict=False,
    )
    return video_prediction, (None if inputs.noisy_audio is None else audio_prediction)


def in_context_video_coords(rope, sample: LTX2Sample) -> torch.Tensor:
    """RoPE coordinates [B, 3, target + reference tokens, 2] of the target's tokens, then its reference's.

    As `LTX2InContextPipeline` and Lightricks' video-to-video strategy build them: the reference's
    grid (W/N x H/N latents, same frames) in pixel coordinates with height and width multiplied by
    N, so the reference covers the target's extent and its times match the target's frames.
    """
    batch, device, factor = sample.video_latents.shape[0], sample.video_latents.device, sample.reference_downscale_factor
    target = rope.prepare_video_coords(
        batch, sample.latent_frames, sample.latent_height, sample.latent_width, device, fps=sample.fps
    )
    reference = rope.prepare_video_coords(
        batch, sample.latent_frames, sample.latent_height // factor, sample.latent_width // factor, device,
        fps=sample.fps,
    )
    reference[:, 1:] = reference[:, 1:] * factor
    return torch.cat([target, reference], dim=2)


def step_loss(
    inputs: LTX2StepInputs, video_prediction: torch.Tensor, audio_prediction: torch.Tensor | None
) -> torch.Tensor:
    """Video MSE over the loss mask, plus the audio MSE when there is audio (the reference weighting)."""
    squared = (video_prediction.float() - inputs.video_target.float()).pow(2).mean(dim=-1)
    mask = inputs.video_loss_mask.float()
    loss = (squared * mask).sum() / mask.sum().clamp(min=1.0)
    if audio_prediction is not None and inputs.audio_target is not None:
        loss = loss + (audio_prediction.float() - inputs.audio_target.float()).pow(2).mean()
    return loss


# ---------------------------------------------------------------- LoRA

COMFYUI_PREFIX = "diffusion_model."
LTXTRAINER_METADATA_KEY = "ltxtrainer_lora"


class LoraKeyError(ValueError):
    """An adapter targets a module ComfyUI's LTX-2 key map cannot name."""


def comfyui_state_dict(
    peft_state_dict: dict[str, torch.Tensor], rank: int, alpha: float
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The one LoRA file ComfyUI and `LTX2Pipeline.load_lora_weights` both load at the trained strength.

    Keys `diffusion_model.transformer_blocks.N.<module>.lora_A/B.weight` (module names inside the
    blocks are the same in diffusers, ComfyUI and Lightricks' code), alpha/rank folded into lora_B,
    no `.alpha` keys (diffusers refuses them) and no `lora_adapter_metadata` (diffusers would apply
    alpha/rank a second time); rank and alpha go under our own metadata key.
    `peft_state_dict` is `peft.get_peft_model_state_dict(transformer)`.
    """
    scale = alpha / rank
    tensors: dict[str, torch.Tensor] = {}
    for key, value in peft_state_dict.items():
        if not key.startswith("transformer_blocks.") or not key.endswith(
            (".lora_A.weight", ".lora_B.weight")
        ):
            raise LoraKeyError(
                f"LoRA key {key!r} is outside transformer_blocks.N.<module>.lora_A/B.weight; names outside the "
                "blocks differ between diffusers and ComfyUI (proj_in vs patchify_proj, ...)"
            )
        if key.endswith(".lora_B.weight"):
            value = (value.float() * scale).to(value.dtype)
        tensors[COMFYUI_PREFIX + key] = value.contiguous()
    record = {"family": "ltx2", "folded": True, "rank": rank, "alpha": alpha, "scale": scale}
    return tensors, {"format": "pt", LTXTRAINER_METADATA_KEY: json.dumps(record, sort_keys=True)}


# ---------------------------------------------------------------- the family interface


def load_transformer(
    source: str | os.PathLike | None, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> torch.nn.Module:
    return load_component(source, "transformer", dtype, device)


def open_dataset(config: TrainerConfig, transformer: torch.nn.Module) -> PrecomputedDataset:
    """Video latents and connector outputs, plus `audio_latents/` when the run trains audio and each
    clip's reference latents, encoded at 1/`reference_downscale_factor` of its size, in an IC-LoRA run.

    Batches keep one frame rate: the transformer takes one fps per call, and the audio length
    (25 latent frames a second) follows from frames and fps.
    """
    audio_channels = transformer.config.audio_in_channels if config.model.with_audio else None
    conditioning = reference_conditioning(config)
    return PrecomputedDataset(
        config.data.preprocessed_data_root,
        expected_channels=transformer.config.in_channels,
        conditions=TEXT_CONDITIONS,
        audio_channels=audio_channels,
        bucket_by_fps=True,
        reference_dir_name=conditioning.reference_dir_name if conditioning else None,
        reference_downscale_factor=conditioning.reference_downscale_factor if conditioning else 1,
    )


def collate(items: list[dict]) -> dict:
    """One bucket's items (same latent size and fps) as the fields of an `LTX2Sample`; reference
    latents (IC-LoRA) stack like the target's, all of one size since the downscale factor is per run."""
    video_text, audio_text, text_mask = collate_text(
        [TextEmbeddings(item["video_embeds"], item["audio_embeds"]) for item in items]
    )
    first = items[0]
    audio = [item["audio_latents"] for item in items if "audio_latents" in item]
    references = [item["reference_latents"] for item in items if "reference_latents" in item]
    return {
        "latents": torch.stack([item["latents"] for item in items]),
        "num_frames": first["num_frames"],
        "height": first["height"],
        "width": first["width"],
        "fps": first["fps"],
        "video_text": video_text,
        "audio_text": audio_text,
        "text_mask": text_mask,
        "audio_latents": torch.stack(audio) if audio else None,
        "reference_latents": torch.stack(references) if references else None,
        "reference_downscale_factor": first.get("reference_downscale_factor", 1),
    }


def training_loss(
    model: torch.nn.Module,
    batch: dict,
    config: TrainerConfig,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Joint (or video-only) flow-matching loss of one collated batch.

    Draw order, fixed for exact resume: sigmas (shifted by the video token count, as for 0.9),
    the first-frame coin, then the video and audio noise (`flow_matching_inputs`).
    """
    latents = batch["latents"]
    batch_size, tokens, _ = latents.shape
    sigmas = flow_matching.sample_sigmas(
        config.flow_matching.timestep_sampling_mode, config.flow_matching.timestep_sampling_params,
        batch_size, tokens, generator,
    )
    coin = torch.rand(1, generator=generator).item()  # drawn for every batch, so later draws never shift
    condition_first = coin < config.first_frame_conditioning_p and flow_matching.can_condition_first_frame(
        batch["num_frames"]
    )

    def to_device(tensor: torch.Tensor | None, to_dtype: torch.dtype | None = None) -> torch.Tensor | None:
        return None if tensor is None else tensor.to(device, to_dtype, non_blocking=True)

    sample = LTX2Sample(
        video_latents=to_device(latents),
        latent_frames=batch["num_frames"],
        latent_height=batch["height"],
        latent_width=batch["width"],
        fps=batch["fps"],
        video_text=to_device(batch["video_text"], dtype),
        audio_text=to_device(batch["audio_text"], dtype),
        text_mask=to_device(batch["text_mask"]),
        audio_latents=to_device(batch["audio_latents"]),
        reference_latents=to_device(batch["reference_latents"]),
        reference_downscale_factor=batch["reference_downscale_factor"],
    )
    inputs = flow_matching_inputs(sample, sigmas, generator, condition_first)
    video_prediction, audio_prediction = predict(model, inputs)
    return step_loss(inputs, video_prediction, audio_prediction)


def validation_renderer(
    model_dir: Path, config: TrainerConfig, dataset: PrecomputedDataset, device: torch.device, dtype: torch.dtype
):
    """`validation_ltx2.LTX2Validation`: Gemma prompts encoded now; mp4 files with sound later."""
    from ltxtrainer.training.validation_ltx2 import LTX2Validation

    return LTX2Validation(model_dir, config, device, dtype)
