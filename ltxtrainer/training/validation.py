"""Validation videos with the diffusers LTX pipeline and the adapter being trained.

Prompt embeddings are computed once before training (the text encoder is then freed), so during
training neither T5 nor the VAE occupies GPU memory; the VAE visits the GPU only while decoding.
The pipeline gets `frame_rate` (the reference trainer forgot it, so its samples used 25 fps rope
scaling whatever the data), and first-frame images are cropped as width x height.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ltxtrainer.config import ValidationConfig


@dataclass
class ValidationInputs:
    prompts: list[str]
    prompt_embeds: torch.Tensor  # [N, L, D]
    prompt_masks: torch.Tensor
    negative_embeds: torch.Tensor  # [1, L, D]
    negative_mask: torch.Tensor


def encode_validation_prompts(
    model_source: str,
    validation: ValidationConfig,
    device: torch.device,
    load_in_8bit: bool = False,
    max_sequence_length: int = 128,
) -> ValidationInputs:
    """Encode once, then free T5 (its 9 GB would otherwise sit next to the transformer all run)."""
    from ltxtrainer.models import ltx_video

    tokenizer = ltx_video.load_tokenizer(model_source)
    # 8-bit T5 (bitsandbytes) needs CUDA; on the CPU the flag has nothing to save.
    eight_bit = load_in_8bit and device.type == "cuda"
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


def _load_image(path: str, width: int, height: int):
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
    """Render every validation prompt to `output_dir/prompt_<i>_<j>.mp4`; returns the files."""
    from diffusers import LTXImageToVideoPipeline, LTXPipeline

    from ltxtrainer.media import write_video

    width, height, frames = validation.video_dims
    copies = validation.videos_per_prompt
    was_training = transformer.training
    transformer.eval()
    vae_device = next(vae.parameters()).device
    vae.to(device)
    components = {"scheduler": scheduler, "vae": vae, "text_encoder": None, "tokenizer": None, "transformer": transformer}
    written = []
    try:
        for index in range(len(inputs.prompts)):
            image_path = validation.images[index] if validation.images and index < len(validation.images) else None
            pipeline_class = LTXImageToVideoPipeline if image_path else LTXPipeline
            pipeline = pipeline_class(**components)
            pipeline.set_progress_bar_config(disable=True)
            extra = {"image": _load_image(image_path, width, height)} if image_path else {}
            generator = torch.Generator(device="cpu").manual_seed(validation.seed)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                result = pipeline(
                    prompt_embeds=inputs.prompt_embeds[index : index + 1].repeat(copies, 1, 1).to(device),
                    prompt_attention_mask=inputs.prompt_masks[index : index + 1].repeat(copies, 1).to(device),
                    negative_prompt_embeds=inputs.negative_embeds.repeat(copies, 1, 1).to(device),
                    negative_prompt_attention_mask=inputs.negative_mask.repeat(copies, 1).to(device),
                    width=width,
                    height=height,
                    num_frames=frames,
                    frame_rate=validation.frame_rate,
                    num_inference_steps=validation.inference_steps,
                    guidance_scale=validation.guidance_scale,
                    generator=generator,
                    output_type="np",
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
