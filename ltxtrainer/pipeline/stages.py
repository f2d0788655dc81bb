"""Each stage as the pipeline runs it: its arguments, a fingerprint of its inputs, what it leaves behind.

Planning is cheap (nothing heavy is imported here): a stage whose fingerprint matches its last
finished record and whose outputs are still there is skipped without starting its process.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ltxtrainer.config import REFERENCE_LATENTS_DIR, TrainerConfig
from ltxtrainer.dataset_key import file_stamps, find_media
from ltxtrainer.pipeline.project import ProjectPaths, reference_folder
from ltxtrainer.pipeline.request import CAPTIONERS, REFERENCE_FOLDER, PipelineOptions
from ltxtrainer.pipeline.run_config import (
    audio_choice,
    first_captions,
    missing_references_message,
    reference_clips,
)


@dataclass
class Plan:
    """One stage as the pipeline will run it: its arguments, or why it cannot run.

    A plan with neither arguments nor a refusal is a check that passed without a process to run
    (the reference stage on the user's own references); `message` says what it found.
    """

    arguments: list[str] | None = None
    fingerprint: str | None = None
    refusal: str | None = None
    config: TrainerConfig | None = None
    message: str | None = None


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:32]


def media_files(folder: Path) -> list[Path]:
    """The videos and images under `folder`: split copies the images and the caption stage captions
    them, so their adding or editing must change those stages' fingerprints as a clip's does."""
    return find_media(folder) if folder.is_dir() else []


def split_plan(options: PipelineOptions, paths: ProjectPaths) -> Plan:
    if not paths.raw_dir.is_dir():
        return Plan(refusal=f"No project folder {paths.raw_dir}: create it and put the project's videos in it.")
    arguments = [str(paths.raw_dir), "--output-dir", str(paths.scenes_dir)]
    settings = {
        "--detector": options.detector, "--threshold": options.threshold,
        "--min-scene-len": options.min_scene_len, "--max-scene-len": options.max_scene_len,
    }
    for flag, value in settings.items():
        if value is not None:
            arguments += [flag, str(value)]
    return Plan(arguments, digest(file_stamps(paths.raw_dir, media_files(paths.raw_dir)), settings))


def caption_plan(options: PipelineOptions, paths: ProjectPaths) -> Plan:
    if options.captioner not in CAPTIONERS:
        return Plan(refusal=f"Unknown captioner {options.captioner!r}; choose one of {', '.join(CAPTIONERS)}.")
    arguments = [str(paths.scenes_dir), "--backend", options.captioner, f"--trigger-word={options.project}"]
    if options.captioner == "api":
        for flag, value in (("--api-base-url", options.api_base_url), ("--api-model", options.api_model)):
            if value:
                arguments += [flag, value]
        arguments += ["--api-key-env", options.api_key_env]  # the key itself travels in the child's env only
    if options.caption_model_path and options.captioner in ("llava", "qwen"):
        arguments += ["--model-path", str(options.caption_model_path)]
    if options.captions_from and options.captioner == "files":
        arguments += ["--captions-from", str(options.captions_from)]
    settings = [options.captioner, options.project, options.api_base_url, options.api_model, str(options.captions_from)]
    return Plan(arguments, digest(file_stamps(paths.scenes_dir, media_files(paths.scenes_dir)), settings))


def reference_plan(options: PipelineOptions, paths: ProjectPaths) -> Plan:
    """Compute the clips' references into `datasets/<project>/references_<kind>/`, or (kind folder)
    check that the user's folder has one for every clip and name the clips that lack one."""
    clips = reference_clips(paths)
    if not clips:
        return Plan(refusal=f"No video clips in {paths.scenes_dir} to make references for: run the split step first.")
    stamps = file_stamps(paths.scenes_dir, clips)
    folder = reference_folder(options, paths)
    if options.kind != REFERENCE_FOLDER:
        arguments = [str(paths.scenes_dir), "--kind", options.kind, "--output-dir", str(folder)]
        return Plan(arguments, digest(stamps, options.kind))
    if not folder.is_dir():
        return Plan(refusal=f"--reference-dir {folder} is not a folder: point it at your reference videos.")
    refusal = missing_references_message(options, paths)
    if refusal:
        return Plan(refusal=refusal)
    references = media_files(folder)
    return Plan(fingerprint=digest(stamps, str(folder.resolve()), file_stamps(folder, references)),
                message=f"every one of the {len(clips)} clips has its reference in {folder}")


def preprocess_plan(options: PipelineOptions, paths: ProjectPaths, model: str, data_key: str) -> Plan:
    """Write this request's data into its own key folder (see `ltxtrainer.dataset_key`)."""
    arguments = [
        str(paths.scenes_dir), "--resolution-buckets", f"{options.width}x{options.height}x{options.frames}",
        "--model-path", model, "--max-sequence-length", str(options.text_length), "--on-short", options.on_short,
        "--output-dir", str(paths.data_folder(data_key)),
    ]
    with_audio = audio_choice(options, paths, model)
    if with_audio is not None:  # LTX-2: the same answer the data key and the run config hold
        arguments.append("--with-audio" if with_audio else "--no-audio")
    if options.reference_video:  # IC-LoRA: reference latents beside the clips' (the key names the references)
        arguments += ["--reference-dir", str(reference_folder(options, paths))]
        if options.reference_downscale != 1:
            arguments += ["--reference-downscale", str(options.reference_downscale)]
    return Plan(arguments, digest(data_key))


def export_plan(paths: ProjectPaths) -> Plan:
    if not paths.lora_file.is_file():
        return Plan(refusal=f"No trained LoRA at {paths.lora_file}; run the train step first.")
    arguments = [str(paths.lora_file), "--output", str(paths.comfy_file)]
    return Plan(arguments, digest(file_stamps(paths.run_dir, [paths.lora_file])))


def _count_pt(folder: Path | None) -> int:
    return sum(1 for _ in folder.rglob("*.pt")) if folder and folder.is_dir() else 0


def stage_artefacts(stage: str, paths: ProjectPaths, data_dir: Path | None = None,
                    references: Path | None = None) -> dict[str, Any]:
    """What a finished stage left on disk, for the status file and the GUI's links."""
    if stage == "split":
        return {"scenes_dir": str(paths.scenes_dir), "clips": len(media_files(paths.scenes_dir))}
    if stage == "caption":
        return {
            "captions_file": str(paths.scenes_dir / "captions.json"),
            "captions": len(first_captions(paths.scenes_dir, 10**9)),
        }
    if stage == "reference":
        return {"references_dir": str(references), "references": len(media_files(references)) if references else 0}
    if stage == "preprocess":
        artefacts = {"precomputed_dir": str(data_dir), "samples": _count_pt(Path(data_dir) / "latents" if data_dir else None)}
        if references is not None:
            artefacts["reference_samples"] = _count_pt(Path(data_dir) / REFERENCE_LATENTS_DIR if data_dir else None)
        return artefacts
    if stage == "train":
        samples = sorted(str(path) for path in (paths.run_dir / "samples").rglob("*.mp4"))
        checkpoint = latest_checkpoint(paths.run_dir)
        return {
            "run_dir": str(paths.run_dir),
            "config": str(paths.config_file),
            "lora": str(paths.lora_file) if paths.lora_file.is_file() else None,
            "metrics": str(paths.run_dir / "metrics.jsonl"),
            "checkpoint": str(checkpoint) if checkpoint else None,
            "samples": samples,
        }
    return {"comfyui_lora": str(paths.comfy_file) if paths.comfy_file.is_file() else None}


def outputs_present(stage: str, paths: ProjectPaths, data_dir: Path | None = None,
                    with_references: bool = False) -> bool:
    """A stage counts as done only while what it made is still there (IC-LoRA data: its reference latents too)."""
    if stage == "split":
        return bool(media_files(paths.scenes_dir))
    if stage == "caption":
        clips = media_files(paths.scenes_dir)
        return (paths.scenes_dir / "captions.json").is_file() and all(c.with_suffix(".txt").is_file() for c in clips)
    if stage == "preprocess":
        if data_dir is None or not (Path(data_dir) / "manifest.json").is_file():
            return False
        return not with_references or (Path(data_dir) / REFERENCE_LATENTS_DIR).is_dir()
    return paths.comfy_file.is_file()


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The run's newest complete checkpoint (torch is imported only when the run has checkpoints)."""
    if not (Path(run_dir) / "checkpoints").is_dir():
        return None
    from ltxtrainer.training.checkpoints import latest_checkpoint as newest

    return newest(run_dir)


def latest_checkpoint_step(run_dir: Path) -> int | None:
    if not (Path(run_dir) / "checkpoints").is_dir():
        return None
    from ltxtrainer.training.checkpoints import list_checkpoints

    found = list_checkpoints(run_dir)
    return found[-1][0] if found else None
