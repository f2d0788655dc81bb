"""Flow-matching arithmetic (FIELD_NOTES §2): noise levels, the velocity target, first-frame conditioning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ltxtrainer.training import flow_matching

REPO = Path(__file__).resolve().parents[1]


def test_shift_is_linear_in_the_token_count():
    assert flow_matching.logit_normal_shift(1024) == pytest.approx(0.95)
    assert flow_matching.logit_normal_shift(4096) == pytest.approx(2.05)
    assert flow_matching.logit_normal_shift(8192) > 2.05  # extrapolated beyond


def test_sigmas_follow_the_chosen_sampler():
    generator = torch.Generator().manual_seed(0)
    uniform = flow_matching.sample_sigmas("uniform", {"min_value": 0.2, "max_value": 0.4}, 1000, 4032, generator)
    assert 0.2 <= uniform.min() and uniform.max() <= 0.4
    many_tokens = flow_matching.sample_sigmas("shifted_logit_normal", {}, 4000, 4096, generator)
    few_tokens = flow_matching.sample_sigmas("shifted_logit_normal", {}, 4000, 1024, generator)
    assert many_tokens.median() > few_tokens.median() > 0.5  # more tokens, noisier training
    with pytest.raises(ValueError, match="allowed"):
        flow_matching.check_sampling_params("uniform", {"std": 1.0})


def test_noisy_inputs_without_conditioning_use_one_timestep_per_sample():
    latents, noise = torch.randn(2, 12, 4), torch.randn(2, 12, 4)
    sigmas = torch.tensor([0.25, 0.5])
    noisy, timesteps, target, mask = flow_matching.noisy_inputs(latents, noise, sigmas, 0)
    torch.testing.assert_close(noisy[1], 0.5 * latents[1] + 0.5 * noise[1])
    torch.testing.assert_close(target, noise - latents)
    assert timesteps.tolist() == [250.0, 500.0] and bool(mask.all())


def test_first_frame_tokens_stay_clean_and_leave_the_loss():
    latents, noise = torch.randn(2, 12, 4), torch.randn(2, 12, 4)
    clean = flow_matching.first_frame_token_count(height=2, width=2)
    noisy, timesteps, target, mask = flow_matching.noisy_inputs(latents, noise, torch.tensor([0.7, 0.9]), clean)
    assert timesteps.shape == (2, 12)
    assert timesteps[:, :clean].eq(0).all() and timesteps[0, clean:].eq(700).all()
    torch.testing.assert_close(noisy[:, :clean], latents[:, :clean])
    assert not mask[:, :clean].any() and mask[:, clean:].all()
    prediction = target.clone()
    prediction[:, :clean] += 100.0  # errors on the clean frame are not counted
    assert flow_matching.masked_mse(prediction, target, mask).item() == pytest.approx(0.0)


def test_per_step_seeds_differ_by_step_and_rank_and_repeat_exactly_in_another_process():
    seeds = {flow_matching.per_step_seed(42, step, rank, world=4) for step in range(50) for rank in range(4)}
    assert len(seeds) == 200
    # Rank r of 4 at micro-step m draws what one process draws for the same batch, micro-step 4m + r.
    assert flow_matching.per_step_seed(42, 7, 3, world=4) == flow_matching.per_step_seed(42, 31, 0)
    # A resumed run is a new process (another hash seed, other global generators): it must draw
    # the same seeds as the run it continues.
    code = (
        "import random, torch; random.seed(7); torch.manual_seed(7); from ltxtrainer.training import flow_matching; "
        "print([flow_matching.per_step_seed(42, s, r) for s in (0, 7, 10_000) for r in (0, 1)])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, check=True)
    here = [flow_matching.per_step_seed(42, s, r) for s in (0, 7, 10_000) for r in (0, 1)]
    assert done.stdout.strip() == str(here)
