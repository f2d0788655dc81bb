"""From a config file to an exit code.

Failures a user can cause or meet (a bad config, a missing model file, unusable data, a checkpoint
of another run, a full disk, too little GPU memory) end in one readable paragraph. Anything else is
a defect of ltxtrainer or a library: its message is still one line, but the full traceback goes to
`<output_dir>/error.log` (named in that line), so it can be reported instead of being passed off as
the user's mistake.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import torch

from ltxtrainer import progress
from ltxtrainer.config import ConfigError, TrainerConfig, load_config
from ltxtrainer.data import DatasetError
from ltxtrainer.models.folder import ModelFolderError
from ltxtrainer.training.checkpoints import CheckpointError
from ltxtrainer.training.trainer import MEMORY_ADVICE, TrainingFailed, TrainingStopped, run_training

EXIT_FINISHED, EXIT_FAILED, EXIT_STOPPED = 0, 1, 130
ERROR_LOG = "error.log"
EXPECTED_FAILURES = (ConfigError, ModelFolderError, DatasetError, CheckpointError, TrainingFailed)


def write_error_log(folder: Path) -> Path:
    """The traceback of the exception being handled, in `folder/error.log` (UTF-8); returns the file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ERROR_LOG
    path.write_text(traceback.format_exc(), encoding="utf-8")
    return path


def _fail(message: str, **fields) -> int:
    progress.say(f"Training did not finish: {message}")
    progress.emit("error", stage="train", message=message, **fields)
    return EXIT_FAILED


def train_from_file(config_path: str | Path, resume: bool = False) -> int:
    config: TrainerConfig | None = None
    try:
        config = load_config(config_path)
        result = run_training(config, resume=resume)
    except TrainingStopped as stopped:
        progress.say(str(stopped))
        return EXIT_STOPPED
    except EXPECTED_FAILURES as error:
        return _fail(str(error))
    except torch.OutOfMemoryError:  # outside the loop's own handler: loading, or the videos after the last step
        return _fail(
            "Out of GPU memory outside the training steps (loading the model or rendering the last validation "
            f"videos). {MEMORY_ADVICE}"
        )
    except Exception as error:  # a defect, not the user's doing: keep everything needed to fix it
        folder = Path(config.output_dir) if config is not None else Path(config_path).resolve().parent
        log = write_error_log(folder)
        return _fail(
            f"unexpected error {type(error).__name__}: {error}. This is a bug in ltxtrainer or a library; "
            f"the full report is in {log}. Please include that file when you report it.",
            error_log=str(log),
        )
    progress.say(
        f"Training finished at step {result.final_step}. LoRA: {result.lora_path or '(full model)'}; "
        f"latest checkpoint: {result.checkpoint}"
    )
    return EXIT_FINISHED
