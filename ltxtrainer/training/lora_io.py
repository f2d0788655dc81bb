"""Saving and loading the adapter in diffusers' LoRA format.

The file is what `LTXPipeline.load_lora_weights` reads: keys `transformer.<module>.lora_A/B.weight`
and the rank/alpha in the `lora_adapter_metadata` entry. Writing alpha there fixes a reference
trainer defect: without it every loader assumes alpha = rank and mis-scales the LoRA.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors import safe_open

from ltxtrainer.atomic import write_atomic
from ltxtrainer.config import TrainerConfig

LORA_FILE = "lora_weights.safetensors"


def adapter_state_dict(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """peft's view of the adapter (keys without the adapter name), as contiguous CPU tensors."""
    state = get_peft_model_state_dict(transformer, adapter_name="default")
    return {key: value.detach().to("cpu").contiguous() for key, value in state.items()}


def lora_metadata(config: TrainerConfig) -> dict:
    lora = config.lora
    assert lora is not None
    return {
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": sorted(lora.target_modules),
    }


def save_lora(transformer: torch.nn.Module, config: TrainerConfig, path: str | Path, dtype=torch.bfloat16) -> Path:
    """Write the adapter with `LTXPipeline.save_lora_weights`, through a temporary name (atomic)."""
    from diffusers import LTXPipeline

    state = {key: value.to(dtype) for key, value in adapter_state_dict(transformer).items()}

    def writer(temp: Path) -> None:
        with tempfile.TemporaryDirectory(dir=temp.parent, prefix=".lora-") as folder:
            LTXPipeline.save_lora_weights(
                folder,
                transformer_lora_layers=state,
                weight_name=LORA_FILE,
                transformer_lora_adapter_metadata=lora_metadata(config),
            )
            os.replace(Path(folder) / LORA_FILE, temp)

    return write_atomic(path, writer)


def load_lora_into(transformer: torch.nn.Module, path: str | Path) -> None:
    """Load adapter weights saved by `save_lora` into an already-added adapter (for warm starts)."""
    state = {}
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():
            state[key.removeprefix("transformer.")] = handle.get_tensor(key)
    result = set_peft_model_state_dict(transformer, state, adapter_name="default")
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"{path} does not fit this model's adapter: unexpected keys {unexpected[:3]}...")
