"""The config schema: reference-trainer configs load, bad ones are refused field by field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ltxtrainer.config import ConfigError, config_from_dict, config_to_yaml, load_config

REPO = Path(__file__).resolve().parents[1]

# A config as users of the spring-2025 reference LTX-Video-Trainer write it (its template's sections/fields).
REFERENCE_SPRING_2025 = """
model:
  model_source: "LTXV_13B_097_DEV"
  training_mode: "lora"
  load_checkpoint: null
lora:
  rank: 32
  alpha: 32
  dropout: 0.0
  target_modules: ["to_k", "to_q", "to_v", "to_out.0"]
optimization:
  learning_rate: 0.0002
  steps: 2000
  batch_size: 1
  gradient_accumulation_steps: 1
  max_grad_norm: 1.0
  optimizer_type: "adamw"
  scheduler_type: "linear"
  scheduler_params: {}
  enable_gradient_checkpointing: true
  first_frame_conditioning_p: 0.5
acceleration:
  mixed_precision_mode: "bf16"
  quantization: null
  load_text_encoder_in_8bit: true
  compile_with_inductor: false
  compilation_mode: "reduce-overhead"
data:
  preprocessed_data_root: "/path/to/preprocessed/data"
  num_dataloader_workers: 2
validation:
  prompts:
    - "A woman with long brown hair walks on the beach"
  negative_prompt: "worst quality, inconsistent motion, blurry, jittery, distorted"
  images: null
  video_dims: [768, 448, 89]
  seed: 42
  inference_steps: 50
  interval: 250
  videos_per_prompt: 1
  guidance_scale: 3.5
checkpoints:
  interval: 250
  keep_last_n: -1
hub:
  push_to_hub: false
  hub_model_id: null
  hub_token: null
flow_matching:
  timestep_sampling_mode: "shifted_logit_normal"
  timestep_sampling_params: {}
seed: 42
output_dir: "outputs/train_13b_lora"
"""

# The later generation: a conditioning section, wandb, reference videos, fp8uz quantization.
REFERENCE_LATER = """
model: {model_source: "LTXV_13B_097_DEV", training_mode: lora, load_checkpoint: null}
lora: {rank: 64, alpha: 64, dropout: 0.0, target_modules: [to_k, to_q, to_v, to_out.0]}
conditioning: {mode: none, first_frame_conditioning_p: 0.3, reference_latents_dir: null}
optimization: {learning_rate: 0.0002, steps: 1000, batch_size: 1}
acceleration: {mixed_precision_mode: bf16, quantization: fp8uz-quanto}
data: {preprocessed_data_root: /data}
validation: {prompts: [a cat], reference_videos: null, skip_initial_validation: true, video_dims: [512, 512, 49]}
wandb: {enabled: false, project: ltxv-trainer, entity: null, tags: [], log_validation_videos: true}
flow_matching: {timestep_sampling_mode: uniform, timestep_sampling_params: {}}
"""


def test_reference_trainer_configs_of_both_generations_load():
    spring = config_from_dict(yaml.safe_load(REFERENCE_SPRING_2025))
    assert spring.lora.rank == 32 and spring.first_frame_conditioning_p == 0.5
    assert spring.validation.video_dims == (768, 448, 89)
    later = config_from_dict(yaml.safe_load(REFERENCE_LATER))
    assert later.first_frame_conditioning_p == 0.3  # the conditioning section wins
    assert later.acceleration.quantization_choice == "fp8uz-quanto"


def test_defaults_are_the_reference_trainers():
    config = config_from_dict({"data": {"preprocessed_data_root": "x"}, "lora": {}})
    assert (config.lora.rank, config.lora.alpha) == (64, 64)
    assert config.lora.target_modules == ["to_k", "to_q", "to_v", "to_out.0"]
    assert config.optimization.learning_rate == 5e-4 and config.optimization.steps == 3000
    assert config.optimization.batch_size == 2 and config.optimization.scheduler_type == "linear"
    assert config.acceleration.mixed_precision_mode == "bf16"
    assert config.validation.video_dims == (704, 480, 161) and config.validation.guidance_scale == 3.5
    assert config.checkpoints.keep_last_n == 1 and config.seed == 42


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("optimization", "scheduler_type", "cosin"), ["optimization.scheduler_type", "'cosin'", "'cosine'", "'polynomial'"]),
        (("optimization", "learning_rat", 0.1), ["optimization.learning_rat", "unknown field", "learning_rate"]),
        (("lora", "rank", 0), ["lora.rank", "0", "greater than or equal to 1"]),
        (("optimization", "batch_size", "two"), ["optimization.batch_size", "'two'", "integer"]),
        (("acceleration", "quantization", "int3-quanto"), ["acceleration.quantization", "int8-quanto"]),
        (("validation", "video_dims", [700, 480, 49]), ["validation.video_dims", "multiples of 32"]),
        (("validation", "video_dims", [704, 480, 50]), ["validation.video_dims", "8k+1"]),
        (("checkpoints", "keep_last_n", 0), ["checkpoints.keep_last_n", "-1"]),
    ],
)
def test_invalid_fields_are_named_with_value_and_allowed_values(change, expected):
    data = yaml.safe_load(REFERENCE_SPRING_2025)
    section, field, value = change
    data[section][field] = value
    with pytest.raises(ConfigError) as error:
        config_from_dict(data)
    message = str(error.value)
    for fragment in expected:
        assert fragment in message
    assert "pydantic" not in message and "https://" not in message


def test_cross_checks():
    data = yaml.safe_load(REFERENCE_SPRING_2025)
    del data["lora"]
    with pytest.raises(ConfigError, match="needs a 'lora' section"):
        config_from_dict(data)
    data = yaml.safe_load(REFERENCE_SPRING_2025)
    data["model"]["training_mode"] = "full"
    data["acceleration"]["quantization"] = "int8-quanto"
    with pytest.raises(ConfigError, match="only possible in training_mode 'lora'"):
        config_from_dict(data)


def test_yaml_problems_are_readable(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(bad)


def test_every_shipped_config_loads_and_roundtrips(tmp_path):
    files = sorted((REPO / "configs").glob("*.yaml"))
    assert any(f.name == "tiny_demo.yaml" for f in files)
    for file in files:
        config = load_config(file)
        again = tmp_path / file.name
        again.write_text(config_to_yaml(config), encoding="utf-8")
        assert load_config(again) == config


@settings(max_examples=60, deadline=None)
@given(
    rank=st.integers(-5, 2000),
    learning_rate=st.floats(-1.0, 2.0, allow_nan=False),
    width=st.integers(-64, 2048),
    height=st.integers(-64, 2048),
    frames=st.integers(-8, 400),
)
def test_property_any_values_are_accepted_or_refused_with_a_named_field(rank, learning_rate, width, height, frames):
    data = yaml.safe_load(REFERENCE_SPRING_2025)
    data["lora"]["rank"] = rank
    data["optimization"]["learning_rate"] = learning_rate
    data["validation"]["video_dims"] = [width, height, frames]
    valid = (
        1 <= rank <= 1024
        and 0 < learning_rate <= 1
        and width > 0 and height > 0 and width % 32 == 0 and height % 32 == 0
        and frames >= 1 and (frames - 1) % 8 == 0
    )
    if valid:
        assert config_from_dict(data).lora.rank == rank
    else:
        with pytest.raises(ConfigError) as error:
            config_from_dict(data)
        assert any(name in str(error.value) for name in ("lora.rank", "optimization.learning_rate", "validation.video_dims"))


def test_one_validation_step_is_refused_before_diffusers_scheduler_fails_on_it():
    data = yaml.safe_load(REFERENCE_SPRING_2025)
    data["validation"]["inference_steps"] = 1
    with pytest.raises(ConfigError, match="validation.inference_steps = 1: .*greater than or equal to 2"):
        config_from_dict(data)
    data["validation"]["inference_steps"] = 2
    assert config_from_dict(data).validation.inference_steps == 2


def test_the_validation_frame_rate_defaults_to_the_datasets():
    data = yaml.safe_load(REFERENCE_SPRING_2025)
    assert config_from_dict(data).validation.frame_rate is None
    data["validation"]["frame_rate"] = 12
    assert config_from_dict(data).validation.frame_rate == 12.0
