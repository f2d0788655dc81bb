"""Writing precomputed samples in the reference layout, for training tests that need data only."""

from __future__ import annotations

from pathlib import Path

import torch

from ltxtrainer.models.tiny import TINY_LATENT_CHANNELS, TINY_TEXT_HIDDEN


def write_sample(
    root: Path, name: str, frames: int, height: int, width: int, seed: int, text_length: int = 16, fps: float = 24.0
) -> None:
    """One random sample of latent size frames x height x width (already normalised and packed)."""
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(frames * height * width, TINY_LATENT_CHANNELS, generator=generator)
    embeds = torch.randn(text_length, TINY_TEXT_HIDDEN, generator=generator)
    mask = torch.zeros(text_length, dtype=torch.bool)
    mask[: text_length // 2] = True
    for kind, payload in (
        ("latents", {"latents": latents, "num_frames": frames, "height": height, "width": width, "fps": fps}),
        ("conditions", {"prompt_embeds": embeds, "prompt_attention_mask": mask}),
    ):
        path = root / ".precomputed" / kind / f"{name}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload, path)


def write_legacy_sample(root: Path, index: int, frames: int, height: int, width: int, seed: int) -> None:
    """A sample as the reference trainer wrote them before late May 2025: flat numbered names, no fps."""
    write_sample(root, f"clip{index}", frames, height, width, seed)
    precomputed = root / ".precomputed"
    latents_path = precomputed / "latents" / f"clip{index}.pt"
    latents = torch.load(latents_path, weights_only=True)
    del latents["fps"]
    torch.save(latents, precomputed / "latents" / f"latent_{index:08d}.pt")
    latents_path.unlink()
    (precomputed / "conditions" / f"clip{index}.pt").rename(precomputed / "conditions" / f"condition_{index:08d}.pt")


def write_reference(
    root: Path, name: str, frames: int, height: int, width: int, seed: int, folder: str = "reference_latents"
) -> Path:
    """A sample's reference latents (IC-LoRA) in the latents layout, under `.precomputed/<folder>/`."""
    generator = torch.Generator().manual_seed(10_000 + seed)
    latents = torch.randn(frames * height * width, TINY_LATENT_CHANNELS, generator=generator)
    path = root / ".precomputed" / folder / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"latents": latents, "num_frames": frames, "height": height, "width": width, "fps": 24.0}, path)
    return path
