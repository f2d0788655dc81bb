"""LTX-2 validation videos with sound, rendered by `LTX2Pipeline` with the adapter being trained.

Gemma runs once, before training: the prompts' stacked hidden states (what `LTX2Pipeline.encode_prompt`
returns) are kept and the text encoder freed, so during training neither Gemma (12 B) nor the VAEs
occupy the GPU. At each render the pipeline gets those embeddings, runs the connectors itself, and
returns frames and a vocoder waveform; both go into one mp4 (H.264 + AAC) written with PyAV.
A first-frame image turns the render into `LTX2ImageToVideoPipeline`.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from ltxtrainer.config import TrainerConfig
from ltxtrainer.models import ltx2
from ltxtrainer.training.validation import load_first_frame

AUDIO_CODEC = "aac"
AUDIO_BITRATE = 128_000


class LTX2Validation:
    """LTX-2's validation renderer (`models.family.ValidationRenderer`)."""

    def __init__(self, model_dir: Path, config: TrainerConfig, device: torch.device, dtype: torch.dtype):
        self.model_dir, self.validation, self.device, self.dtype = model_dir, config.validation, device, dtype
        self.embeds, self.masks, self.negative, self.negative_mask = _encode_prompts(
            model_dir, config.validation.prompts, config.validation.negative_prompt, device,
            config.acceleration.load_text_encoder_in_8bit,
        )
        self.components: dict | None = None

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
        from diffusers import LTX2ImageToVideoPipeline, LTX2Pipeline

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
                pipeline_class = LTX2ImageToVideoPipeline if image_path else LTX2Pipeline
                pipeline = pipeline_class(
                    **components, text_encoder=None, tokenizer=None, transformer=transformer
                )
                pipeline.set_progress_bar_config(disable=True)
                extra = {"image": load_first_frame(image_path, width, height)} if image_path else {}
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
