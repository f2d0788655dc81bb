"""Which model folder a pipeline run trains, its family, and the family's own options as pipeline flags.

The Pipeline tab offers every LTX folder under the GUI's models/ plus the templates' default
folders not downloaded yet; the family (LTX-Video 0.9 or LTX-2) is read from the folder's
model_index.json (`models.folder.detect_family`), or guessed from the name of a folder that is
not there. The family decides which templates are offered and whether the LTX-2 options (sound,
LoRA targets, reference downscale) are shown; those options become `--set`/`--reference-*` flags
of scripts/run_pipeline.py. Nothing here imports torch (the GUI process stays free of it).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ltxtrainer import env_check
from ltxtrainer.models import ltx2_targets
from ltxtrainer.models.folder import ModelFamily, detect_family
from ltxtrainer.pipeline import TEMPLATES, template_path
from ltxtrainer.ui.workspace import AppPaths

LTX2 = "ltx2"
AUDIO_CHOICES = ("auto", "with", "without")  # auto: the template decides (and silent clips make it video only)
AUDIO_OVERRIDES = {"with": "model.with_audio=true", "without": "model.with_audio=false"}
# The LTX-2 LoRA presets, as the switches of `ltx2.lora_target_modules(feed_forward, audio, cross_modal)`;
# video attention (attn1, attn2) is always trained.
LORA_PRESETS = ("feed_forward", "audio", "cross_modal")
CONDITIONING = ("none", "reference_video")
REFERENCE_KINDS = ("canny", "blur", "gray", "downscale", "folder")  # folder: the user's own reference videos
REFERENCE_DOWNSCALES = (1, 2, 4)


def family_from_name(name: str) -> ModelFamily:
    """The family a folder's name points to, for a folder not downloaded yet."""
    lowered = name.lower().replace("_", "-")
    return LTX2 if "ltx-2" in lowered or "ltx2" in lowered else "ltx_video"


def model_family(paths: AppPaths, model: str | None) -> ModelFamily:
    """The family of a folder under models/ (its model_index.json), else the one its name says."""
    if not model:
        return "ltx_video"
    index_file = paths.models / model / "model_index.json"
    if index_file.is_file():
        try:
            return detect_family(json.loads(index_file.read_text(encoding="utf-8")))
        except (OSError, ValueError):  # a half-downloaded file: the Environment tab names it
            pass
    return family_from_name(model)


def template_model_name(template: str) -> str:
    """The folder name of a template's `model.model_source` (models/LTX-2-diffusers -> LTX-2-diffusers)."""
    data = yaml.safe_load(template_path(template).read_text(encoding="utf-8")) or {}
    return Path(str((data.get("model") or {}).get("model_source") or "")).name


def template_family(template: str) -> ModelFamily:
    return family_from_name(template_model_name(template))


def family_templates(family: ModelFamily) -> list[str]:
    """The shipped templates written for `family`, in pipeline.TEMPLATES' order."""
    return [name for name in TEMPLATES if template_family(name) == family]


def model_folders(paths: AppPaths) -> list[tuple[str, ModelFamily, bool]]:
    """(name, family, downloaded) for each LTX folder under models/, then each template's default
    folder that is not there yet (choosing it shows the family's templates; the run says what to download)."""
    present = [(state.name, state.family, True) for state in env_check.scan_models(paths.models)
               if state.kind == "ltx-video"]
    names = {name for name, _, _ in present}
    missing = []
    for template in TEMPLATES:
        name = template_model_name(template)
        if name and name not in names:
            names.add(name)
            missing.append((name, family_from_name(name), False))
    return present + missing


def default_model(paths: AppPaths, saved: dict, template: str | None) -> str | None:
    """The remembered folder while it is offered, else the chosen template's folder when it is
    downloaded, else the first folder there, else the first one to download."""
    offered = model_folders(paths)
    names = [name for name, _, _ in offered]
    if saved.get("model") in names:
        return saved["model"]
    downloaded = [name for name, _, here in offered if here]
    if template and template in TEMPLATES and template_model_name(template) in downloaded:
        return template_model_name(template)
    return (downloaded or names or [None])[0]


def template_for(family: ModelFamily, current: str | None, suggested: str) -> str:
    """Keep the chosen template when it is of the folder's family, else the suggested one or the family's first."""
    templates = family_templates(family)
    for candidate in (current, suggested):
        if candidate in templates:
            return candidate
    return templates[0] if templates else suggested


def lora_target_modules(presets: list[str] | tuple[str, ...]) -> list[str]:
    """peft target names for the chosen LTX-2 presets (`ltx2_targets`, torch-free like the GUI)."""
    unknown = [preset for preset in presets if preset not in LORA_PRESETS]
    if unknown:
        raise ValueError(f"LoRA targets: {', '.join(unknown)} is not one of {', '.join(LORA_PRESETS)}")
    return ltx2_targets.lora_target_modules(**{preset: True for preset in presets})


def template_presets(template: str) -> list[str]:
    """The presets a template's `lora.target_modules` equals (the boxes a page starts with)."""
    data = yaml.safe_load(template_path(template).read_text(encoding="utf-8")) or {}
    targets = list((data.get("lora") or {}).get("target_modules") or [])
    for combination in range(2 ** len(LORA_PRESETS)):
        presets = [preset for bit, preset in enumerate(LORA_PRESETS) if combination >> bit & 1]
        if lora_target_modules(presets) == targets:
            return presets
    return ["audio", "cross_modal"]


def ltx2_overrides(audio: str, presets: list[str] | None) -> list[str]:
    """`--set` values for an LTX-2 run: the sound choice (auto sets nothing) and the LoRA targets
    (None keeps the template's)."""
    if audio not in AUDIO_CHOICES:
        raise ValueError(f"sound: {audio!r} is not one of {', '.join(AUDIO_CHOICES)}")
    overrides = [AUDIO_OVERRIDES[audio]] if audio in AUDIO_OVERRIDES else []
    if presets is not None:
        overrides.append(f"lora.target_modules={json.dumps(lora_target_modules(presets))}")
    return overrides


def conditioning_arguments(conditioning: str, kind: str, folder: str | None, downscale, family: ModelFamily) -> list[str]:
    """run_pipeline.py's IC-LoRA flags: nothing for `none`; the reference kind, the user's folder for
    `folder`, and for LTX-2 the reference downscale factor."""
    if conditioning not in CONDITIONING:
        raise ValueError(f"conditioning: {conditioning!r} is not one of {', '.join(CONDITIONING)}")
    if conditioning == "none":
        return []
    if kind not in REFERENCE_KINDS:
        raise ValueError(f"reference kind: {kind!r} is not one of {', '.join(REFERENCE_KINDS)}")
    argv = ["--conditioning", "reference_video", "--reference-kind", kind]
    if kind == "folder":
        folder = (folder or "").strip().strip('"')
        if not folder:
            raise ValueError("reference kind folder: type the folder that holds your reference videos")
        if not Path(folder).is_dir():
            raise ValueError(f"reference folder not found: {folder}")
        argv += ["--reference-dir", folder]
    if family == LTX2:
        factor = int(downscale or 1)
        if factor not in REFERENCE_DOWNSCALES:
            raise ValueError(f"reference downscale: {factor} is not one of 1, 2, 4")
        argv += ["--reference-downscale", str(factor)]
    return argv
