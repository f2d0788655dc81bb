"""Training math that must match the reference trainer and the pipeline (FIELD_NOTES §2): images
under first-frame conditioning, per-sample frame rates, whole batches, the reference's old file names."""

from __future__ import annotations

import random

import pytest
import torch
from safetensors.torch import load_file

from ltxtrainer.data import DEFAULT_FPS, BucketBatchOrder, DatasetError, PrecomputedDataset, collate
from ltxtrainer.models import ltx_video
from ltxtrainer.training import flow_matching
from tests.precomputed import write_legacy_sample, write_sample
from tests.test_training import step_losses, train


def test_an_image_under_first_frame_conditioning_still_trains(tiny_model_dir, tmp_path):
    """With conditioning on every batch, a one-frame latent must not be all clean tokens (loss 0)."""
    data = tmp_path / "images"
    write_sample(data, "still", frames=1, height=2, width=2, seed=0)
    output = tmp_path / "run"
    result = train(
        tiny_model_dir, data, output,
        **{"optimization.steps": 2, "optimization.first_frame_conditioning_p": 1.0, "optimization.learning_rate": 1e-2},
    )
    assert all(loss > 0.1 for loss in step_losses(output)), step_losses(output)
    lora_b = [value for key, value in load_file(result.lora_path).items() if "lora_B" in key]
    assert any(value.abs().max() > 0 for value in lora_b), "no gradient reached the adapter"
    assert not flow_matching.can_condition_first_frame(1) and flow_matching.can_condition_first_frame(2)


def test_a_batch_of_two_frame_rates_gives_each_sample_its_own_rope_scale(tiny_model_dir, tmp_path):
    """One forward of a mixed batch equals each sample run alone with the pipeline's scale for its fps."""
    from diffusers import LTXVideoTransformer3DModel

    from ltxtrainer.models.ltx_video import batch_rope_interpolation_scale

    data = tmp_path / "data"
    write_sample(data, "slow", frames=3, height=2, width=2, seed=0, fps=12.0)
    write_sample(data, "fast", frames=3, height=2, width=2, seed=1, fps=50.0)
    dataset = PrecomputedDataset(data)
    assert len(dataset.buckets) == 1
    batch = collate([dataset[0], dataset[1]])
    assert batch["fps"].tolist() == [50.0, 12.0]  # sorted by file name: fast, slow

    transformer = LTXVideoTransformer3DModel.from_pretrained(tiny_model_dir, subfolder="transformer").eval()
    common = {"num_frames": 3, "height": 2, "width": 2, "return_dict": False}
    with torch.no_grad():
        together = transformer(
            hidden_states=batch["latents"], encoder_hidden_states=batch["prompt_embeds"],
            timestep=torch.tensor([500.0, 500.0]), encoder_attention_mask=batch["prompt_attention_mask"],
            rope_interpolation_scale=batch_rope_interpolation_scale(batch["fps"], torch.device("cpu")), **common,
        )[0]
        alone = [
            transformer(
                hidden_states=batch["latents"][i : i + 1], encoder_hidden_states=batch["prompt_embeds"][i : i + 1],
                timestep=torch.tensor([500.0]), encoder_attention_mask=batch["prompt_attention_mask"][i : i + 1],
                rope_interpolation_scale=ltx_video.rope_interpolation_scale(float(batch["fps"][i])), **common,
            )[0]
            for i in range(2)
        ]
    torch.testing.assert_close(together, torch.cat(alone), rtol=1e-5, atol=1e-6)
    # A batch of one frame rate gets exactly the pipeline's tuple.
    assert batch_rope_interpolation_scale(torch.tensor([24.0, 24.0]), torch.device("cpu")) == (8 / 24, 32, 32)
    # And the mixed batch trains as the templates run (bf16, gradient checkpointing).
    result = train(
        tiny_model_dir, data, tmp_path / "run",
        **{"optimization.steps": 2, "optimization.batch_size": 2, "acceleration.mixed_precision_mode": "bf16",
           "optimization.enable_gradient_checkpointing": True},
    )
    assert result.final_step == 2 and all(loss == loss for loss in step_losses(tmp_path / "run"))


def test_a_bucket_remainder_is_dropped_not_weighted_up():
    """Batches of 2 from buckets of 5 and 3: every batch is whole; only a bucket smaller than the
    batch makes a smaller one; over epochs every sample is still seen."""
    buckets = {(2, 2, 2): list(range(5)), (2, 2, 3): list(range(5, 8)), (2, 3, 3): [8]}
    order = BucketBatchOrder(buckets, batch_size=2, seed=3)
    assert order.batches_per_epoch == 2 + 1 + 1
    epochs = [[order.batch(epoch * order.batches_per_epoch + k) for k in range(order.batches_per_epoch)]
              for epoch in range(8)]
    for batches in epochs:
        assert sorted(len(batch) for batch in batches) == [1, 2, 2, 2]
        assert [8] in batches
        assert len({i for batch in batches for i in batch}) == 7  # one of 5 and one of 3 sit this epoch out
    assert {i for batches in epochs for batch in batches for i in batch} == set(range(9))


def test_two_ranks_split_whole_batches_and_resume_replays_the_same_ones():
    buckets = {(2, 2, 2): list(range(5)), (2, 2, 3): list(range(5, 9))}
    ranks = [BucketBatchOrder(buckets, batch_size=2, seed=1, rank=r, world=2) for r in range(2)]
    assert ranks[0].batches_per_epoch == ranks[1].batches_per_epoch == 2
    first_epoch = [r.batch(step) for r in ranks for step in range(2)]
    assert all(len(batch) == 2 for batch in first_epoch)
    assert len({i for batch in first_epoch for i in batch}) == 8  # no sample twice, one sits out
    # A resumed process builds its order anew, with other global random state, and asks from step 5 on.
    random.seed(12345)
    torch.manual_seed(12345)
    resumed = BucketBatchOrder(buckets, batch_size=2, seed=1, rank=1, world=2)
    assert [resumed.batch(step) for step in range(5, 9)] == [ranks[1].batch(step) for step in range(5, 9)]


def test_the_reference_trainers_old_file_names_train_and_a_missing_fps_is_said_once(
    tiny_model_dir, tmp_path, capsys
):
    data = tmp_path / "old reference data"
    for index in range(2):
        write_legacy_sample(data, index, frames=2, height=2, width=2, seed=index)
    dataset = PrecomputedDataset(data)
    said = capsys.readouterr().err
    assert said.count("record no fps") == 1 and "2 of 2" in said
    assert [s.conditions_path.name for s in dataset.samples] == ["condition_00000000.pt", "condition_00000001.pt"]
    assert dataset[0]["fps"] == DEFAULT_FPS == 25.0
    result = train(tiny_model_dir, data, tmp_path / "run", **{"optimization.steps": 2})
    assert result.final_step == 2

    (data / ".precomputed" / "conditions" / "condition_00000001.pt").unlink()
    with pytest.raises(DatasetError, match="condition_00000001.pt"):
        PrecomputedDataset(data)


def test_first_frame_conditioning_keeps_multi_frame_batches_conditioned(tiny_model_dir, tmp_path):
    """The image fix must not switch conditioning off for videos: their first frame stays clean."""
    from diffusers import LTXVideoTransformer3DModel

    from ltxtrainer.config import config_from_dict
    from ltxtrainer.training.trainer import _training_loss
    from tests.test_training import make_config

    write_sample(tmp_path / "data", "clip", frames=2, height=2, width=2, seed=0)
    batch = collate([PrecomputedDataset(tmp_path / "data")[0]])
    config = config_from_dict(make_config(
        tiny_model_dir, tmp_path / "data", tmp_path / "run", **{"optimization.first_frame_conditioning_p": 1.0}
    ))
    transformer = LTXVideoTransformer3DModel.from_pretrained(tiny_model_dir, subfolder="transformer")
    seen: list[dict] = []
    transformer.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs), with_kwargs=True)
    _training_loss(transformer, batch, config, 0, 0, torch.device("cpu"), torch.float32)
    timesteps = seen[0]["timestep"]
    assert timesteps.shape == (1, 8) and timesteps[0, :4].eq(0).all() and timesteps[0, 4:].gt(0).all()
