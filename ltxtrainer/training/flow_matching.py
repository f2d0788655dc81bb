"""Flow matching as LTX-Video trains it (FIELD_NOTES §2).

x_t = (1 - sigma) * x0 + sigma * noise, the transformer predicts the velocity noise - x0, and the
loss is a masked MSE. Timesteps reach the transformer per token as sigma * 1000, which is how
first-frame conditioning keeps the first latent frame clean (sigma 0) inside the same batch.
"""

from __future__ import annotations

import torch

# Shift of the logit-normal sampler: linear in the token count, 0.95 at 1,024 and 2.05 at 4,096
# tokens (the values LTX-Video's scheduler uses as base_shift/max_shift), extrapolated beyond.
_BASE_TOKENS, _BASE_SHIFT = 1024, 0.95
_MAX_TOKENS, _MAX_SHIFT = 4096, 2.05
KNOWN_PARAMS = {"uniform": {"min_value", "max_value"}, "shifted_logit_normal": {"std"}}


def logit_normal_shift(token_count: int) -> float:
    slope = (_MAX_SHIFT - _BASE_SHIFT) / (_MAX_TOKENS - _BASE_TOKENS)
    return _BASE_SHIFT + slope * (token_count - _BASE_TOKENS)


def check_sampling_params(mode: str, params: dict) -> None:
    unknown = set(params) - KNOWN_PARAMS[mode]
    if unknown:
        raise ValueError(
            f"flow_matching.timestep_sampling_params: unknown {sorted(unknown)} for mode '{mode}' "
            f"(allowed: {sorted(KNOWN_PARAMS[mode])})"
        )


def sample_sigmas(
    mode: str, params: dict, batch_size: int, token_count: int, generator: torch.Generator
) -> torch.Tensor:
    """One noise level in (0, 1) per sample, float32 on the CPU generator's device."""
    if mode == "uniform":
        low, high = float(params.get("min_value", 0.0)), float(params.get("max_value", 1.0))
        return low + (high - low) * torch.rand(batch_size, generator=generator)
    std = float(params.get("std", 1.0))
    normal = torch.randn(batch_size, generator=generator) * std + logit_normal_shift(token_count)
    return torch.sigmoid(normal)


def first_frame_token_count(height: int, width: int) -> int:
    """Tokens of the first latent frame (tokens are ordered frame by frame, then rows, then columns)."""
    return height * width


def can_condition_first_frame(num_frames: int) -> bool:
    """First-frame conditioning needs a frame after the first: in a one-frame latent (an image)
    every token would be clean, so the loss and its gradient would be zero while the optimizer
    still steps and the schedule advances."""
    return num_frames > 1


def noisy_inputs(
    latents: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor, clean_first_tokens: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(noisy latents, timesteps, velocity target, loss mask) for packed latents [B, T, C].

    With `clean_first_tokens` > 0 those tokens keep sigma 0 (no noise, timestep 0) and are left out
    of the loss: the model learns to continue a given first frame (image-to-video). Only then are
    timesteps given per token ([B, T]); otherwise one per sample ([B]), as the pipeline passes them,
    which keeps the transformer's adaptive-norm values at [B, 1, ...] instead of one set per token
    (less compute and, at 13B sizes, gigabytes less activation memory).
    """
    batch, tokens, _ = latents.shape
    if not clean_first_tokens:
        expanded = sigmas[:, None, None]
        noisy = (1.0 - expanded) * latents + expanded * noise
        loss_mask = torch.ones(batch, tokens, dtype=torch.bool, device=latents.device)
        return noisy, torch.round(sigmas * 1000.0), noise - latents, loss_mask
    token_sigmas = sigmas[:, None].expand(batch, tokens).clone()
    token_sigmas[:, :clean_first_tokens] = 0.0
    loss_mask = torch.ones(batch, tokens, dtype=torch.bool, device=latents.device)
    loss_mask[:, :clean_first_tokens] = False
    noisy = (1.0 - token_sigmas[..., None]) * latents + token_sigmas[..., None] * noise
    return noisy, torch.round(token_sigmas * 1000.0), noise - latents, loss_mask


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    squared = (prediction.float() - target.float()).pow(2).mean(dim=-1)
    mask = loss_mask.float()
    return (squared * mask).sum() / mask.sum().clamp(min=1.0)


def per_step_seed(seed: int, micro_step: int, rank: int, world: int = 1) -> int:
    """A seed that depends only on (run seed, global micro-batch), so a resumed run draws the same noise.

    The global micro-batch `micro_step * world + rank` is the position of this rank's batch in the
    run's batch list (`BucketBatchOrder` deals batch k to rank k % world), so N ranks draw exactly
    what one process with N times the gradient accumulation draws for the same batches.
    """
    return (seed * 1_000_003 + (micro_step * world + rank) * 7919) % (2**63 - 1)
