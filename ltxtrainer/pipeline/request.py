"""What a caller asks the pipeline for, and the checks that refuse a bad request before any stage runs."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ltxtrainer.captioning.backends import BACKENDS, DEFAULT_API_KEY_ENV
from ltxtrainer.captioning.base import TRIGGER_WORD_PATTERN
from ltxtrainer.dataset_key import DEFAULT_TEXT_LENGTH

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS_DIR = REPO_ROOT / "scripts"
CONFIGS_DIR = REPO_ROOT / "configs"

STAGES = ("split", "caption", "reference", "preprocess", "train", "export")
# their work belongs to the project, not to one run
DATASET_STAGES = ("split", "caption", "reference", "preprocess")
STAGE_SCRIPTS = {
    "split": "split_scenes.py",
    "caption": "caption_videos.py",
    "reference": "compute_reference.py",
    "preprocess": "preprocess_dataset.py",
    "train": "train.py",
    "export": "convert_to_comfyui.py",
}
TEMPLATES = {
    "13b": "ltx_13b_lora_template.yaml",
    "13b-int8": "ltx_13b_lora_int8-quanto_template.yaml",
    "2b": "ltx_2b_lora_template.yaml",
    "tiny": "tiny_demo.yaml",
    "ltx2": "ltx2_lora_24gb_template.yaml",  # LTX-2 with sound on a 24 GB GPU
    "ltx2-32gb": "ltx2_lora_32gb_template.yaml",  # Lightricks' low-VRAM choices: int8, 8-bit Adam, rank 16
    "ltx2-80gb": "ltx2_lora_80gb_template.yaml",  # bf16 base, rank 32, 960x544x121
}
CAPTIONERS = BACKENDS
ON_SHORT = ("shrink", "skip")
CONDITIONING_MODES = ("none", "reference_video")  # conditioning.mode of the run config
# The reference kinds `ltxtrainer.reference` computes (REFERENCE_KINDS), plus the user's own folder.
REFERENCE_FOLDER = "folder"
DEFAULT_REFERENCE_KIND = "canny"
REFERENCE_DOWNSCALES = (1, 2, 4)  # LTX-2 only: references at 1/N of the clips' width and height
MAX_PROJECT_NAME = 64
MAX_RUN_NAME = 120
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 130
# Folder names Windows refuses whatever the extension; a project must open on every OS.
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


class PipelineError(ValueError):
    """A request the pipeline refuses; the message says why and what to do."""


@dataclass
class PipelineOptions:
    """Everything one pipeline run needs; defaults give the repository's standard folders.

    `run_name` names the run folder under `outputs_dir` (default: the run of an identical earlier
    request, else a new `<project>_<WxHxF>_<YYYYMMDD-HHMMSS>`); `resume` continues that named run
    with its own config and data.
    """

    project: str
    width: int
    height: int
    frames: int
    steps: tuple[str, ...] = ("split", "caption", "preprocess", "train")
    config_template: str = "13b"
    captioner: str = "api"
    api_base_url: str | None = None
    api_model: str | None = None
    api_key_env: str = DEFAULT_API_KEY_ENV
    api_key: str | None = field(default=None, repr=False)  # from the GUI; only ever put in the child's env
    caption_model_path: Path | None = None
    captions_from: Path | None = None
    model_path: Path | None = None
    train_date_dir: Path = REPO_ROOT / "train_date"
    work_dir: Path = REPO_ROOT / "datasets"
    outputs_dir: Path = REPO_ROOT / "outputs"
    overrides: dict[str, Any] = field(default_factory=dict)
    detector: str | None = None
    threshold: float | None = None
    min_scene_len: int | None = None
    max_scene_len: float | None = None
    run_name: str | None = None
    resume: bool = False
    on_short: str = "shrink"
    text_length: int = DEFAULT_TEXT_LENGTH
    # IC-LoRA: each clip guided by a reference video (edges, blur, gray, a downscaled copy, or the
    # user's own references named like the clips in `reference_dir`, for kind "folder").
    conditioning: str = "none"
    reference_kind: str | None = None  # None: DEFAULT_REFERENCE_KIND when conditioning is reference_video
    reference_dir: Path | None = None
    reference_downscale: int = 1

    @property
    def reference_video(self) -> bool:
        return self.conditioning == "reference_video"

    @property
    def kind(self) -> str:
        """The reference kind this request uses (meaningful only with conditioning reference_video)."""
        return self.reference_kind or DEFAULT_REFERENCE_KIND


def _name_problem(name: str, limit: int) -> str | None:
    if not name:
        return "it is empty"
    if name in (".", "..") or ".." in name:
        return "'..' would point outside the project folders"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "an absolute path or drive letter would point outside the project folders"
    if not TRIGGER_WORD_PATTERN.fullmatch(name):
        bad = sorted({char for char in name if not TRIGGER_WORD_PATTERN.fullmatch(char)})
        return "it contains " + " ".join(repr(char) for char in bad)
    if name.startswith("-"):
        return "a leading '-' reads as a command-line option"
    if len(name) > limit:
        return f"it is longer than {limit} characters"
    if name.lower() in _WINDOWS_RESERVED:
        return "Windows reserves that name for a device"
    return None


def check_project_name(name: str) -> str:
    """Refuse a trigger word that is unsafe as a folder name or as the first word of a caption.

    The name becomes `train_date/<name>/`, `datasets/<name>/` and `outputs/<name>_WxHxF_.../`, and
    starts every caption, so it must mean the same to every tokenizer, file system and shell.
    """
    problem = _name_problem(name, MAX_PROJECT_NAME)
    if problem:
        raise PipelineError(
            f"Trigger word {name!r} is refused: {problem}. It becomes a folder name and the first word "
            "of every caption, so it may contain only ASCII letters, digits, '_' and '-' (spaces, "
            "Chinese characters, shell and path characters are unsafe there). Use a short made-up "
            "word such as 'sks_style' or 'mydog2'."
        )
    return name


def check_run_name(name: str) -> str:
    """A run name is a folder directly under outputs/: the same safe characters as a trigger word."""
    problem = _name_problem(name, MAX_RUN_NAME)
    if problem:
        raise PipelineError(
            f"Run name {name!r} is refused: {problem}. It names a folder under outputs/, so it may contain "
            "only ASCII letters, digits, '_' and '-', e.g. 'mycat_768x512_try2'."
        )
    return name


def check_dimensions(width: int, height: int, frames: int) -> None:
    """The LTX VAE compresses 32x in space and 8x in time after the first frame."""
    if width <= 0 or height <= 0 or width % 32 or height % 32:
        raise PipelineError(f"Resolution {width}x{height} is refused: width and height must be positive multiples of 32.")
    if frames < 1 or (frames - 1) % 8:
        raise PipelineError(f"Frame count {frames} is refused: it must be 8k+1 (9, 17, 25, 49, 97, 121, ...).")


def check_request(options: PipelineOptions) -> None:
    """Every check that needs no file: names, sizes, choices."""
    check_project_name(options.project)
    check_dimensions(options.width, options.height, options.frames)
    if options.run_name is not None:
        check_run_name(options.run_name)
    if options.resume and not options.run_name:
        raise PipelineError(
            "--resume continues one run, so it needs --run-name NAME (a folder under outputs/, as the Runs tab "
            "lists them). Without --resume, the same request again continues its run by itself."
        )
    if options.on_short not in ON_SHORT:
        raise PipelineError(f"--on-short {options.on_short!r} is refused: choose {' or '.join(ON_SHORT)}.")
    if options.text_length < 1:
        raise PipelineError(f"--max-sequence-length {options.text_length} is refused: it must be at least 1.")
    check_conditioning(options)


def reference_kinds() -> tuple[str, ...]:
    """Every --reference-kind: the kinds `ltxtrainer.reference` computes, then `folder`.

    Imported here, not at the top, so a request without references never loads OpenCV's filters.
    """
    from ltxtrainer.reference import REFERENCE_KINDS

    return (*REFERENCE_KINDS, REFERENCE_FOLDER)


def check_conditioning(options: PipelineOptions) -> None:
    """Refuse every IC-LoRA combination that cannot mean what the user wants (no file is read)."""
    if options.conditioning not in CONDITIONING_MODES:
        raise PipelineError(
            f"--conditioning {options.conditioning!r} is refused: choose {' or '.join(CONDITIONING_MODES)}."
        )
    if not options.reference_video:
        given = [flag for flag, value in (("--reference-kind", options.reference_kind),
                                          ("--reference-dir", options.reference_dir)) if value is not None]
        if options.reference_downscale != 1:
            given.append("--reference-downscale")
        if given:
            raise PipelineError(
                f"{', '.join(given)} is refused without --conditioning reference_video: references only guide an "
                "IC-LoRA run. Add --conditioning reference_video, or leave out the reference options."
            )
        return
    kinds = reference_kinds()
    if options.kind not in kinds:
        raise PipelineError(f"--reference-kind {options.kind!r} is refused: choose one of {', '.join(kinds)}.")
    if options.kind == REFERENCE_FOLDER and options.reference_dir is None:
        raise PipelineError(
            "--reference-kind folder needs --reference-dir DIR: the folder of your own reference videos, "
            "each named like its clip (clip.mp4 -> clip_reference.mp4 or clip.mp4, in the same sub-folder)."
        )
    if options.kind != REFERENCE_FOLDER and options.reference_dir is not None:
        raise PipelineError(
            f"--reference-dir is refused with --reference-kind {options.kind}: that kind computes the references "
            "from the clips itself. Use --reference-kind folder to train on your own references."
        )
    if options.reference_downscale not in REFERENCE_DOWNSCALES:
        raise PipelineError(
            f"--reference-downscale {options.reference_downscale} is refused: choose one of "
            f"{', '.join(map(str, REFERENCE_DOWNSCALES))}."
        )
    grid = 32 * options.reference_downscale  # the VAE's 32-pixel cells, at 1/N of the clips' size
    if options.width % grid or options.height % grid:
        raise PipelineError(
            f"--resolution {options.width}x{options.height} with --reference-downscale {options.reference_downscale} "
            f"is refused: the references would be encoded at {options.width / options.reference_downscale:g}x"
            f"{options.height / options.reference_downscale:g}, off the VAE's 32-pixel grid. Use a width and height "
            f"that are multiples of {grid}, or a smaller --reference-downscale."
        )
    if options.resume:
        raise PipelineError(
            "--resume continues a run with its own settings, conditioning included; leave out --conditioning "
            "and the reference options."
        )


def check_conditioning_family(options: PipelineOptions, family: str) -> None:
    """LTX-Video 0.9 IC-LoRA trains on references of the target's own size, as the reference trainer does."""
    if options.reference_video and options.reference_downscale != 1 and family != "ltx2":
        raise PipelineError(
            f"--reference-downscale {options.reference_downscale} is refused for this LTX-Video 0.9 model: "
            "downscaled references are an LTX-2 feature; use 1 (the default) or an LTX-2 model."
        )


def requested_stages(options: PipelineOptions) -> tuple[str, ...]:
    """The stages to run in order: `parse_steps`, plus the reference stage before preprocess in an
    IC-LoRA request (its data is made from the references)."""
    names = list(parse_steps(options.steps))
    if "reference" in names and not options.reference_video:
        raise PipelineError(
            "The reference step makes IC-LoRA references: it needs --conditioning reference_video."
        )
    if options.reference_video and "preprocess" in names:
        names.append("reference")
    return tuple(stage for stage in STAGES if stage in names)


def parse_resolution(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match:
        raise PipelineError(f"Resolution {text!r} is not WIDTHxHEIGHT, e.g. 768x512.")
    return int(match.group(1)), int(match.group(2))


def parse_steps(text: str | Iterable[str]) -> tuple[str, ...]:
    """The requested stages in pipeline order; asking for training implies the ComfyUI export."""
    names = [part.strip().lower() for part in (text.split(",") if isinstance(text, str) else text) if part.strip()]
    unknown = [name for name in names if name not in STAGES]
    if unknown or not names:
        raise PipelineError(f"Unknown or no steps {unknown or names}; choose from {', '.join(STAGES)} (comma-separated).")
    if "train" in names:
        names.append("export")
    return tuple(stage for stage in STAGES if stage in names)


def parse_override(text: str) -> tuple[str, Any]:
    """`key.path=value`, the value read as YAML so numbers, booleans and lists keep their type."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
        raise PipelineError(f"Override {text!r} is not key.path=value (e.g. optimization.steps=500).")
    try:
        return key, yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as error:
        raise PipelineError(f"Override {text!r}: the value is not valid YAML ({error}).") from None


def options_from_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """Parse repeated `--set key.path=value` arguments into {key: value}."""
    return dict(parse_override(text) for text in overrides)
