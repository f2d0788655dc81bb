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
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ltxtrainer.config import TrainerConfig, ValidationConfig
from ltxtrainer.data import PrecomputedDataset, load_precomputed

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
        self.model_dir, self.validation, self.device, self.dtype = model_dir, config.validation, device, dtype
        self.inputs = encode_validation_prompts(
            str(model_dir), config.validation, device, dataset_text_length(dataset),
            config.acceleration.load_text_encoder_in_8bit,
        )
        self.vae = self.scheduler = None

    def render(self, transformer: torch.nn.Module, output_dir: Path) -> list[Path]:
        from ltxtrainer.models import ltx_video

        if self.vae is None:
            self.vae = ltx_video.load_vae(self.model_dir, dtype=self.dtype)
            self.scheduler = ltx_video.load_scheduler(self.model_dir)
        return sample_videos(
            transformer, self.vae, self.scheduler, self.inputs, self.validation, output_dir, self.device, self.dtype
        )


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
) -> list[Path]:
    """Render every validation prompt to `output_dir/prompt_<i>_<j>.mp4`; returns the files.

    `dtype` is the frozen weights' dtype and `validation.frame_rate` must be resolved (the trainer
    fills it from the dataset when the config leaves it empty).
    """
    from diffusers import LTXImageToVideoPipeline, LTXPipeline

    from ltxtrainer.media import write_video

    width, height, frames = validation.video_dims
    copies = validation.videos_per_prompt
    was_training = transformer.training
    transformer.eval()
    vae_device = next(vae.parameters()).device
    vae.to(device)
    components = {"scheduler": scheduler, "vae": vae, "text_encoder": None, "tokenizer": None, "transformer": transformer}
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
            pipeline = pipeline_class(**components)
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
                path = output_dir / f"prompt_{index:02d}_{video_index:02d}.mp4"
                written.append(write_video(path, pixels, validation.frame_rate))
    finally:
        vae.to(vae_device)
        transformer.train(was_training)
    return written
