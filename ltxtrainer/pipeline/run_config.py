"""The effective training config of a pipeline run: template + overrides + what the pipeline owns."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

import yaml

from ltxtrainer.config import REFERENCE_LATENTS_DIR, ConfigError, TrainerConfig, config_from_dict
from ltxtrainer.dataset_key import all_have_sound
from ltxtrainer.pipeline.project import ProjectPaths, reference_folder
from ltxtrainer.pipeline.request import (
    CONFIGS_DIR,
    REFERENCE_FOLDER,
    REPO_ROOT,
    TEMPLATES,
    PipelineError,
    PipelineOptions,
)

VALIDATION_PROMPTS_FROM_CAPTIONS = 2
# Fields the pipeline owns: an override of them would silently train somewhere else.
_PIPELINE_FIELDS = {
    "output_dir": "--outputs-dir and --run-name",
    "data.preprocessed_data_root": "--work-dir (one data folder per resolution, text length and caption set)",
    "validation.video_dims": "--resolution and --frames",
    "conditioning.mode": "--conditioning (the reference stage and preprocess make the data it needs)",
    "conditioning.reference_latents_dir": "--conditioning (preprocess writes reference_latents/)",
    "conditioning.reference_downscale_factor": "--reference-downscale",
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


def first_caption_entries(scenes_dir: Path, count: int) -> list[tuple[str, str]]:
    """(media_path relative to the scenes, caption) of the first `count` entries of captions.json."""
    path = scenes_dir / "captions.json"
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        return [(str(entry["media_path"]), str(entry["caption"])) for entry in entries[:count]]
    except (OSError, ValueError, TypeError, KeyError):
        return []


def first_captions(scenes_dir: Path, count: int) -> list[str]:
    return [caption for _, caption in first_caption_entries(scenes_dir, count)]


def reference_clips(paths: ProjectPaths) -> list[Path]:
    """The scene clips that take a reference: the videos (an image has no motion to guide)."""
    from ltxtrainer.media import find_videos

    return find_videos(paths.scenes_dir) if paths.scenes_dir.is_dir() else []


def missing_references(options: PipelineOptions, paths: ProjectPaths) -> list[str]:
    """The scene clips (relative names) that have no reference video in this request's reference folder."""
    from ltxtrainer.reference import find_reference

    folder = reference_folder(options, paths)
    clips = [clip.relative_to(paths.scenes_dir) for clip in reference_clips(paths)]
    return [clip.as_posix() for clip in clips if find_reference(clip, folder) is None]


def missing_references_message(options: PipelineOptions, paths: ProjectPaths) -> str | None:
    """Why the user's own references (kind folder) cannot train this dataset yet, naming the clips; None when
    every clip has one."""
    missing = missing_references(options, paths)
    if not missing:
        return None
    total = len(reference_clips(paths))
    shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
    return (
        f"{len(missing)} of {total} clips have no reference video in {reference_folder(options, paths)} "
        f"(--reference-dir): {shown}. Put a reference named like each clip there (clip.mp4 -> clip_reference.mp4 "
        "or clip.mp4, in the same sub-folder), or remove those clips from the scenes folder."
    )


def clip_reference(options: PipelineOptions, paths: ProjectPaths, clip_relative: str) -> Path:
    """The reference video of one scene clip: where the reference stage writes it (computed kinds,
    so the config is the same before and after that stage ran), or the user's own (kind folder)."""
    from ltxtrainer.reference import find_reference, reference_file_name

    folder = reference_folder(options, paths)
    relative = Path(clip_relative)
    if options.kind != REFERENCE_FOLDER:
        return (folder / relative.parent / reference_file_name(relative)).resolve()
    found = find_reference(relative, folder)
    if found is None:
        raise PipelineError(missing_references_message(options, paths))
    return found.resolve()


def _validation_prompts_and_references(options: PipelineOptions, paths: ProjectPaths,
                                       template_prompts: list[str]) -> tuple[list[str], list[str] | None]:
    """The validation prompts and, for IC-LoRA, one reference video per prompt.

    Without references: the template's prompts, else the first captions. With references the
    sample must show the LoRA following a clip's reference, so the prompts are the first clips'
    captions (or the user's --set validation.prompts, paired with the first clips in order) and the
    references are those clips' references, unless --set validation.reference_videos names others.
    """
    if not options.reference_video:
        return template_prompts or first_captions(paths.scenes_dir, VALIDATION_PROMPTS_FROM_CAPTIONS), None
    given = "validation.prompts" in options.overrides
    count = len(template_prompts) if given else VALIDATION_PROMPTS_FROM_CAPTIONS
    entries = first_caption_entries(paths.scenes_dir, count)
    prompts = template_prompts if given else [caption for _, caption in entries]
    if "validation.reference_videos" in options.overrides or not entries:
        return prompts, None  # the user's own references, or no captioned clips yet (train builds it again)
    if given and len(entries) < len(prompts):
        raise PipelineError(
            f"--set validation.prompts gives {len(prompts)} prompts but the dataset has {len(entries)} captioned "
            "clips to take references from: give at most that many, or name one reference per prompt with "
            "--set validation.reference_videos=[...]."
        )
    return prompts, [str(clip_reference(options, paths, media)) for media, _ in entries[:len(prompts)]]


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
    return all_have_sound(paths.scenes_dir)  # each clip probed once per version of it, without torch


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
    validation["prompts"], references = _validation_prompts_and_references(options, paths, prompts)
    if options.reference_video:
        _set_reference_conditioning(data, options)
        if references is not None:
            validation["reference_videos"] = references
    if "validation.frame_rate" not in options.overrides:
        fps = median_fps(paths.scenes_dir)
        if fps is not None:
            validation["frame_rate"] = fps
    return config_from_dict(data)


def _set_reference_conditioning(data: dict, options: PipelineOptions) -> None:
    """IC-LoRA: conditioning.mode reference_video on the data preprocess wrote to reference_latents/.

    The later schema's `conditioning` section takes over first_frame_conditioning_p, so it gets the
    template's (or the caller's) value rather than the section's default.
    """
    conditioning = data.get("conditioning") or {}
    optimization = data.get("optimization") or {}
    if "first_frame_conditioning_p" not in conditioning and "first_frame_conditioning_p" in optimization:
        conditioning["first_frame_conditioning_p"] = optimization["first_frame_conditioning_p"]
    conditioning.update(mode="reference_video", reference_latents_dir=REFERENCE_LATENTS_DIR,
                        reference_downscale_factor=options.reference_downscale)
    data["conditioning"] = conditioning


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
