"""Remembered GUI settings: the last project, resolution, template, language, ... between launches.

Only the keys in `REMEMBERED` are ever written, so a secret passed along with the form (the
captioning API key) can never end up in the file, whatever a caller hands in.
"""

from __future__ import annotations

import json
from pathlib import Path

from ltxtrainer.atomic import write_text_atomic

REMEMBERED = (
    "language",
    "project",
    "resolution",
    "frames",
    "on_short",
    "train_steps",
    "steps",
    "captioner",
    "api_base_url",
    "api_model",
    "template",
    "advanced_config",
    "model",
    "audio",
    "lora_presets",
    "conditioning",
    "reference_kind",
    "reference_dir",
    "reference_downscale",
)


def load_settings(path: Path) -> dict:
    """The saved settings, or {} when there are none or the file is unreadable (never fatal)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {key: data[key] for key in REMEMBERED if key in data} if isinstance(data, dict) else {}


def remember(path: Path, **values) -> dict:
    """Merge `values` (only the remembered keys) into the settings file and return the result."""
    settings = load_settings(path)
    settings.update({key: value for key, value in values.items() if key in REMEMBERED and value is not None})
    write_text_atomic(path, json.dumps(settings, ensure_ascii=False, indent=2) + "\n")
    return settings
