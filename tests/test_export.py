"""LoRA export: the ComfyUI file loads at the trained strength in ComfyUI and diffusers, converts
back bit for bit, foreign LoRAs are refused, and merging equals inference with the LoRA loaded."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ltxtrainer.export import LoraFormatError, merge_lora, read_lora, to_comfyui, to_diffusers
from ltxtrainer.models.tiny import TINY_LATENT_CHANNELS, TINY_TEXT_HIDDEN, TRANSFORMER_CONFIG

TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
COMFY_KEY = re.compile(
    r"diffusion_model\.transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)\.lora_[AB]\.weight"
)


def save_trainer_lora(folder: Path, rank: int = 4, alpha: float = 16, seed: int = 1) -> Path:
    """A LoRA saved exactly as the trainer saves it: peft adapter -> LTXPipeline.save_lora_weights."""
    from diffusers import LTXPipeline, LTXVideoTransformer3DModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    transformer = LTXVideoTransformer3DModel(**TRANSFORMER_CONFIG)
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=TARGETS))
    with torch.no_grad():
        for name, parameter in transformer.named_parameters():
            if "lora_B" in name:  # peft initialises lora_B to zero: make the LoRA do something
                parameter.normal_(std=0.05)
    LTXPipeline.save_lora_weights(
        folder,
        transformer_lora_layers=get_peft_model_state_dict(transformer),
        transformer_lora_adapter_metadata={"r": rank, "lora_alpha": alpha, "target_modules": TARGETS},
        weight_name="my_lora.safetensors",
    )
    return folder / "my_lora.safetensors"


def apply_like_comfyui(transformer: torch.nn.Module, lora_file: Path) -> torch.nn.Module:
    """ComfyUI's generic rule (FIELD_NOTES §3): W += (alpha/rank, or 1.0 without an alpha key) * B @ A.

    Only `diffusion_model.` and `lora_unet_` keys map; anything else is skipped as ComfyUI does.
    """
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
                transformer.get_submodule(module).weight += scale * up @ down
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


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export") / "我的 LoRA 输出"


@pytest.fixture(scope="module")
def trainer_lora(lora_dir) -> Path:
    return save_trainer_lora(lora_dir)


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


def fused_weights(pipeline, lora_file: Path) -> dict[str, torch.Tensor]:
    """Block linear weights after diffusers loads and fuses `lora_file`; the pipeline is left clean."""
    pipeline.load_lora_weights(lora_file, adapter_name="under_test")
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
    assert (record["rank"], record["alpha"], record["scale"]) == (4, 16, 4.0)
    lora = read_lora(comfy_lora)
    assert (lora.format, lora.rank, lora.alpha, lora.folded) == ("comfyui", 4, 16, True)


def test_comfyui_applying_the_comfy_file_matches_diffusers_loading_the_trained_file(
    tiny_model_dir, pipeline, trainer_lora, comfy_lora, tmp_path
):
    expected = fused_weights(pipeline, trainer_lora)
    in_comfy = apply_like_comfyui(base_transformer(tiny_model_dir), comfy_lora)
    for module, weight in expected.items():
        torch.testing.assert_close(in_comfy.get_submodule(module).weight, weight, rtol=0, atol=1e-6)

    # The reference trainer's plain prefix swap loads in ComfyUI at a quarter of the trained strength.
    swapped = {
        key.replace("transformer.", "diffusion_model.", 1): value
        for key, value in load_file(trainer_lora).items()
    }
    save_file(swapped, str(tmp_path / "swapped.safetensors"))
    base = base_transformer(tiny_model_dir)
    in_comfy_swapped = apply_like_comfyui(base_transformer(tiny_model_dir), tmp_path / "swapped.safetensors")
    module = "transformer_blocks.0.attn1.to_q"
    full_delta = expected[module] - base.get_submodule(module).weight
    swapped_delta = in_comfy_swapped.get_submodule(module).weight - base.get_submodule(module).weight
    torch.testing.assert_close(swapped_delta * 4, full_delta, rtol=1e-4, atol=1e-6)


def test_trained_and_comfy_files_both_load_in_diffusers_with_the_same_effect(
    pipeline, trainer_lora, comfy_lora
):
    base = transformer_output(pipeline.transformer)
    with_trained = output_with_lora(pipeline, trainer_lora)
    with_comfy = output_with_lora(pipeline, comfy_lora)
    assert (with_trained - base).abs().max() > 1e-3, "the LoRA should change the transformer output"
    torch.testing.assert_close(with_comfy, with_trained, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(transformer_output(pipeline.transformer), base)  # unloaded cleanly


def test_there_and_back_is_bit_exact_for_rank_4_alpha_16(trainer_lora, comfy_lora):
    back = to_diffusers(comfy_lora)
    assert back == trainer_lora.with_name("my_lora_diffusers.safetensors")
    original, restored = load_file(trainer_lora), load_file(back)
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[key], restored[key]) for key in original)
    with safe_open(str(back), framework="pt") as handle:
        adapter = json.loads(handle.metadata()["lora_adapter_metadata"])
    assert adapter["transformer.r"] == 4 and adapter["transformer.lora_alpha"] == 16


def test_there_and_back_with_scale_three_is_exact_to_float_rounding(tmp_path):
    trained = save_trainer_lora(tmp_path, rank=4, alpha=12)
    back = to_diffusers(to_comfyui(trained))
    original, restored = load_file(trained), load_file(back)
    for key in original:
        torch.testing.assert_close(restored[key], original[key], rtol=1e-6, atol=0)
    assert read_lora(back).alpha == 12


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


def test_peft_adapter_folder_reads_alpha_from_its_adapter_config(pipeline, trainer_lora, tmp_path):
    """peft's own save_pretrained layout: base_model.model. keys, alpha in adapter_config.json."""
    folder = tmp_path / "peft adapter"
    folder.mkdir()
    tensors = {
        key.replace("transformer.", "base_model.model.", 1): value
        for key, value in load_file(trainer_lora).items()
    }
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    from peft import LoraConfig

    config = LoraConfig(
        r=4, lora_alpha=16, target_modules=TARGETS
    ).to_dict()  # with peft_type, task_type, ...
    config["target_modules"] = sorted(config["target_modules"])  # a set in memory, a list in peft's file
    (folder / "adapter_config.json").write_text(json.dumps(config, default=str), encoding="utf-8")
    lora = read_lora(folder)
    assert (lora.format, lora.rank, lora.alpha) == ("peft", 4, 16)
    back = to_diffusers(folder / "adapter_model.safetensors")
    original, restored = load_file(trainer_lora), load_file(back)
    assert all(torch.equal(original[key], restored[key]) for key in original)
    torch.testing.assert_close(output_with_lora(pipeline, back), output_with_lora(pipeline, trainer_lora))


def test_rslora_scale_survives_conversion(pipeline, tmp_path):
    """peft's use_rslora scales by alpha/sqrt(rank); the ComfyUI file must fold that same scale."""
    trained = save_trainer_lora(tmp_path, rank=4, alpha=8)
    tensors, metadata = load_file(trained), {"format": "pt"}
    with safe_open(str(trained), framework="pt") as handle:
        adapter = json.loads(handle.metadata()["lora_adapter_metadata"])
    metadata["lora_adapter_metadata"] = json.dumps({**adapter, "transformer.use_rslora": True})
    rslora = tmp_path / "rslora.safetensors"
    save_file(tensors, str(rslora), metadata=metadata)
    assert read_lora(rslora).alpha == 16  # 8 / sqrt(4) == 16 / 4
    torch.testing.assert_close(
        output_with_lora(pipeline, to_comfyui(rslora)), output_with_lora(pipeline, rslora)
    )
