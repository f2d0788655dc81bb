"""LoRA export, checked against a LoRA the trainer really trained and saved (2 steps, bf16 file,
rank 4 / alpha 8): diffusers loads the run's file at the trained strength with or without the
metadata's alpha, the ComfyUI file applies the same deltas, conversion is exact both ways (old
unfolded files too), foreign LoRAs are refused, and merging equals inference with the LoRA loaded."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ltxtrainer.export import LoraFormatError, merge_lora, read_lora, to_comfyui, to_diffusers
from ltxtrainer.models.tiny import TINY_LATENT_CHANNELS, TINY_TEXT_HIDDEN
from ltxtrainer.training import checkpoints
from ltxtrainer.training.lora_io import adapter_state_dict, load_lora_into
from tests.precomputed import write_sample
from tests.test_training import train

TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
COMFY_KEY = re.compile(
    r"diffusion_model\.transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)\.lora_[AB]\.weight"
)


def train_lora(tiny_model_dir: Path, folder: Path, rank: int, alpha: int) -> Path:
    """Two real training steps in bf16; returns the run folder (its LoRA file and final checkpoint)."""
    data = folder / "data"
    write_sample(data, "clip", frames=2, height=2, width=2, seed=0)
    run = folder / "run"
    train(
        tiny_model_dir, data, run,
        **{"optimization.steps": 2, "optimization.learning_rate": 2e-2, "lora.rank": rank, "lora.alpha": alpha,
           "lora.target_modules": TARGETS, "acceleration.mixed_precision_mode": "bf16"},
    )
    return run


def trained_adapter(tiny_model_dir: Path, run: Path, rank: int, alpha: int) -> torch.nn.Module:
    """The trained peft adapter, restored from the run's final checkpoint as a resume restores it."""
    from peft import LoraConfig

    transformer = base_transformer(tiny_model_dir)
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=TARGETS))
    load_lora_into(transformer, checkpoints.latest_checkpoint(run) / "lora_weights.safetensors")
    return transformer


def adapter_deltas(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What peft adds to each adapted weight: its own `get_delta_weight` (scaling * B @ A)."""
    from peft.tuners.lora import LoraLayer

    return {
        name: module.get_delta_weight("default").detach()
        for name, module in transformer.named_modules()
        if isinstance(module, LoraLayer)
    }


def old_style_file(transformer: torch.nn.Module, rank: int, alpha: int, path: Path, **extra_metadata) -> Path:
    """A file as the trainer wrote it before folding (and as the reference trainer and other tools
    write it): peft's tensors unfolded, in bf16, alpha only in diffusers' metadata."""
    from diffusers import LTXPipeline

    state = {key: value.to(torch.bfloat16) for key, value in adapter_state_dict(transformer).items()}
    LTXPipeline.save_lora_weights(
        path.parent,
        transformer_lora_layers=state,
        transformer_lora_adapter_metadata={"r": rank, "lora_alpha": alpha, "target_modules": TARGETS, **extra_metadata},
        weight_name=path.name,
    )
    return path


def apply_like_comfyui(transformer: torch.nn.Module, lora_file: Path) -> torch.nn.Module:
    """A model of ComfyUI's generic LoRA loader, written from FIELD_NOTES §3 only (ComfyUI is not on
    PyPI): W += (alpha/rank, or 1.0 without an alpha key) * B @ A; metadata is ignored; only
    `diffusion_model.` and `lora_unet_` keys map, anything else is skipped."""
    tensors = load_file(lora_file)
    # ComfyUI builds its kohya map from the model's own module names, dots written as underscores.
    kohya_names = {name.replace(".", "_"): name for name, _ in transformer.named_modules()}
    with torch.no_grad():
        for key, down in tensors.items():
            for prefix, down_name, up_name in (
                ("diffusion_model.", ".lora_A.weight", ".lora_B.weight"),
                ("lora_unet_", ".lora_down.weight", ".lora_up.weight"),
            ):
                if not (key.startswith(prefix) and key.endswith(down_name)):
                    continue
                module = key[len(prefix) : -len(down_name)]
                up = tensors[module.join((prefix, up_name))]
                alpha_key = f"{prefix}{module}.alpha"
                scale = tensors[alpha_key].item() / down.shape[0] if alpha_key in tensors else 1.0
                if prefix == "lora_unet_":
                    module = kohya_names[module]
                weight = transformer.get_submodule(module).weight
                weight += scale * up.float() @ down.float()
    return transformer


def transformer_output(transformer: torch.nn.Module) -> torch.Tensor:
    """One forward pass of the tiny transformer on fixed random inputs (2x2x2 latent tokens)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        return transformer(
            hidden_states=torch.randn(1, 8, TINY_LATENT_CHANNELS, generator=generator),
            encoder_hidden_states=torch.randn(1, 6, TINY_TEXT_HIDDEN, generator=generator),
            timestep=torch.tensor([500]),
            encoder_attention_mask=torch.ones(1, 6, dtype=torch.bool),
            num_frames=2,
            height=2,
            width=2,
            rope_interpolation_scale=(8 / 24, 32, 32),
            return_dict=False,
        )[0]


def assert_deltas_match(weights: dict[str, torch.Tensor], base: torch.nn.Module, expected: dict[str, torch.Tensor]):
    """Each weight minus the base weight equals the trained delta, to the bf16 rounding of the file."""
    assert weights.keys() == expected.keys() and expected
    for module, weight in weights.items():
        delta = weight.float() - base.get_submodule(module).weight.float()
        trained = expected[module].float()
        assert trained.abs().max() > 1e-4, f"{module}: training left no delta"
        torch.testing.assert_close(delta, trained, rtol=0, atol=float(trained.abs().max()) * 2**-6)


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export") / "我的 LoRA 输出"


@pytest.fixture(scope="module")
def trained_run(tiny_model_dir, lora_dir) -> Path:
    return train_lora(tiny_model_dir, lora_dir, rank=4, alpha=8)


@pytest.fixture(scope="module")
def trainer_lora(trained_run, lora_dir) -> Path:
    """The run's own lora_weights.safetensors, under a user's name beside it."""
    return Path(shutil.copy(trained_run / "lora_weights.safetensors", lora_dir / "my_lora.safetensors"))


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, trained_run) -> torch.nn.Module:
    return trained_adapter(tiny_model_dir, trained_run, rank=4, alpha=8)


@pytest.fixture(scope="module")
def trained_deltas(adapter) -> dict[str, torch.Tensor]:
    return adapter_deltas(adapter)


@pytest.fixture(scope="module")
def comfy_lora(trainer_lora) -> Path:
    return to_comfyui(trainer_lora)


@pytest.fixture(scope="module")
def pipeline(tiny_model_dir):
    from diffusers import LTXPipeline

    return LTXPipeline.from_pretrained(tiny_model_dir, local_files_only=True)


def base_transformer(tiny_model_dir: Path):
    from diffusers import LTXVideoTransformer3DModel

    return LTXVideoTransformer3DModel.from_pretrained(tiny_model_dir, subfolder="transformer").eval()


def fused_weights(pipeline, lora: Path | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Block linear weights after diffusers loads and fuses `lora`; the pipeline is left clean."""
    pipeline.load_lora_weights(lora, adapter_name="under_test")
    pipeline.fuse_lora(lora_scale=1.0)
    weights = {
        name.removesuffix(".base_layer.weight"): parameter.detach().clone()
        for name, parameter in pipeline.transformer.named_parameters()
        if name.endswith(".base_layer.weight")
    }
    pipeline.unfuse_lora()
    pipeline.unload_lora_weights()
    return weights


def output_with_lora(pipeline, lora_file: Path) -> torch.Tensor:
    pipeline.load_lora_weights(lora_file, adapter_name="under_test")
    try:
        return transformer_output(pipeline.transformer)
    finally:
        pipeline.unload_lora_weights()


def test_diffusers_loads_the_trained_file_at_the_trained_strength_with_or_without_its_alpha(
    tiny_model_dir, pipeline, trainer_lora, trained_deltas
):
    """diffusers >= 0.35 reads alpha from the metadata; before 0.35 (the reference pipeline pins 0.33)
    it ignores it and takes alpha = rank: loading the bare tensors models that."""
    base = base_transformer(tiny_model_dir)
    assert_deltas_match(fused_weights(pipeline, trainer_lora), base, trained_deltas)
    bare = load_file(trainer_lora)  # no metadata at all: alpha = rank, as diffusers < 0.35 reads any file
    assert_deltas_match(fused_weights(pipeline, bare), base, trained_deltas)
    with safe_open(str(trainer_lora), framework="pt") as handle:
        metadata = handle.metadata()
        assert handle.get_tensor(handle.keys()[0]).dtype == torch.bfloat16
    adapter = json.loads(metadata["lora_adapter_metadata"])
    assert adapter["transformer.r"] == adapter["transformer.lora_alpha"] == 4
    assert (json.loads(metadata["ltxtrainer_lora"])["rank"], json.loads(metadata["ltxtrainer_lora"])["alpha"]) == (4, 8)


def test_comfy_file_has_block_keys_only_no_alpha_and_records_rank_alpha(trainer_lora, comfy_lora):
    assert comfy_lora == trainer_lora.with_name("my_lora_comfy.safetensors")
    with safe_open(str(comfy_lora), framework="pt") as handle:
        keys = list(handle.keys())
        metadata = handle.metadata()
    assert keys and all(COMFY_KEY.fullmatch(key) for key in keys), keys
    assert len(keys) == 2 * 2 * 8  # 2 blocks x 8 attention projections x (A, B)
    # diffusers would apply alpha/rank again on top of the folded lora_B if this entry were there.
    assert "lora_adapter_metadata" not in metadata
    record = json.loads(metadata["ltxtrainer_lora"])
    assert (record["rank"], record["alpha"], record["scale"]) == (4, 8, 2.0)
    lora = read_lora(comfy_lora)
    assert (lora.format, lora.rank, lora.alpha, lora.folded) == ("comfyui", 4, 8, True)


def test_comfyui_applying_the_comfy_file_adds_the_trained_deltas(
    tiny_model_dir, pipeline, adapter, trainer_lora, comfy_lora, trained_deltas, tmp_path
):
    base = base_transformer(tiny_model_dir)
    in_comfy = apply_like_comfyui(base_transformer(tiny_model_dir), comfy_lora)
    weights = {module: in_comfy.get_submodule(module).weight for module in trained_deltas}
    assert_deltas_match(weights, base, trained_deltas)
    torch.testing.assert_close(weights, fused_weights(pipeline, trainer_lora), rtol=0, atol=1e-6)

    # A plain prefix swap (the reference trainer's converter) of our folded file is now right too;
    # of an unfolded file it loads at rank/alpha = half the trained strength.
    for source, strength in ((trainer_lora, 1.0), (old_style_file(adapter, 4, 8, tmp_path / "old.safetensors"), 0.5)):
        swapped = {key.replace("transformer.", "diffusion_model.", 1): value for key, value in load_file(source).items()}
        save_file(swapped, str(tmp_path / "swapped.safetensors"))
        in_comfy_swapped = apply_like_comfyui(base_transformer(tiny_model_dir), tmp_path / "swapped.safetensors")
        halved = {module: delta * strength for module, delta in trained_deltas.items()}
        assert_deltas_match(
            {module: in_comfy_swapped.get_submodule(module).weight for module in trained_deltas}, base, halved
        )


def test_trained_and_comfy_files_both_load_in_diffusers_with_the_same_effect(
    pipeline, trainer_lora, comfy_lora
):
    base = transformer_output(pipeline.transformer)
    with_trained = output_with_lora(pipeline, trainer_lora)
    with_comfy = output_with_lora(pipeline, comfy_lora)
    assert (with_trained - base).abs().max() > 1e-3, "the LoRA should change the transformer output"
    torch.testing.assert_close(with_comfy, with_trained, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(transformer_output(pipeline.transformer), base)  # unloaded cleanly


def test_there_and_back_is_bit_exact(trainer_lora, comfy_lora):
    back = to_diffusers(comfy_lora)
    assert back == trainer_lora.with_name("my_lora_diffusers.safetensors")
    original, restored = load_file(trainer_lora), load_file(back)
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[key], restored[key]) for key in original)
    with safe_open(str(back), framework="pt") as handle:
        adapter = json.loads(handle.metadata()["lora_adapter_metadata"])
    assert adapter["transformer.r"] == adapter["transformer.lora_alpha"] == 4  # folded, as the trainer writes
    assert read_lora(back).alpha == 8


def test_a_scale_of_three_also_converts_there_and_back_bit_for_bit(tiny_model_dir, pipeline, tmp_path):
    run = train_lora(tiny_model_dir, tmp_path, rank=4, alpha=12)
    trained = run / "lora_weights.safetensors"
    back = to_diffusers(to_comfyui(trained))
    original, restored = load_file(trained), load_file(back)
    assert all(torch.equal(restored[key], original[key]) for key in original)
    assert read_lora(back).alpha == 12
    deltas = adapter_deltas(trained_adapter(tiny_model_dir, run, rank=4, alpha=12))
    assert_deltas_match(fused_weights(pipeline, trained), base_transformer(tiny_model_dir), deltas)


def test_old_unfolded_files_still_convert_at_their_trained_strength(
    tiny_model_dir, pipeline, adapter, trained_deltas, tmp_path
):
    """Files of our trainer before folding, of the reference trainer and of other tools: unfolded,
    alpha 8 in diffusers' metadata. Both conversions carry the trained deltas into every loader."""
    old = old_style_file(adapter, 4, 8, tmp_path / "old lora.safetensors")
    base = base_transformer(tiny_model_dir)
    assert_deltas_match(fused_weights(pipeline, old), base, trained_deltas)  # diffusers >= 0.35 reads its alpha
    comfy = apply_like_comfyui(base_transformer(tiny_model_dir), to_comfyui(old))
    assert_deltas_match({m: comfy.get_submodule(m).weight for m in trained_deltas}, base, trained_deltas)
    refolded = to_diffusers(old)
    assert_deltas_match(fused_weights(pipeline, load_file(refolded)), base, trained_deltas)  # also < 0.35
    with pytest.raises(LoraFormatError, match="nothing to convert"):
        to_diffusers(refolded, tmp_path / "again.safetensors")


def test_kohya_file_with_per_module_alphas_converts_and_loads_like_comfyui(
    tiny_model_dir, pipeline, trainer_lora, tmp_path
):
    """A kohya-style file, one module at a different alpha: both outputs keep every module's scale."""
    kohya = {}
    for key, value in load_file(trainer_lora).items():
        module = key.removeprefix("transformer.").rsplit(".lora_", 1)[0]
        name = "lora_unet_" + module.replace(".", "_")
        kohya[f"{name}.lora_{'down' if '.lora_A.' in key else 'up'}.weight"] = value
        kohya[f"{name}.alpha"] = torch.tensor(8.0 if module == "transformer_blocks.1.attn2.to_v" else 16.0)
    kohya_file = tmp_path / "kohya style.safetensors"
    save_file(kohya, str(kohya_file))
    assert read_lora(kohya_file).format == "kohya"

    expected = apply_like_comfyui(base_transformer(tiny_model_dir), kohya_file)
    comfy_file = to_comfyui(kohya_file)
    from_comfy = apply_like_comfyui(base_transformer(tiny_model_dir), comfy_file)
    from_diffusers = fused_weights(pipeline, to_diffusers(kohya_file))
    for module, weight in from_diffusers.items():
        torch.testing.assert_close(expected.get_submodule(module).weight, weight, rtol=0, atol=1e-6)
        torch.testing.assert_close(from_comfy.get_submodule(module).weight, weight, rtol=0, atol=1e-6)


def _lora_pair(prefix: str, module: str, width_in: int, width_out: int, rank: int = 4) -> dict:
    names = (
        (".lora_down.weight", ".lora_up.weight")
        if prefix == "lora_unet_"
        else (".lora_A.weight", ".lora_B.weight")
    )
    return {
        f"{prefix}{module}{names[0]}": torch.zeros(rank, width_in),
        f"{prefix}{module}{names[1]}": torch.zeros(width_out, rank),
    }


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        (
            _lora_pair("lora_unet_", "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", 320, 320),
            "does not exist",
        ),
        (_lora_pair("transformer.", "single_transformer_blocks.0.attn.to_q", 3072, 3072), "does not exist"),
        (_lora_pair("diffusion_model.", "blocks.0.self_attn.q", 5120, 5120), "does not exist"),
        (_lora_pair("transformer.", "transformer_blocks.0.attn1.to_q", 1920, 1920), "1920 wide"),
        (_lora_pair("transformer.", "transformer_blocks.0.ff.net.0.proj", 32, 32), "does not fit"),
        (_lora_pair("transformer.", "proj_in", 128, 2048), "outside transformer_blocks"),
        ({"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(4, 768)}, "prefixes"),
    ],
    ids=["sd-kohya", "flux", "wan", "cogvideox-width", "bad-ff-shape", "outside-blocks", "text-encoder"],
)
def test_loras_of_other_models_are_refused_with_a_reason(tmp_path, tensors, message):
    foreign = tmp_path / "foreign.safetensors"
    save_file(tensors, str(foreign))
    with pytest.raises(LoraFormatError, match=message):
        to_comfyui(foreign)
    assert not (tmp_path / "foreign_comfy.safetensors").exists()


def test_cli_converts_skips_a_rerun_and_refuses_a_foreign_lora_readably(repo_root, trainer_lora, tmp_path):
    script = [sys.executable, str(repo_root / "scripts" / "convert_to_comfyui.py")]
    output = tmp_path / "Comfy 输出" / "lora for comfy.safetensors"
    done = subprocess.run(
        [*script, str(trainer_lora), "--output", str(output)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    event = json.loads(done.stdout.strip().splitlines()[-1])
    assert event["event"] == "export" and Path(event["output"]) == output
    assert str(output) in done.stderr
    written, fresh = load_file(output), load_file(to_comfyui(trainer_lora))
    assert written.keys() == fresh.keys() and all(torch.equal(written[k], fresh[k]) for k in written)

    stamp = output.stat().st_mtime_ns
    assert to_comfyui(trainer_lora, output) == output and output.stat().st_mtime_ns == stamp  # skipped

    foreign = tmp_path / "sd lora.safetensors"
    save_file(_lora_pair("lora_unet_", "down_blocks_0_attentions_0_proj_in", 320, 320), str(foreign))
    refused = subprocess.run([*script, str(foreign)], capture_output=True, text=True)
    assert refused.returncode != 0
    assert "not an LTX-Video LoRA" in refused.stderr and "Traceback" not in refused.stderr


def test_merge_at_strength_one_equals_the_loaded_lora_and_zero_equals_the_base(
    tiny_model_dir, pipeline, trainer_lora, comfy_lora, tmp_path
):
    from diffusers import LTXVideoTransformer3DModel

    merged_dir = merge_lora(tiny_model_dir, comfy_lora, 1.0, tmp_path / "merged 1.0")
    merged = LTXVideoTransformer3DModel.from_pretrained(merged_dir).eval()
    torch.testing.assert_close(
        transformer_output(merged), output_with_lora(pipeline, trainer_lora), rtol=1e-5, atol=1e-6
    )
    assert not any("lora" in key for key in merged.state_dict())

    stamp = (merged_dir / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert merge_lora(tiny_model_dir, comfy_lora, 1.0, merged_dir) == merged_dir  # re-run skips
    assert (merged_dir / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(LoraFormatError, match="already exists"):
        merge_lora(tiny_model_dir, comfy_lora, 0.5, merged_dir)

    zero = LTXVideoTransformer3DModel.from_pretrained(
        merge_lora(tiny_model_dir, trainer_lora, 0.0, tmp_path / "zero")
    )
    base = base_transformer(tiny_model_dir).state_dict()
    assert zero.state_dict().keys() == base.keys()
    assert all(torch.equal(zero.state_dict()[key], base[key]) for key in base)


def test_peft_adapter_folder_reads_alpha_from_its_adapter_config(
    tiny_model_dir, pipeline, adapter, trained_deltas, tmp_path
):
    """peft's own save_pretrained layout: base_model.model. keys, alpha in adapter_config.json."""
    from peft import LoraConfig

    folder = tmp_path / "peft adapter"
    folder.mkdir()
    tensors = {f"base_model.model.{key}": value for key, value in adapter_state_dict(adapter).items()}
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS).to_dict()  # with peft_type, task_type, ...
    config["target_modules"] = sorted(config["target_modules"])  # a set in memory, a list in peft's file
    (folder / "adapter_config.json").write_text(json.dumps(config, default=str), encoding="utf-8")
    lora = read_lora(folder)
    assert (lora.format, lora.rank, lora.alpha) == ("peft", 4, 8)
    back = to_diffusers(folder / "adapter_model.safetensors")
    assert_deltas_match(fused_weights(pipeline, load_file(back)), base_transformer(tiny_model_dir), trained_deltas)


def test_rslora_scale_survives_conversion(pipeline, adapter, tmp_path):
    """peft's use_rslora scales by alpha/sqrt(rank); the ComfyUI file must fold that same scale."""
    rslora = old_style_file(adapter, 4, 8, tmp_path / "rslora.safetensors", use_rslora=True)
    assert read_lora(rslora).alpha == 16  # 8 / sqrt(4) == 16 / 4
    torch.testing.assert_close(
        output_with_lora(pipeline, to_comfyui(rslora)), output_with_lora(pipeline, rslora)
    )
