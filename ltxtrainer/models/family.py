"""The family interface: what the trainer, validation and export ask of a model family.

One module per family implements it with plain module-level functions and constants
(`models/ltx_video.py` for LTX-Video 0.9, `models/ltx2.py` for LTX-2/2.3/2.5), as finetrainers'
"specifications" do with classes. `family_for(model_dir)` reads the folder's model_index.json,
so the trainer never asks "which family is this": it calls the module it gets back.

Export works from a LoRA file without a model folder, so `export.py` reads the family from the
file (our metadata record, else its module names) and uses that family's key map.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import torch

from ltxtrainer.config import TrainerConfig
from ltxtrainer.data import PrecomputedDataset


class ValidationRenderer(Protocol):
    """Renders the validation prompts (encoded once, before training) with the adapter being trained."""

    def render(self, transformer: torch.nn.Module, output_dir: Path) -> list[Path]: ...


class ModelFamily(Protocol):
    """What one model family provides; satisfied by the modules `ltx_video` and `ltx2`."""

    FAMILY: str
    # Module names (quanto patterns) outside the repeated blocks that stay unquantized.
    QUANTIZE_EXCLUDE: list[str]

    def load_transformer(
        self, source: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> torch.nn.Module: ...

    def open_dataset(self, config: TrainerConfig, transformer: torch.nn.Module) -> PrecomputedDataset:
        """The run's precomputed data, checked against the transformer (channels, audio)."""
        ...

    def collate(self, items: list[dict]) -> dict:
        """One bucket's dataset items as the batch `training_loss` takes."""
        ...

    def training_loss(
        self,
        model: torch.nn.Module,
        batch: dict,
        config: TrainerConfig,
        generator: torch.Generator,
        device: torch.device,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """One micro-batch's flow-matching loss; every random draw comes from `generator`, in a fixed order."""
        ...

    def validation_renderer(
        self,
        model_dir: Path,
        config: TrainerConfig,
        dataset: PrecomputedDataset,
        device: torch.device,
        dtype: torch.dtype,
    ) -> ValidationRenderer:
        """Encode the validation prompts now (then free the text encoder); render later."""
        ...


def family_name(model_dir: str | Path) -> str:
    """'ltx2' or 'ltx_video' from the folder's model_index.json (`folder.detect_family`)."""
    from ltxtrainer.models.folder import detect_family

    index_path = Path(model_dir) / "model_index.json"
    model_index = json.loads(index_path.read_text(encoding="utf-8")) if index_path.is_file() else None
    return detect_family(model_index)


def family_for(model_dir: str | Path) -> ModelFamily:
    """The family module of a checked model folder."""
    from ltxtrainer.models import ltx2, ltx_video

    return {"ltx_video": ltx_video, "ltx2": ltx2}[family_name(model_dir)]
