"""Model folders: the tiny models round-trip through the real loaders, and every broken file is named."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from ltxtrainer.models.folder import (
    ModelFolderError,
    check_model_folder,
    detect_variant,
    require_model_folder,
    resolve_model_path,
)
from ltxtrainer.models.ltx_video import (
    load_scheduler,
    load_text_encoder,
    load_tokenizer,
    load_transformer,
    load_vae,
)
from ltxtrainer.models.tiny import TINY_LATENT_CHANNELS, TRANSFORMER_CONFIG

# The transformer configs Lightricks ships (diffusers layout), FIELD_NOTES §1:
# 2B 0.9.x = 28 blocks x 32 heads x 64 head dim; 13B 0.9.7 = 48 x 32 x 128.
REAL_2B_TRANSFORMER = {
    "_class_name": "LTXVideoTransformer3DModel",
    "in_channels": 128,
    "out_channels": 128,
    "patch_size": 1,
    "patch_size_t": 1,
    "num_attention_heads": 32,
    "attention_head_dim": 64,
    "cross_attention_dim": 2048,
    "num_layers": 28,
    "activation_fn": "gelu-approximate",
    "qk_norm": "rms_norm_across_heads",
    "norm_elementwise_affine": False,
    "norm_eps": 1e-06,
    "caption_channels": 4096,
    "attention_bias": True,
    "attention_out_bias": True,
}
REAL_13B_TRANSFORMER = {
    **REAL_2B_TRANSFORMER,
    "attention_head_dim": 128,
    "cross_attention_dim": 4096,
    "num_layers": 48,
}


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model folder that a test may break, under a path users really have."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "我的 models" / "LTX-Video-0.9.7-diffusers"))


def test_tiny_models_load_back_through_the_real_loaders(tiny_model_dir: Path) -> None:
    report = check_model_folder(tiny_model_dir)
    assert report.ok, report.message()
    assert report.variant == "tiny"

    transformer = load_transformer(tiny_model_dir)
    vae = load_vae(tiny_model_dir)
    text_encoder = load_text_encoder(tiny_model_dir)
    tokenizer = load_tokenizer(tiny_model_dir)
    scheduler = load_scheduler(tiny_model_dir)

    assert transformer.config.in_channels == TINY_LATENT_CHANNELS
    assert transformer.config.num_layers == TRANSFORMER_CONFIG["num_layers"]
    assert vae.config.latent_channels == TINY_LATENT_CHANNELS
    assert vae.spatial_compression_ratio == 32 and vae.temporal_compression_ratio == 8
    assert text_encoder.config.d_model == transformer.config.caption_channels
    assert scheduler.config.num_train_timesteps == 1000
    ids = tokenizer("a dog runs in the city", return_tensors="pt").input_ids
    assert tokenizer.unk_token_id not in ids[0].tolist()
    # The weights really came from disk: a second load is bit-identical.
    again = load_transformer(tiny_model_dir)
    for (name, weight), (_, reloaded) in zip(
        transformer.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert torch.equal(weight, reloaded), name


def test_transformer_is_saved_in_shards_with_an_index(tiny_model_dir: Path) -> None:
    folder = tiny_model_dir / "transformer"
    index = json.loads(
        (folder / "diffusion_pytorch_model.safetensors.index.json").read_text(encoding="utf-8")
    )
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    assert all((folder / shard).is_file() for shard in shards)
    assert not (folder / "diffusion_pytorch_model.safetensors").exists()


def test_every_broken_file_is_reported_by_name(model_copy: Path) -> None:
    transformer = model_copy / "transformer"
    index = json.loads(
        (transformer / "diffusion_pytorch_model.safetensors.index.json").read_text(encoding="utf-8")
    )
    missing_shard = sorted(set(index["weight_map"].values()))[1]
    (transformer / missing_shard).unlink()
    (model_copy / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    shutil.rmtree(model_copy / "scheduler")
    (model_copy / "model_index.json").write_text('{"_class_name": "LTXPipeline",', encoding="utf-8")
    text_encoder = model_copy / "text_encoder"
    (text_encoder / "model.safetensors").rename(text_encoder / "pytorch_model.bin")

    report = check_model_folder(model_copy)

    assert not report.ok
    text = "\n".join(report.problems)
    assert missing_shard in text and "missing weight shard" in text
    assert "empty file" in text and "vae" in text and "diffusion_pytorch_model.safetensors" in text
    assert "missing subfolder scheduler/" in text
    assert "unreadable JSON" in text and "model_index.json" in text
    assert "only pickle (.bin) weights" in text and "text_encoder" in text
    assert len(report.problems) == 5, report.problems
    # The message users see carries every problem and where to download from.
    with pytest.raises(ModelFolderError) as raised:
        require_model_folder(model_copy)
    for problem in report.problems:
        assert problem in str(raised.value)
    assert "huggingface.co" in str(raised.value)
    # Loading refuses up front instead of failing deep inside diffusers.
    with pytest.raises(ModelFolderError, match=missing_shard):
        load_transformer(model_copy)


def test_a_missing_folder_is_one_plain_problem(tmp_path: Path) -> None:
    report = check_model_folder(tmp_path / "nowhere")
    assert report.problems == [f"folder not found: {tmp_path / 'nowhere'}"]


@pytest.mark.parametrize(("config", "variant"), [(REAL_2B_TRANSFORMER, "2b"), (REAL_13B_TRANSFORMER, "13b")])
def test_variant_is_recognised_from_the_real_transformer_configs(
    tmp_path: Path, config: dict, variant: str
) -> None:
    path = tmp_path / "transformer" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    assert detect_variant(json.loads(path.read_text(encoding="utf-8"))) == variant


def test_unknown_sizes_are_custom_not_guessed() -> None:
    assert detect_variant(TRANSFORMER_CONFIG) == "custom"
    assert detect_variant({**REAL_13B_TRANSFORMER, "num_layers": 28}) == "custom"
    assert detect_variant({}) == "custom"


def _hf_cache_repo(source: Path, cache: Path, repo_id: str, revision: str) -> Path:
    """Lay `source` out as huggingface_hub does: content-addressed blobs, symlinked snapshot, refs/main."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / revision
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / file.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(os.path.relpath(blob, link.parent))
        except OSError:  # Windows without symlink rights: huggingface_hub copies instead
            shutil.copyfile(blob, link)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision, encoding="utf-8")
    return repo_dir


@pytest.fixture
def hf_cache(tiny_model_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(cache root, snapshot refs/main names) holding the tiny model as LTX-Video-0.9.7-diffusers."""
    cache = tmp_path / "hf cache" / "hub"
    current = "a" * 40
    repo_dir = _hf_cache_repo(tiny_model_dir, cache, REPO_ID, current)
    # An older, incomplete snapshot that sorts after the current one must not be picked.
    (repo_dir / "snapshots" / ("f" * 40)).mkdir()
    return cache, repo_dir / "snapshots" / current


REPO_ID = "Lightricks/LTX-Video-0.9.7-diffusers"


def test_hugging_face_cache_folder_resolves_to_the_snapshot_refs_main_names(
    hf_cache: tuple[Path, Path],
) -> None:
    cache, snapshot = hf_cache
    repo_dir = cache / ("models--" + REPO_ID.replace("/", "--"))

    assert resolve_model_path(repo_dir) == snapshot
    report = check_model_folder(repo_dir)
    assert report.ok, report.message()
    assert report.path == snapshot
    assert load_transformer(repo_dir).config.num_layers == TRANSFORMER_CONFIG["num_layers"]


def test_repo_id_in_the_hugging_face_cache_resolves(
    hf_cache: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, snapshot = hf_cache
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert resolve_model_path(REPO_ID) == snapshot
    assert check_model_folder(REPO_ID).ok
