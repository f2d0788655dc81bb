"""The effective training config of a pipeline run: template + overrides + what the pipeline owns."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

import yaml

from ltxtrainer.config import ConfigError, TrainerConfig, config_from_dict
from ltxtrainer.dataset_key import find_media
from ltxtrainer.pipeline.project import ProjectPaths
from ltxtrainer.pipeline.request import CONFIGS_DIR, REPO_ROOT, TEMPLATES, PipelineError, PipelineOptions

VALIDATION_PROMPTS_FROM_CAPTIONS = 2
# Fields the pipeline owns: an override of them would silently train somewhere else.
_PIPELINE_FIELDS = {
    "output_dir": "--outputs-dir and --run-name",
    "data.preprocessed_data_root": "--work-dir (one data folder per resolution, text length and caption set)",
    "validation.video_dims": "--resolution and --frames",
}
# A run may be continued (--resume) when only these parts of its config change.
RESUMABLE_CHANGES = ("optimization.steps", "validation.", "checkpoints.")


def template_path(name: str) -> Path:
    if name not in TEMPLATES:
        raise PipelineError(f"Unknown config template {name!r}; choose one of {', '.join(TEMPLATES)}.")
    return CONFIGS_DIR / TEMPLATES[name]


def _resolve_model_source(source: str) -> str:
    """Relative folders in templates mean the repository's folders, whatever the working folder."""
    path = Path(source).expanduser()
    if path.is_absolute():
        return str(path)
    in_repo = REPO_ROOT / path
    if in_repo.exists():
        return str(in_repo)
    if path.exists():
        return str(path.resolve())
    if re.fullmatch(r"[\w.-]+/[\w.-]+", source) and not source.startswith("models/"):
        return source  # a Hugging Face repo id ("org/name") that may be in the local cache
    return str(in_repo)  # so the model-folder check names the folder the user is told to fill


def set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def first_captions(scenes_dir: Path, count: int) -> list[str]:
    path = scenes_dir / "captions.json"
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        return [str(entry["caption"]) for entry in entries[:count]]
    except (OSError, ValueError, TypeError, KeyError):
        return []


def median_fps(scenes_dir: Path) -> float | None:
    """The clips' median frame rate, which the validation samples should play at (None without clips)."""
    from ltxtrainer.media import MediaError, find_videos, probe_video

    rates = []
    for clip in find_videos(scenes_dir) if scenes_dir.is_dir() else []:
        try:
            rates.append(probe_video(clip).fps)
        except MediaError:
            continue  # preprocess names the unreadable clip; its rate cannot matter here
    return round(statistics.median(rates), 3) if rates else None


def model_source(options: PipelineOptions) -> str:
    """The model folder the run trains: --model-path, else the template's `model.model_source`."""
    if options.model_path is not None:
        return str(Path(options.model_path).resolve())
    return _resolve_model_source(str(_template_data(options).get("model", {}).get("model_source")
                                     or "models/LTX-Video-0.9.7-diffusers"))


def _template_data(options: PipelineOptions) -> dict:
    source = template_path(options.config_template)
    try:
        return yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"Cannot read the config template {source}: {error}") from None


def model_family(model: str) -> str:
    """'ltx2' or 'ltx_video' from the model folder's model_index.json (0.9 when it cannot be read)."""
    from ltxtrainer.models.folder import detect_family, resolve_model_path

    try:
        index = json.loads((resolve_model_path(model) / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = None  # the preprocess stage's model-folder check names what is missing
    return detect_family(index)


def audio_choice(options: PipelineOptions, paths: ProjectPaths, model: str) -> bool | None:
    """Whether an LTX-2 run trains sound (None for LTX-Video 0.9, which has none).

    `--set model.with_audio=...` decides; otherwise the template's `model.with_audio`, but only
    when every clip has a sound track (one silent clip makes the run video only, as the
    preprocess stage says). Preprocess, the data key and the run config all use this one answer.
    """
    if model_family(model) != "ltx2":
        return None
    if "model.with_audio" in options.overrides:
        return bool(options.overrides["model.with_audio"])
    if not _template_data(options).get("model", {}).get("with_audio", False):
        return False
    from ltxtrainer.precompute_ltx2 import has_sound

    return all(has_sound(clip) for clip in (find_media(paths.scenes_dir) if paths.scenes_dir.is_dir() else []))


def build_training_config(options: PipelineOptions, paths: ProjectPaths, data_dir: Path) -> TrainerConfig:
    """Template + the caller's overrides + the paths, sizes and frame rate the pipeline owns, validated.

    `data_dir` is the run's data key folder. Validation prompts: the template's (with `{trigger}`
    replaced) or, when it has none, the first captions of the dataset, so the samples show what
    the LoRA learned from real captions; they play at the clips' median frame rate.
    """
    data = _template_data(options)
    for key, value in options.overrides.items():
        if key in _PIPELINE_FIELDS:
            raise PipelineError(f"--set {key}=... is refused: the pipeline sets {key} from {_PIPELINE_FIELDS[key]}.")
        set_dotted(data, key, value)
    model = data.setdefault("model", {})
    model["model_source"] = model_source(options)
    with_audio = audio_choice(options, paths, model["model_source"])
    if with_audio is not None:
        model["with_audio"] = with_audio
        if not with_audio and "lora.target_modules" not in options.overrides:
            # A video-only run has no audio stream: adapters on audio modules would never train.
            lora = data.setdefault("lora", {})
            lora["target_modules"] = [name for name in lora.get("target_modules") or [] if "audio" not in name]
    data.setdefault("data", {})["preprocessed_data_root"] = str(Path(data_dir).resolve())
    data["output_dir"] = str(paths.run_dir.resolve())
    validation = data.setdefault("validation", {})
    validation["video_dims"] = [options.width, options.height, options.frames]
    prompts = [str(prompt).replace("{trigger}", options.project) for prompt in validation.get("prompts") or []]
    validation["prompts"] = prompts or first_captions(paths.scenes_dir, VALIDATION_PROMPTS_FROM_CAPTIONS)
    if "validation.frame_rate" not in options.overrides:
        fps = median_fps(paths.scenes_dir)
        if fps is not None:
            validation["frame_rate"] = fps
    return config_from_dict(data)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): data}


def changed_fields(old: TrainerConfig, new: TrainerConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted names of the fields that differ, except those in `ignore`."""
    before, after = _flatten(old.model_dump(mode="json")), _flatten(new.model_dump(mode="json"))
    return sorted(key for key in before.keys() | after.keys()
                  if before.get(key) != after.get(key) and key not in ignore)


def with_overrides(config: TrainerConfig, overrides: dict[str, Any]) -> TrainerConfig:
    """A run's own config with `--set` overrides applied (for --resume), validated again."""
    data = config.model_dump(mode="json")
    for key, value in overrides.items():
        set_dotted(data, key, value)
    return config_from_dict(data)
