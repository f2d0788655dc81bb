"""From a config file to an exit code, with every expected failure turned into one readable paragraph."""

from __future__ import annotations

from pathlib import Path

from ltxtrainer import progress
from ltxtrainer.config import ConfigError, load_config
from ltxtrainer.data import DatasetError
from ltxtrainer.models.folder import ModelFolderError
from ltxtrainer.training.checkpoints import CheckpointError
from ltxtrainer.training.trainer import TrainingFailed, TrainingStopped, run_training

EXIT_FINISHED, EXIT_FAILED, EXIT_STOPPED = 0, 1, 130


def train_from_file(config_path: str | Path, resume: bool = False) -> int:
    try:
        config = load_config(config_path)
        result = run_training(config, resume=resume)
    except TrainingStopped as stopped:
        progress.say(str(stopped))
        return EXIT_STOPPED
    except (ConfigError, ModelFolderError, DatasetError, CheckpointError, TrainingFailed, ValueError, RuntimeError) as error:
        progress.say(f"Training did not finish: {error}")
        progress.emit("error", stage="train", message=str(error))
        return EXIT_FAILED
    progress.say(
        f"Training finished at step {result.final_step}. LoRA: {result.lora_path or '(full model)'}; "
        f"latest checkpoint: {result.checkpoint}"
    )
    return EXIT_FINISHED
