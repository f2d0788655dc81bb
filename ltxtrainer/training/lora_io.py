"""Saving and loading the adapter in diffusers' LoRA format.

The file is what `LTXPipeline.save_lora_weights` writes and `LTXPipeline.load_lora_weights` reads:
keys `transformer.<module>.lora_A/B.weight`, the LoraConfig kwargs (prefixed `transformer.`) in
the `lora_adapter_metadata` entry. The run's LoRA file has alpha/rank folded into lora_B and says
alpha = rank there: diffusers before 0.35 ignore that entry's alpha (the reference trainer's own
pipeline pins 0.33), and ComfyUI ignores metadata altogether, so only a folded file loads at the
trained strength everywhere (FIELD_NOTES §3). The trained rank and alpha stay in our own entry
(`export.LTXTRAINER_METADATA_KEY`), from which export and warm starts unfold it. Checkpoints keep
lora_B unfolded in fp32, so a resumed run continues from exactly the weights it stopped with.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import save_file
from torch.distributed.tensor import DTensor

from ltxtrainer.atomic import write_atomic
from ltxtrainer.config import TrainerConfig
from ltxtrainer.export import (
    DIFFUSERS_COMPONENT,
    DIFFUSERS_METADATA_KEY,
    LTXTRAINER_METADATA_KEY,
    REFERENCE_DOWNSCALE_METADATA_KEY,
)

LORA_FILE = "lora_weights.safetensors"
# A folder where every rank writes its adapter at each micro-step (`trainer._save_rank_adapter`).
RANK_ADAPTERS_ENV = "LTXT_RANK_ADAPTERS_DIR"


def adapter_state_dict(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """peft's view of the adapter (keys without the adapter name), as whole contiguous CPU tensors.

    Under FSDP2 each parameter is a DTensor holding this rank's shard; `full_tensor()` gathers it,
    which is a collective: under FSDP every rank must call this together, never the main one alone.
    """
    state = get_peft_model_state_dict(transformer, adapter_name="default")
    return {key: _whole(value).detach().to("cpu").contiguous() for key, value in state.items()}


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def save_rank_adapter(model: torch.nn.Module, path: Path) -> None:
    """This rank's adapter tensors as they are now, unfolded fp32, for comparing ranks."""
    from accelerate.utils import extract_model_from_parallel

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state_dict(extract_model_from_parallel(model)), str(path))


def lora_metadata(config: TrainerConfig) -> dict:
    """The LoraConfig kwargs the adapter was trained with."""
    lora = config.lora
    assert lora is not None
    return {
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": sorted(lora.target_modules),
    }


def save_lora(
    transformer: torch.nn.Module,
    config: TrainerConfig,
    path: str | Path,
    dtype: torch.dtype = torch.bfloat16,
    fold_alpha: bool = True,
    family: str | None = None,
) -> Path:
    """Write the adapter in `LTXPipeline.save_lora_weights`' layout, through a temporary name (atomic).

    With `fold_alpha` (the run's LoRA file) lora_B is multiplied by alpha/rank in fp32 before the
    cast to `dtype` and diffusers' entry says alpha = rank; without it (checkpoints) the tensors
    are peft's own and the entry holds the trained alpha. `family` (the model family's name) goes
    into our record, so export tells an LTX-2 LoRA from a 0.9 one whose keys look alike. An IC-LoRA
    (`conditioning.mode: reference_video`) records its reference downscale factor where Lightricks'
    LTX-2 pipelines look for it, so inference encodes the reference at the size it was trained on.
    """
    trained = lora_metadata(config)
    scale = trained["lora_alpha"] / trained["r"]
    tensors = {}
    for key, value in adapter_state_dict(transformer).items():
        if fold_alpha and ".lora_B." in key:
            value = value.float() * scale
        tensors[f"{DIFFUSERS_COMPONENT}.{key}"] = value.to(dtype).contiguous()
    loaded_as = {**trained, "lora_alpha": trained["r"]} if fold_alpha else trained
    record = {
        "folded": fold_alpha,
        "rank": trained["r"],
        "alpha": trained["lora_alpha"],
        "scale": scale,
        "adapter_metadata": trained,
    }
    if family is not None:
        record["family"] = family
    metadata = {
        "format": "pt",
        # diffusers' own packing of the entry: component-prefixed keys, indent 2, sorted.
        DIFFUSERS_METADATA_KEY: json.dumps(
            {f"{DIFFUSERS_COMPONENT}.{key}": value for key, value in loaded_as.items()}, indent=2, sort_keys=True
        ),
        LTXTRAINER_METADATA_KEY: json.dumps(record, sort_keys=True),
    }
    conditioning = config.conditioning
    if conditioning is not None and conditioning.mode == "reference_video":
        metadata[REFERENCE_DOWNSCALE_METADATA_KEY] = str(conditioning.reference_downscale_factor)
    return write_atomic(path, lambda temp: save_file(tensors, str(temp), metadata=metadata))


def load_lora_into(transformer: torch.nn.Module, path: str | Path) -> None:
    """Load adapter weights saved by `save_lora` into an already-added adapter (warm starts, resume).

    A folded file is unfolded with the alpha/rank it records, so the adapter (which applies its
    own alpha/rank) reproduces the saved LoRA.
    """
    state = {}
    with safe_open(str(path), framework="pt") as handle:
        record = json.loads((handle.metadata() or {}).get(LTXTRAINER_METADATA_KEY, "{}"))
        for key in handle.keys():
            state[key.removeprefix(f"{DIFFUSERS_COMPONENT}.")] = handle.get_tensor(key)
    if record.get("folded"):
        alphas = record.get("alphas", {})
        for key, value in state.items():
            if ".lora_B." in key:
                module = key.split(".lora_B.", 1)[0]
                rank = state[f"{module}.lora_A.weight"].shape[0]
                state[key] = value.float() / (float(alphas.get(module, record["alpha"])) / rank)
    result = set_peft_model_state_dict(transformer, state, adapter_name="default")
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"{path} does not fit this model's adapter: unexpected keys {unexpected[:3]}...")
