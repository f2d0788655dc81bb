"""Checkpoints that survive crashes, and exact resume.

A checkpoint is a folder `checkpoints/step_NNNNNN/` holding the LoRA in diffusers format (or the
full transformer), the optimizer and LR-scheduler state, the RNG state and `state.json`. It is
written under a hidden staging name and renamed into place only when complete, so a kill or a
full disk mid-save leaves the previous checkpoint as the latest one. The data order and the noise
of every step are functions of (seed, step), so resuming at step k replays exactly what an
uninterrupted run does from k on (the reference trainer restarted at step 0 on resume).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from ltxtrainer import progress
from ltxtrainer.atomic import commit_directory, replace_with_retry
from ltxtrainer.config import TrainerConfig
from ltxtrainer.training.lora_io import LORA_FILE, load_lora_into, save_lora

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "state.json"
TRAINING_STATE_FILE = "training_state.pt"
FULL_MODEL_DIR = "transformer"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(RuntimeError):
    pass


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR / f"step_{step:06d}"


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (those with state.json), oldest first."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    found = []
    if root.is_dir():
        for folder in root.iterdir():
            match = _STEP_DIR.match(folder.name)
            if match and (folder / STATE_FILE).is_file():
                found.append((int(match.group(1)), folder))
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def save_checkpoint(
    output_dir: Path,
    step: int,
    transformer: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler,
    config: TrainerConfig,
) -> Path:
    final = checkpoint_dir(output_dir, step)
    staging = final.with_name(f".{final.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if config.model.training_mode == "lora":
            # fp32 in checkpoints: a bf16 round trip would make the resumed run drift from an uninterrupted one.
            save_lora(transformer, config, staging / LORA_FILE, dtype=torch.float32, fold_alpha=False)
        else:
            transformer.save_pretrained(staging / FULL_MODEL_DIR, safe_serialization=True)
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(
            {"step": step, "optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(), "rng": rng},
            staging / TRAINING_STATE_FILE,
        )
        state = {"step": step, "training_mode": config.model.training_mode, "seed": config.seed}
        (staging / STATE_FILE).write_text(json.dumps(state, indent=2), encoding="utf-8")
        commit_directory(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def prune_checkpoints(output_dir: Path, keep_last_n: int) -> None:
    """Delete all but the newest `keep_last_n` checkpoints; one that cannot be deleted is kept, with a warning.

    Pruning only saves disk space, so it must never end a training: on Windows a checkpoint
    folder cannot be renamed while another program (ComfyUI loading its LoRA, OneDrive syncing
    it, Explorer showing it) has a file in it open.
    """
    if keep_last_n < 0:
        return
    for _, folder in list_checkpoints(output_dir)[:-keep_last_n]:
        # Hide it first (one atomic rename), so a kill during the delete never leaves a
        # half-deleted folder that still looks like a complete checkpoint.
        doomed = folder.with_name(f".{folder.name}.deleting")
        try:
            replace_with_retry(folder, doomed)
        except OSError as error:
            progress.say(f"WARNING: could not delete the old checkpoint {folder} ({error}); it is kept. "
                         "Close programs using files in it (ComfyUI, Explorer, OneDrive) and delete it by hand.")
            continue
        shutil.rmtree(doomed, ignore_errors=True)


def remove_partial_checkpoints(output_dir: Path) -> None:
    """Leftovers of a save or prune interrupted by a kill; none of them is a usable checkpoint."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    if root.is_dir():
        for folder in [*root.glob(".step_*.partial"), *root.glob(".step_*.deleting")]:
            shutil.rmtree(folder, ignore_errors=True)


def load_checkpoint(
    folder: Path, transformer: torch.nn.Module, optimizer: torch.optim.Optimizer, lr_scheduler, config: TrainerConfig
) -> int:
    """Restore weights, optimizer, scheduler and RNG from `folder`; returns the step it was taken at."""
    try:
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        if state.get("training_mode") != config.model.training_mode:
            raise CheckpointError(
                f"{folder} was saved in {state.get('training_mode')} mode; this config trains {config.model.training_mode}"
            )
        if config.model.training_mode == "lora":
            load_lora_into(transformer, folder / LORA_FILE)
        else:
            from safetensors.torch import load_file

            weights = {}
            for shard in sorted((folder / FULL_MODEL_DIR).glob("*.safetensors")):
                weights.update(load_file(str(shard)))
            transformer.load_state_dict(weights, strict=True)
        training = torch.load(folder / TRAINING_STATE_FILE, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(training["optimizer"])
        lr_scheduler.load_state_dict(training["lr_scheduler"])
        torch.set_rng_state(training["rng"]["torch"])
        if torch.cuda.is_available() and "cuda" in training["rng"]:
            torch.cuda.set_rng_state_all(training["rng"]["cuda"])
    except CheckpointError:
        raise
    except Exception as error:
        raise CheckpointError(f"Cannot resume from {folder}: {error}") from error
    return int(state["step"])
