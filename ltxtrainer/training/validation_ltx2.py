"""LTX-2 validation videos with sound, rendered by `LTX2Pipeline` with the adapter being trained.

Gemma runs once, before training: the prompts' stacked hidden states (what `LTX2Pipeline.encode_prompt`
returns) are kept and the text encoder freed, so during training neither Gemma (12 B) nor the VAEs
occupy the GPU. At each render the pipeline gets those embeddings, runs the connectors itself, and
returns frames and a vocoder waveform; both go into one mp4 (H.264 + AAC) written with PyAV.
A first-frame image turns the render into `LTX2ImageToVideoPipeline`. An IC-LoRA run
(`conditioning.mode: reference_video`) renders with `LTX2InContextPipeline`, each prompt guided by
its `validation.reference_videos` entry encoded at 1/`reference_downscale_factor` of the size (as the
training references were), and saves the reference beside the result (reference | result).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from ltxtrainer.config import ConfigError, TrainerConfig
from ltxtrainer.media import MediaError, read_frames, resize_and_crop
from ltxtrainer.models import ltx2
from ltxtrainer.training.validation import load_first_frame

AUDIO_CODEC = "aac"
AUDIO_BITRATE = 128_000
# Pixels per latent cell of every LTX VAE (config.py checks video_dims against the same grid).
VAE_PIXEL_GRID = 32


class LTX2Validation:
    """LTX-2's validation renderer (`models.family.ValidationRenderer`)."""

    def __init__(self, model_dir: Path, config: TrainerConfig, device: torch.device, dtype: torch.dtype):
        self.model_dir, self.validation, self.device, self.dtype = model_dir, config.validation, device, dtype
        self.embeds, self.masks, self.negative, self.negative_mask = _encode_prompts(
            model_dir, config.validation.prompts, config.validation.negative_prompt, device,
            config.acceleration.load_text_encoder_in_8bit,
        )
        self.components: dict | None = None
        conditioning = ltx2.reference_conditioning(config)
        self.reference_downscale_factor = conditioning.reference_downscale_factor if conditioning else 1
        self.references = None
        if conditioning:
            check_reference_size(*config.validation.video_dims[:2], self.reference_downscale_factor)
            self.references = load_reference_videos(
                config.validation.reference_videos, config.validation.prompts, *config.validation.video_dims
            )

    def _load_components(self) -> dict:
        if self.components is None:
            self.components = {
                name: ltx2.load_component(self.model_dir, name, self.dtype)
                for name in ("vae", "audio_vae", "vocoder", "connectors")
            }
            self.components["scheduler"] = ltx2.load_component(self.model_dir, "scheduler")
        return self.components

    @torch.no_grad()
    def render(self, transformer: torch.nn.Module, output_dir: Path) -> list[Path]:
        """Every prompt to `output_dir/prompt_<i>_<j>.mp4` with its sound track; returns the files."""
        from diffusers import LTX2ImageToVideoPipeline, LTX2InContextPipeline, LTX2Pipeline
        from diffusers.pipelines.ltx2 import LTX2ReferenceCondition, LTX2VideoCondition

        validation = self.validation
        width, height, frames = validation.video_dims
        copies = validation.videos_per_prompt
        components = self._load_components()
        for name in ("vae", "audio_vae", "vocoder", "connectors"):
            components[name].to(self.device)
        was_training = transformer.training
        transformer.eval()
        sample_rate = components["vocoder"].config.output_sampling_rate

        def batch(tensor: torch.Tensor, float_dtype: torch.dtype | None = None) -> torch.Tensor:
            return tensor.repeat(copies, *[1] * (tensor.dim() - 1)).to(self.device, float_dtype)

        written = []
        try:
            for index in range(len(validation.prompts)):
                image_path = validation.images[index] if validation.images and index < len(validation.images) else None
                reference = None if self.references is None else self.references[index]
                if reference is not None:
                    pipeline_class = LTX2InContextPipeline
                    # The pipeline resizes the reference to W/N x H/N itself, as preprocess encoded the training ones.
                    extra = {
                        "reference_conditions": [LTX2ReferenceCondition(frames=[Image.fromarray(f) for f in reference])],
                        "reference_downscale_factor": self.reference_downscale_factor,
                    }
                    if image_path:
                        extra["conditions"] = [LTX2VideoCondition(frames=load_first_frame(image_path, width, height))]
                else:
                    pipeline_class = LTX2ImageToVideoPipeline if image_path else LTX2Pipeline
                    extra = {"image": load_first_frame(image_path, width, height)} if image_path else {}
                pipeline = pipeline_class(
                    **components, text_encoder=None, tokenizer=None, transformer=transformer
                )
                pipeline.set_progress_bar_config(disable=True)
                video, audio = pipeline(
                    # diffusers 0.42 hands the embeddings to the connectors uncast: give them the weights' dtype.
                    prompt_embeds=batch(self.embeds[index : index + 1], self.dtype),
                    prompt_attention_mask=batch(self.masks[index : index + 1]),
                    negative_prompt_embeds=batch(self.negative, self.dtype),
                    negative_prompt_attention_mask=batch(self.negative_mask),
                    width=width,
                    height=height,
                    num_frames=frames,
                    frame_rate=validation.frame_rate,
                    num_inference_steps=validation.inference_steps,
                    guidance_scale=validation.guidance_scale,
                    generator=torch.Generator(device="cpu").manual_seed(validation.seed),
                    output_type="np",
                    return_dict=False,
                    **extra,
                )
                for video_index, pixels in enumerate(video):
                    path = output_dir / f"prompt_{index:02d}_{video_index:02d}.mp4"
                    frames_u8 = (np.clip(pixels, 0.0, 1.0) * 255).round().astype(np.uint8)
                    if reference is not None:
                        frames_u8 = side_by_side(reference, frames_u8)
                    written.append(
                        write_video_with_audio(
                            path, frames_u8, validation.frame_rate, audio[video_index].float().cpu(), sample_rate
                        )
                    )
        finally:
            for name in ("vae", "audio_vae", "vocoder", "connectors"):
                components[name].to("cpu")
            transformer.train(was_training)
        return written


def check_reference_size(width: int, height: int, factor: int) -> None:
    """The validation reference is encoded at W/N x H/N: that must lie on the VAE's grid, or its
    latents would cover less than the target and every position would be off."""
    if width % (VAE_PIXEL_GRID * factor) or height % (VAE_PIXEL_GRID * factor):
        raise ConfigError(
            f"validation.video_dims {width}x{height} with conditioning.reference_downscale_factor {factor}: the "
            f"reference would be encoded at {width / factor:g}x{height / factor:g}, off the VAE's "
            f"{VAE_PIXEL_GRID}-pixel grid. Use a width and height that are multiples of {VAE_PIXEL_GRID * factor}."
        )


def load_reference_videos(
    paths: list[str] | None, prompts: list[str], width: int, height: int, frames: int
) -> list[np.ndarray]:
    """Each prompt's reference video (`validation.reference_videos`, one per prompt) as its first
    `frames` frames [F, height, width, 3] uint8, resized and centre-cropped like the training clips.

    Read before training starts, so a missing or unreadable file stops the run at once, named."""
    if not paths or len(paths) != len(prompts):
        raise ConfigError(
            f"conditioning.mode is reference_video: validation.reference_videos needs one video per validation "
            f"prompt ({len(prompts)}), got {len(paths or [])}. Give each prompt the reference (edges, depth, "
            "pose...) its IC-LoRA result should follow, or turn validation off (validation.interval: null)."
        )
    videos = []
    for index, path in enumerate(paths):
        try:
            videos.append(resize_and_crop(read_frames(path, count=frames), width, height))
        except MediaError as error:  # the message names the file and the reason
            raise ConfigError(f"validation.reference_videos[{index}]: {error}") from None
    return videos


def side_by_side(reference: np.ndarray, result: np.ndarray) -> np.ndarray:
    """[F, H, 2W, 3]: the reference on the left, the result on the right; a reference shorter than the
    result holds its last frame."""
    shown = reference[np.minimum(np.arange(result.shape[0]), reference.shape[0] - 1)]
    return np.concatenate([shown, result], axis=2)


def _encode_prompts(
    model_dir: Path, prompts: list[str], negative_prompt: str, device: torch.device, load_in_8bit: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gemma's stacked hidden states and masks for the prompts and the negative prompt, then Gemma is freed."""
    from diffusers import LTX2Pipeline

    tokenizer = ltx2.load_component(model_dir, "tokenizer")
    text_encoder = ltx2.load_text_encoder(model_dir, device, load_in_8bit)
    encoder_only = LTX2Pipeline(
        scheduler=None, vae=None, audio_vae=None, text_encoder=text_encoder, tokenizer=tokenizer,
        connectors=None, transformer=None, vocoder=None,
    )
    embeds, masks, _, _ = encoder_only.encode_prompt(
        prompts, do_classifier_free_guidance=False, device=device, dtype=text_encoder.dtype
    )
    negative, negative_mask, _, _ = encoder_only.encode_prompt(
        [negative_prompt], do_classifier_free_guidance=False, device=device, dtype=text_encoder.dtype
    )
    del text_encoder, encoder_only
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return embeds.cpu(), masks.cpu(), negative.cpu(), negative_mask.cpu()


def write_video_with_audio(
    path: str | os.PathLike, frames: np.ndarray, fps: float, waveform: torch.Tensor, sample_rate: int
) -> Path:
    """[F, H, W, 3] uint8 frames (H.264) and a [channels, samples] waveform in [-1, 1] (AAC) in one mp4.

    Written under a temporary name and renamed, so a file that exists is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.{os.getpid()}.partial.mp4")
    rate = Fraction(fps).limit_denominator(1001)
    channels = waveform.shape[0]
    samples = waveform.clamp(-1.0, 1.0).numpy().astype(np.float32)
    try:
        with av.open(str(partial), "w") as container:
            video = container.add_stream("libx264", rate=rate)
            video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            audio = container.add_stream(AUDIO_CODEC, rate=sample_rate)
            audio.layout = "stereo" if channels == 2 else "mono"
            audio.bit_rate = AUDIO_BITRATE
            for frame in frames:
                container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(video.encode(None))
            # PyAV 18 re-frames audio for the encoder but drops the part of its last frame that is
            # short of the codec's frame size (1024 for AAC): pad with silence to whole frames.
            frame_size = audio.codec_context.frame_size
            padded = np.pad(samples, ((0, 0), (0, -samples.shape[1] % frame_size)))
            for start in range(0, padded.shape[1], frame_size):
                audio_frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(padded[:, start : start + frame_size]), format="fltp", layout=audio.layout.name
                )
                audio_frame.sample_rate, audio_frame.pts = sample_rate, start
                container.mux(audio.encode(audio_frame))
            container.mux(audio.encode(None))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
