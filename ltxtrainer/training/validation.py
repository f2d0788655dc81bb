"""Validation videos with the diffusers LTX pipeline and the adapter being trained.

Prompt embeddings are computed once before training (the text encoder is then freed), so during
training neither T5 nor the VAE occupies GPU memory; the VAE visits the GPU only while decoding.
The pipeline gets `frame_rate` (the reference trainer forgot it, so its samples used 25 fps rope
scaling whatever the data), and first-frame images are cropped as width x height.

What the pipeline is given follows inference with `LTXPipeline.from_pretrained(..., torch_dtype=bf16)`:
prompts are encoded at the dataset's own T5 length (T5 runs without a mask, so the padding length
changes the embeddings the LoRA was trained on), the embeddings reach the pipeline in the frozen
weights' dtype (the pipeline casts its latents to the embeddings' dtype before every transformer
call, and the trainer's model runs without autocast), and a VAE with timestep conditioning decodes
with the noise diffusers' examples use.

An IC-LoRA run (`conditioning.mode: reference_video`) reads each prompt's `validation.reference_videos`
entry before training (a wrong count or an unreadable file stops the run at once, named), encodes it
once with the VAE as preprocess encodes the training references, and renders through diffusers' own
pipelines with `ltx_video.ReferenceConditionedTransformer` as their transformer: the reference's clean
tokens join every denoising step as in training. Each mp4 shows reference | result side by side.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ltxtrainer.config import ConfigError, TrainerConfig, ValidationConfig
from ltxtrainer.data import PrecomputedDataset, load_precomputed
from ltxtrainer.media import MediaError, read_frames, resize_and_crop

# diffusers' LTX examples decode 0.9.1+ VAEs (timestep-conditioned decoders) with a little noise.
DECODE_TIMESTEP = 0.05
DECODE_NOISE_SCALE = 0.025


@dataclass
class ValidationInputs:
    prompts: list[str]
    prompt_embeds: torch.Tensor  # [N, L, D]
    prompt_masks: torch.Tensor
    negative_embeds: torch.Tensor  # [1, L, D]
    negative_mask: torch.Tensor


def dataset_text_length(dataset: PrecomputedDataset) -> int:
    """The T5 length the dataset's captions were encoded at (the most common one, should they differ)."""
    # memory-mapped: only the shape is needed, not every embedding read from disk
    lengths = Counter(load_precomputed(sample.conditions_path, mmap=True)["prompt_embeds"].shape[0]
                      for sample in dataset.samples)
    return lengths.most_common(1)[0][0]


def dataset_frame_rate(dataset: PrecomputedDataset) -> float:
    """The median fps of the dataset's clips, as indexing read them (files written before fps was stored
    count as data.DEFAULT_FPS, as in training)."""
    return float(statistics.median(sample.fps for sample in dataset.samples))


def encode_validation_prompts(
    model_source: str,
    validation: ValidationConfig,
    device: torch.device,
    max_sequence_length: int,
    load_in_8bit: bool = False,
    use_8bit_on: tuple[str, ...] = ("cuda",),
) -> ValidationInputs:
    """Encode once, then free T5 (its 9 GB would otherwise sit next to the transformer all run).

    `max_sequence_length` must be the dataset's own (`dataset_text_length`). 8-bit T5 (bitsandbytes)
    is used on the device types in `use_8bit_on`: a CUDA GPU; on the CPU the flag has nothing to save.
    """
    from ltxtrainer.models import ltx_video

    tokenizer = ltx_video.load_tokenizer(model_source)
    eight_bit = load_in_8bit and device.type in use_8bit_on
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    text_encoder = ltx_video.load_text_encoder(model_source, dtype=dtype, device=device, load_in_8bit=eight_bit)
    embeds, masks = ltx_video.encode_prompts(tokenizer, text_encoder, validation.prompts, max_sequence_length)
    negative, negative_mask = ltx_video.encode_prompts(
        tokenizer, text_encoder, [validation.negative_prompt], max_sequence_length
    )
    del text_encoder
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return ValidationInputs(
        validation.prompts, embeds.float().cpu(), masks.cpu(), negative.float().cpu(), negative_mask.cpu()
    )


class LTXVideoValidation:
    """LTX-Video 0.9's validation renderer (`models.family.ValidationRenderer`).

    T5 runs once here, at the dataset's own length; the VAE and scheduler load at the first render.
    """

    def __init__(
        self, model_dir: Path, config: TrainerConfig, dataset: PrecomputedDataset, device: torch.device,
        dtype: torch.dtype,
    ):
        from ltxtrainer.models import ltx_video

        self.model_dir, self.validation, self.device, self.dtype = model_dir, config.validation, device, dtype
        # Read before T5 loads: a wrong reference list should cost the user seconds, not a model load.
        self.reference_videos = (
            load_reference_videos(config.validation.reference_videos, config.validation.prompts,
                                  *config.validation.video_dims)
            if ltx_video.trains_with_reference(config) else None
        )
        self.inputs = encode_validation_prompts(
            str(model_dir), config.validation, device, dataset_text_length(dataset),
            config.acceleration.load_text_encoder_in_8bit,
        )
        self.vae = self.scheduler = None
        self.reference_latents: list[torch.Tensor] | None = None

    def render(self, transformer: torch.nn.Module, output_dir: Path) -> list[Path]:
        from ltxtrainer.models import ltx_video

        if self.vae is None:
            self.vae = ltx_video.load_vae(self.model_dir, dtype=self.dtype)
            self.scheduler = ltx_video.load_scheduler(self.model_dir)
            if self.reference_videos is not None:
                self.reference_latents = encode_reference_videos(self.vae, self.reference_videos, self.device)
        return sample_videos(
            transformer, self.vae, self.scheduler, self.inputs, self.validation, output_dir, self.device, self.dtype,
            references=None if self.reference_videos is None else list(zip(self.reference_videos,
                                                                            self.reference_latents, strict=True)),
        )


def load_reference_videos(
    paths: list[str] | None, prompts: list[str], width: int, height: int, frames: int
) -> list[np.ndarray]:
    """Each prompt's reference video (`validation.reference_videos`, one per prompt) as its first `frames`
    frames [F, height, width, 3] uint8, resized and centre-cropped as preprocess cuts the training clips.

    An LTX-Video 0.9 reference has its target's size and length (as in training), so a shorter video
    is refused rather than stretched."""
    if not paths or len(paths) != len(prompts):
        raise ConfigError(
            f"conditioning.mode is reference_video: validation.reference_videos needs one video per validation "
            f"prompt ({len(prompts)}), got {len(paths or [])}. Give each prompt the reference (edges, depth, "
            "pose...) its result should follow, or turn validation off (validation.interval: null)."
        )
    videos = []
    for index, path in enumerate(paths):
        try:
            video = read_frames(path, count=frames)
        except MediaError as error:  # the message names the file and the reason
            raise ConfigError(f"validation.reference_videos[{index}]: {error}") from None
        if len(video) < frames:
            raise ConfigError(
                f"validation.reference_videos[{index}]: {path} has {len(video)} frames, but validation.video_dims "
                f"asks for {frames}; use a longer reference or fewer frames."
            )
        videos.append(resize_and_crop(video, width, height))
    return videos


def encode_reference_videos(vae: torch.nn.Module, videos: list[np.ndarray], device: torch.device) -> list[torch.Tensor]:
    """Packed, normalised latents [1, tokens, C] of each reference, encoded as preprocess encodes the
    training references (`preprocess.encode_frames`), once per run; kept on the CPU between renders."""
    from ltxtrainer.preprocess import encode_frames

    vae_device = next(vae.parameters()).device
    vae.to(device)
    try:
        return [encode_frames(vae, video)[None].cpu() for video in videos]
    finally:
        vae.to(vae_device)


def side_by_side(reference: np.ndarray, result: np.ndarray) -> np.ndarray:
    """[F, H, 2W, 3]: the reference on the left, the result on the right."""
    return np.concatenate([reference[: len(result)], result], axis=2)


def load_first_frame(path: str, width: int, height: int):
    from PIL import Image

    from ltxtrainer.media import resize_and_crop

    frame = np.asarray(Image.open(path).convert("RGB"))[None]
    return Image.fromarray(resize_and_crop(frame, width, height)[0])


@torch.no_grad()
def sample_videos(
    transformer: torch.nn.Module,
    vae: torch.nn.Module,
    scheduler,
    inputs: ValidationInputs,
    validation: ValidationConfig,
    output_dir: Path,
    device: torch.device,
    dtype: torch.dtype,
    references: list[tuple[np.ndarray, torch.Tensor]] | None = None,
) -> list[Path]:
    """Render every validation prompt to `output_dir/prompt_<i>_<j>.mp4`; returns the files.

    `dtype` is the frozen weights' dtype and `validation.frame_rate` must be resolved (the trainer
    fills it from the dataset when the config leaves it empty). `references` (IC-LoRA) holds each
    prompt's reference frames and latents: the latents guide the render, the frames go beside it.
    """
    from diffusers import LTXImageToVideoPipeline, LTXPipeline

    from ltxtrainer.media import write_video
    from ltxtrainer.models.ltx_video import ReferenceConditionedTransformer

    width, height, frames = validation.video_dims
    copies = validation.videos_per_prompt
    was_training = transformer.training
    transformer.eval()
    vae_device = next(vae.parameters()).device
    vae.to(device)
    components = {"scheduler": scheduler, "vae": vae, "text_encoder": None, "tokenizer": None}
    decode = (
        {"decode_timestep": DECODE_TIMESTEP, "decode_noise_scale": DECODE_NOISE_SCALE}
        if vae.config.timestep_conditioning else {}
    )

    def batch(tensor: torch.Tensor, float_dtype: torch.dtype | None = None) -> torch.Tensor:
        return tensor.repeat(copies, *[1] * (tensor.dim() - 1)).to(device, float_dtype)
    written = []
    try:
        for index in range(len(inputs.prompts)):
            image_path = validation.images[index] if validation.images and index < len(validation.images) else None
            pipeline_class = LTXImageToVideoPipeline if image_path else LTXPipeline
            model, reference_frames = transformer, None
            if references is not None:
                reference_frames, reference_latents = references[index]
                model = ReferenceConditionedTransformer(transformer, reference_latents.to(device))
            pipeline = pipeline_class(**components, transformer=model)
            pipeline.set_progress_bar_config(disable=True)
            extra = {"image": load_first_frame(image_path, width, height)} if image_path else {}
            generator = torch.Generator(device="cpu").manual_seed(validation.seed)
            result = pipeline(
                prompt_embeds=batch(inputs.prompt_embeds[index : index + 1], dtype),
                prompt_attention_mask=batch(inputs.prompt_masks[index : index + 1]),
                negative_prompt_embeds=batch(inputs.negative_embeds, dtype),
                negative_prompt_attention_mask=batch(inputs.negative_mask),
                width=width,
                height=height,
                num_frames=frames,
                frame_rate=validation.frame_rate,
                num_inference_steps=validation.inference_steps,
                guidance_scale=validation.guidance_scale,
                generator=generator,
                output_type="np",
                **decode,
                **extra,
            )
            for video_index, video in enumerate(result.frames):
                pixels = (np.clip(video, 0.0, 1.0) * 255).round().astype(np.uint8)
                if reference_frames is not None:
                    pixels = side_by_side(reference_frames, pixels)
                path = output_dir / f"prompt_{index:02d}_{video_index:02d}.mp4"
                written.append(write_video(path, pixels, validation.frame_rate))
    finally:
        vae.to(vae_device)
        transformer.train(was_training)
    return written
