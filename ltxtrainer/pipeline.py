"""One-click pipeline: split -> caption -> preprocess -> train -> ComfyUI export, one subprocess per stage.

Each stage runs as its own script (`scripts/<stage>.py`) in a child process, so a crash, a CUDA
out-of-memory or a leaked model in one stage can never poison the next, and the GUI can show and
stop exactly what a person would run by hand. The children's JSON lines are passed through to our
stdout (with a "stage" field added where a line lacks one) and their stderr lines to our stderr
prefixed with `[stage]`.

Folder layout of a project whose trigger word is T, at resolution WxHxF:

    train_date/T/                       the raw videos (the seed GUI's project folder)
    datasets/T/scenes/                  one clip per scene, captions.json and a .txt per clip
    datasets/T/scenes/.precomputed/     latents and text embeddings (the reference trainer layout)
    outputs/T_WxHxF/                    the run: training_config.yaml (the effective config),
                                        pipeline_status.json, metrics.jsonl, checkpoints/,
                                        samples/, lora_weights.safetensors, T_WxHxF_comfy.safetensors

The clips live outside `train_date/` so every folder there stays a project, and they do not
depend on the resolution, so trying a second resolution re-encodes latents but never re-splits
or re-captions. `pipeline_status.json` records each stage's state, timestamps, message,
artefacts and a fingerprint of its inputs; a stage whose fingerprint has not changed since it
last finished is skipped without even starting its process, and a stage that does run still
skips whatever its own records say is done.
"""

from __future__ import annotations

import codecs
import datetime as dt
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ltxtrainer.atomic import write_text_atomic
from ltxtrainer.captioning.backends import BACKENDS, DEFAULT_API_KEY_ENV
from ltxtrainer.captioning.base import TRIGGER_WORD_PATTERN
from ltxtrainer.config import (
    ConfigError,
    TrainerConfig,
    config_from_dict,
    config_to_yaml,
    load_config,
    save_config,
)
from ltxtrainer.progress import emit, say

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS_DIR = REPO_ROOT / "scripts"
CONFIGS_DIR = REPO_ROOT / "configs"

STAGES = ("split", "caption", "preprocess", "train", "export")
STAGE_SCRIPTS = {
    "split": "split_scenes.py",
    "caption": "caption_videos.py",
    "preprocess": "preprocess_dataset.py",
    "train": "train.py",
    "export": "convert_to_comfyui.py",
}
TEMPLATES = {
    "13b": "ltx_13b_lora_template.yaml",
    "13b-int8": "ltx_13b_lora_int8-quanto_template.yaml",
    "2b": "ltx_2b_lora_template.yaml",
    "tiny": "tiny_demo.yaml",
}
CAPTIONERS = BACKENDS
STATUS_FILE = "pipeline_status.json"
CONFIG_FILE = "training_config.yaml"  # the name scripts/train.py also writes into its output_dir
LORA_FILE = "lora_weights.safetensors"
VALIDATION_PROMPTS_FROM_CAPTIONS = 2
MAX_PROJECT_NAME = 64
# Folder names Windows refuses whatever the extension; a project must open on every OS.
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
# Fields the pipeline owns: an override of them would silently train somewhere else.
_PIPELINE_FIELDS = {
    "output_dir": "--outputs-dir",
    "data.preprocessed_data_root": "--work-dir",
    "validation.video_dims": "--resolution and --frames",
}
# A run may be continued (--resume) when only these parts of its config changed.
_RESUMABLE_CHANGES = ("optimization.steps", "validation.", "checkpoints.")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 130


class PipelineError(ValueError):
    """A request the pipeline refuses before any stage runs; the message says why and what to do."""


# --- the request ---------------------------------------------------------------------------------


@dataclass
class PipelineOptions:
    """Everything one pipeline run needs; defaults give the repository's standard folders."""

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


@dataclass(frozen=True)
class ProjectPaths:
    raw_dir: Path
    scenes_dir: Path
    precomputed_dir: Path
    run_dir: Path
    config_file: Path
    status_file: Path
    lora_file: Path
    comfy_file: Path


def check_project_name(name: str) -> str:
    """Refuse a trigger word that is unsafe as a folder name or as the first word of a caption.

    The name becomes `train_date/<name>/`, `datasets/<name>/` and `outputs/<name>_WxHxF/`, and
    starts every caption, so it must mean the same to every tokenizer, file system and shell.
    """
    problem = None
    if not name:
        problem = "it is empty"
    elif name in (".", "..") or ".." in name:
        problem = "'..' would point outside the project folders"
    elif name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        problem = "an absolute path or drive letter would point outside the project folders"
    elif not TRIGGER_WORD_PATTERN.fullmatch(name):
        bad = sorted({char for char in name if not TRIGGER_WORD_PATTERN.fullmatch(char)})
        problem = "it contains " + " ".join(repr(char) for char in bad)
    elif name.startswith("-"):
        problem = "a leading '-' reads as a command-line option"
    elif len(name) > MAX_PROJECT_NAME:
        problem = f"it is longer than {MAX_PROJECT_NAME} characters"
    elif name.lower() in _WINDOWS_RESERVED:
        problem = "Windows reserves that name for a device"
    if problem:
        raise PipelineError(
            f"Trigger word {name!r} is refused: {problem}. It becomes a folder name and the first word "
            "of every caption, so it may contain only ASCII letters, digits, '_' and '-' (spaces, "
            "Chinese characters, shell and path characters are unsafe there). Use a short made-up "
            "word such as 'sks_style' or 'mydog2'."
        )
    return name


def check_dimensions(width: int, height: int, frames: int) -> None:
    """The LTX VAE compresses 32x in space and 8x in time after the first frame."""
    if width <= 0 or height <= 0 or width % 32 or height % 32:
        raise PipelineError(f"Resolution {width}x{height} is refused: width and height must be positive multiples of 32.")
    if frames < 1 or (frames - 1) % 8:
        raise PipelineError(f"Frame count {frames} is refused: it must be 8k+1 (9, 17, 25, 49, 97, 121, ...).")


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


def project_paths(options: PipelineOptions) -> ProjectPaths:
    """Where every stage of this project reads and writes (see the module docstring)."""
    name = check_project_name(options.project)
    bucket = f"{options.width}x{options.height}x{options.frames}"
    raw_dir = Path(options.train_date_dir) / name
    scenes_dir = Path(options.work_dir) / name / "scenes"
    run_dir = Path(options.outputs_dir) / f"{name}_{bucket}"
    for root, path in ((options.train_date_dir, raw_dir), (options.work_dir, scenes_dir), (options.outputs_dir, run_dir)):
        if not path.resolve().is_relative_to(Path(root).resolve()):  # symlinks included
            raise PipelineError(f"Project {name!r} would leave {root} ({path.resolve()}); refused.")
    return ProjectPaths(
        raw_dir=raw_dir,
        scenes_dir=scenes_dir,
        precomputed_dir=scenes_dir / ".precomputed",
        run_dir=run_dir,
        config_file=run_dir / CONFIG_FILE,
        status_file=run_dir / STATUS_FILE,
        lora_file=run_dir / LORA_FILE,
        comfy_file=run_dir / f"{name}_{bucket}_comfy.safetensors",
    )


# --- the effective training config ---------------------------------------------------------------


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


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _first_captions(scenes_dir: Path, count: int) -> list[str]:
    path = scenes_dir / "captions.json"
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        return [str(entry["caption"]) for entry in entries[:count]]
    except (OSError, ValueError, TypeError, KeyError):
        return []


def build_training_config(options: PipelineOptions, paths: ProjectPaths) -> TrainerConfig:
    """Template + the caller's overrides + the paths and sizes the pipeline owns, validated.

    Validation prompts: the template's (with `{trigger}` replaced) or, when it has none, the
    first captions of the dataset, so the samples show what the LoRA learned from real captions.
    """
    source = template_path(options.config_template)
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"Cannot read the config template {source}: {error}") from None
    for key, value in options.overrides.items():
        if key in _PIPELINE_FIELDS:
            raise PipelineError(f"--set {key}=... is refused: the pipeline sets {key} from {_PIPELINE_FIELDS[key]}.")
        _set_dotted(data, key, value)
    model = data.setdefault("model", {})
    if options.model_path is not None:
        model["model_source"] = str(Path(options.model_path).resolve())
    else:
        model["model_source"] = _resolve_model_source(str(model.get("model_source") or "models/LTX-Video-0.9.7-diffusers"))
    data.setdefault("data", {})["preprocessed_data_root"] = str(paths.scenes_dir.resolve())
    data["output_dir"] = str(paths.run_dir.resolve())
    validation = data.setdefault("validation", {})
    validation["video_dims"] = [options.width, options.height, options.frames]
    prompts = [str(prompt).replace("{trigger}", options.project) for prompt in validation.get("prompts") or []]
    validation["prompts"] = prompts or _first_captions(paths.scenes_dir, VALIDATION_PROMPTS_FROM_CAPTIONS)
    return config_from_dict(data)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): data}


def changed_fields(old: TrainerConfig, new: TrainerConfig) -> list[str]:
    before, after = _flatten(old.model_dump(mode="json")), _flatten(new.model_dump(mode="json"))
    return sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))


# --- fingerprints and artefacts ------------------------------------------------------------------


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:32]


def _videos(folder: Path) -> list[Path]:
    from ltxtrainer.media import find_videos

    return find_videos(folder) if folder.is_dir() else []


def _file_stamps(folder: Path, files: list[Path]) -> list[tuple[str, int, int]]:
    stamps = []
    for path in files:
        stat = path.stat()
        stamps.append((path.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns))
    return stamps


def _file_hash(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _caption_texts(clips: list[Path]) -> list[str | None]:
    return [_file_hash(clip.with_suffix(".txt")) for clip in clips]


def _latest_checkpoint_step(run_dir: Path) -> int | None:
    from ltxtrainer.training.checkpoints import list_checkpoints

    found = list_checkpoints(run_dir)
    return found[-1][0] if found else None


def stage_artefacts(stage: str, paths: ProjectPaths) -> dict[str, Any]:
    """What a finished stage left on disk, for the status file and the GUI's links."""
    if stage == "split":
        return {"scenes_dir": str(paths.scenes_dir), "clips": len(_videos(paths.scenes_dir))}
    if stage == "caption":
        return {
            "captions_file": str(paths.scenes_dir / "captions.json"),
            "captions": len(_first_captions(paths.scenes_dir, 10**9)),
        }
    if stage == "preprocess":
        latents = paths.precomputed_dir / "latents"
        return {
            "precomputed_dir": str(paths.precomputed_dir),
            "samples": sum(1 for _ in latents.rglob("*.pt")) if latents.is_dir() else 0,
        }
    if stage == "train":
        from ltxtrainer.training.checkpoints import latest_checkpoint

        checkpoint = latest_checkpoint(paths.run_dir)
        samples = sorted(str(path) for path in (paths.run_dir / "samples").rglob("*.mp4"))
        return {
            "run_dir": str(paths.run_dir),
            "config": str(paths.config_file),
            "lora": str(paths.lora_file) if paths.lora_file.is_file() else None,
            "metrics": str(paths.run_dir / "metrics.jsonl"),
            "checkpoint": str(checkpoint) if checkpoint else None,
            "samples": samples,
        }
    return {"comfyui_lora": str(paths.comfy_file) if paths.comfy_file.is_file() else None}


def _outputs_present(stage: str, paths: ProjectPaths) -> bool:
    """A stage counts as done only while what it made is still there."""
    if stage == "split":
        return bool(_videos(paths.scenes_dir))
    if stage == "caption":
        clips = _videos(paths.scenes_dir)
        return (paths.scenes_dir / "captions.json").is_file() and all(c.with_suffix(".txt").is_file() for c in clips)
    if stage == "preprocess":
        return (paths.precomputed_dir / "manifest.json").is_file()
    if stage == "train":
        return paths.lora_file.is_file() and paths.config_file.is_file()
    return paths.comfy_file.is_file()


# --- running one child process ---------------------------------------------------------------------


@dataclass
class StageResult:
    returncode: int
    error_event: str | None
    stderr_lines: list[str]


class _Redactor:
    """Replaces the API key wherever a child might echo it, before anything is printed or stored."""

    def __init__(self, secret: str | None):
        self.secret = secret if secret and len(secret) >= 4 else None

    def __call__(self, text: str) -> str:
        return text.replace(self.secret, "***") if self.secret else text


_print_lock = threading.Lock()


def _forward_stdout(stream, stage: str, redact: _Redactor, errors: list[str]) -> None:
    """Pass JSON lines through (tagging them with the stage); anything else goes to stderr."""
    for raw in iter(stream.readline, b""):
        line = redact(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        with _print_lock:
            if isinstance(record, dict) and "event" in record:
                record.setdefault("stage", stage)
                if record["event"] == "error" and record.get("message"):
                    errors.append(str(record["message"]))
                sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
                sys.stdout.flush()
            else:
                sys.stderr.write(f"[{stage}] {line}\n")
                sys.stderr.flush()


_LINE = re.compile(r"([^\r\n]*)(\r\n|\n|\r)")


def _forward_stderr(stream, stage: str, redact: _Redactor, tail: deque[str]) -> None:
    """Prefix each line; progress-bar redraws (carriage returns) stay redraws and stay out of `tail`."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending, after_redraw = "", False
    while True:
        chunk = stream.read1(65536)
        pending += decoder.decode(chunk, final=not chunk)
        consumed = 0
        with _print_lock:
            for match in _LINE.finditer(pending):
                text, end = redact(match.group(1)), match.group(2)
                if end == "\r" and chunk and match.end() == len(pending):
                    break  # maybe the first half of a Windows "\r\n": wait for the next chunk
                consumed = match.end()
                if end == "\r":  # tqdm writes "\r<bar>" again and again: each piece is a redraw
                    if text:
                        sys.stderr.write(f"\r[{stage}] {text}")
                    after_redraw = True
                    continue
                sys.stderr.write(("\r" if after_redraw else "") + f"[{stage}] {text}\n")
                if not after_redraw:  # a bar's final state is not a message
                    tail.append(text)
                after_redraw = False
            if not chunk and pending[consumed:]:
                sys.stderr.write(f"[{stage}] {redact(pending[consumed:])}\n")
                tail.append(redact(pending[consumed:]))
            sys.stderr.flush()
        pending = pending[consumed:]
        if not chunk:
            return


def error_paragraph(lines: list[str]) -> str:
    """The one readable paragraph at the end of a failed stage's stderr, never a traceback wall."""
    lines = [line.rstrip() for line in lines]
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("Traceback (most recent call last)"):
            after = [line for line in lines[index + 1 :] if line.strip() and not line.startswith((" ", "\t"))]
            if after:
                return after[-1].strip()
    while lines and not lines[-1].strip():
        lines.pop()
    paragraph: list[str] = []
    for line in reversed(lines):
        if not line.strip():
            break
        indented = line.startswith((" ", "\t"))
        if not indented and paragraph and not paragraph[0].startswith((" ", "\t")):
            break
        paragraph.insert(0, line)
    return "\n".join(paragraph[-20:]).strip()


class _StopForwarder:
    """Ctrl+C, the GUI's Stop or SIGTERM stops the pipeline: the running stage stops (the trainer
    saves a checkpoint and exits 130) and no further stage starts.

    Stages stay in our process group, so a terminal's Ctrl+C, the GUI's group-wide SIGINT /
    CTRL_BREAK_EVENT and its final SIGKILL reach them directly; forwarding those as well would
    deliver them twice, and the trainer takes a second signal as "kill now". SIGTERM is forwarded
    on POSIX because it usually targets one process (`kill PID`, `docker stop`); Windows has no
    catchable SIGTERM from outside.
    """

    def __init__(self) -> None:
        self.requested = False
        self.child: subprocess.Popen | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        self.requested = True
        child = self.child
        if signum == getattr(signal, "SIGTERM", None) and os.name != "nt" and child is not None and child.poll() is None:
            child.send_signal(signum)

    def __enter__(self) -> _StopForwarder:
        if threading.current_thread() is threading.main_thread():  # signals can only be caught there
            for name in ("SIGINT", "SIGTERM", "SIGBREAK"):
                signum = getattr(signal, name, None)
                if signum is not None:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def run_stage_process(
    stage: str, arguments: list[str], env: dict[str, str], redact: _Redactor, stop: _StopForwarder
) -> StageResult:
    """Run `scripts/<stage script> arguments...` with our interpreter, streaming its output through."""
    command = [sys.executable, str(SCRIPTS_DIR / STAGE_SCRIPTS[stage]), *arguments]
    child = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO_ROOT
    )
    stop.child = child
    errors: list[str] = []
    tail: deque[str] = deque(maxlen=200)
    readers = [
        threading.Thread(target=_forward_stdout, args=(child.stdout, stage, redact, errors), daemon=True),
        threading.Thread(target=_forward_stderr, args=(child.stderr, stage, redact, tail), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        returncode = child.wait()
    finally:
        stop.child = None
    for reader in readers:
        reader.join()
    return StageResult(returncode, errors[-1] if errors else None, list(tail))


def _child_environment(options: PipelineOptions) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONUTF8="1", PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1")
    if options.api_key:
        env[options.api_key_env] = options.api_key
    return env


# --- the stages ------------------------------------------------------------------------------------


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


@dataclass
class _Plan:
    """One stage as the pipeline will run it: its arguments, or why it need not run."""

    arguments: list[str] | None = None
    fingerprint: str | None = None
    refusal: str | None = None
    config: TrainerConfig | None = None


def _split_plan(options: PipelineOptions, paths: ProjectPaths) -> _Plan:
    if not paths.raw_dir.is_dir():
        return _Plan(refusal=f"No project folder {paths.raw_dir}: create it and put the project's videos in it.")
    arguments = [str(paths.raw_dir), "--output-dir", str(paths.scenes_dir)]
    settings = {
        "--detector": options.detector, "--threshold": options.threshold,
        "--min-scene-len": options.min_scene_len, "--max-scene-len": options.max_scene_len,
    }
    for flag, value in settings.items():
        if value is not None:
            arguments += [flag, str(value)]
    videos = _videos(paths.raw_dir)
    return _Plan(arguments, _digest(_file_stamps(paths.raw_dir, videos), settings))


def _caption_plan(options: PipelineOptions, paths: ProjectPaths) -> _Plan:
    if options.captioner not in CAPTIONERS:
        return _Plan(refusal=f"Unknown captioner {options.captioner!r}; choose one of {', '.join(CAPTIONERS)}.")
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
    clips = _videos(paths.scenes_dir)
    settings = [options.captioner, options.project, options.api_base_url, options.api_model, str(options.captions_from)]
    return _Plan(arguments, _digest(_file_stamps(paths.scenes_dir, clips), settings))


def _preprocess_plan(options: PipelineOptions, paths: ProjectPaths, config: TrainerConfig) -> _Plan:
    bucket = f"{options.width}x{options.height}x{options.frames}"
    model = config.model.model_source
    arguments = [str(paths.scenes_dir), "--resolution-buckets", bucket, "--model-path", model]
    clips = _videos(paths.scenes_dir)
    inputs = [_file_stamps(paths.scenes_dir, clips), _caption_texts(clips),
              _file_hash(paths.scenes_dir / "captions.json"), bucket, model]
    return _Plan(arguments, _digest(*inputs))


def _train_plan(paths: ProjectPaths, config: TrainerConfig, fingerprint: str, previous_fingerprint: str | None) -> _Plan:
    """Resume a run of the same settings; never mix checkpoints of different settings in one folder."""
    arguments = [str(paths.config_file)]
    latest_step = _latest_checkpoint_step(paths.run_dir)
    if latest_step is None:
        return _Plan(arguments, fingerprint, config=config)
    try:
        previous = load_config(paths.config_file)
    except ConfigError:
        previous = None
    changes = changed_fields(previous, config) if previous is not None else ["(unreadable training_config.yaml)"]
    blocking = [key for key in changes if not key.startswith(_RESUMABLE_CHANGES)]
    if blocking:
        return _Plan(refusal=(
            f"{paths.run_dir} holds checkpoints of a run with other settings (changed: {', '.join(blocking)}). "
            "Move or delete that folder to start this run, or undo the change to continue it."
        ))
    if latest_step >= config.optimization.steps and fingerprint != previous_fingerprint:
        return _Plan(refusal=(
            f"{paths.run_dir} already holds a finished run (step {latest_step}) made from other data or settings. "
            "Move or delete that folder to train again, or raise optimization.steps to continue training it."
        ))
    return _Plan([*arguments, "--resume"], fingerprint, config=config)


def _plan_stage(stage: str, options: PipelineOptions, paths: ProjectPaths, config: TrainerConfig) -> _Plan:
    """Arguments and input fingerprint of one stage, cheaply: nothing heavy is imported here."""
    if stage == "split":
        return _split_plan(options, paths)
    if stage == "caption":
        return _caption_plan(options, paths)
    if stage == "preprocess":
        return _preprocess_plan(options, paths, config)
    if stage == "train":
        try:
            config = build_training_config(options, paths)  # again, now with the dataset's captions
        except (PipelineError, ConfigError) as error:
            return _Plan(refusal=str(error))
        manifest = _file_hash(paths.precomputed_dir / "manifest.json")
        return _Plan([str(paths.config_file)], _digest(config_to_yaml(config), manifest), config=config)
    if not paths.lora_file.is_file():
        return _Plan(refusal=f"No trained LoRA at {paths.lora_file}; run the train step first.")
    arguments = [str(paths.lora_file), "--output", str(paths.comfy_file)]
    return _Plan(arguments, _digest(_file_stamps(paths.run_dir, [paths.lora_file])))


class _Status:
    """pipeline_status.json, rewritten atomically at every change so the GUI never reads half a file."""

    def __init__(self, options: PipelineOptions, paths: ProjectPaths, requested: tuple[str, ...]):
        self.path = paths.status_file
        self.paths = paths
        self.previous = self._load()
        previous_stages = self.previous.get("stages", {})
        self.data: dict[str, Any] = {
            "project": options.project,
            "resolution": f"{options.width}x{options.height}x{options.frames}",
            "config_template": options.config_template,
            "captioner": options.captioner,
            "requested": list(requested),
            "state": "running",
            "started_at": _now(),
            "finished_at": None,
            "error": None,
            "paths": {
                "raw_dir": str(paths.raw_dir), "scenes_dir": str(paths.scenes_dir),
                "precomputed_dir": str(paths.precomputed_dir), "run_dir": str(paths.run_dir),
                "config": str(paths.config_file),
            },
            "stages": {},
        }
        for stage in STAGES:
            old = previous_stages.get(stage, {})
            entry = {"status": "pending", "started_at": None, "finished_at": None, "message": "", "artefacts": {}}
            if stage not in requested:
                entry.update(status="skipped", message="not requested")
                for kept in ("fingerprint", "done_at", "artefacts"):  # a later run still knows it was done
                    if kept in old:
                        entry[kept] = old[kept]
            self.data["stages"][stage] = entry
        self.save()

    def _load(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def previous_done(self, stage: str) -> dict | None:
        """The last record of `stage` if it finished (done, or skipped as already done)."""
        old = self.previous.get("stages", {}).get(stage, {})
        return old if old.get("fingerprint") and old.get("done_at") else None

    def update(self, stage: str, **fields: Any) -> None:
        self.data["stages"][stage].update(fields)
        self.save()
        emit("pipeline", stage=stage, status=self.data["stages"][stage]["status"],
             message=self.data["stages"][stage]["message"])

    def finish(self, state: str, error: dict | None = None) -> None:
        self.data.update(state=state, finished_at=_now(), error=error)
        self.save()

    def save(self) -> None:
        write_text_atomic(self.path, json.dumps(self.data, ensure_ascii=False, indent=2) + "\n")


def _success_message(result: StageResult) -> str:
    lines = [line.strip() for line in result.stderr_lines if line.strip()]
    return lines[-1] if lines else "done"


def run_pipeline(options: PipelineOptions) -> int:
    """Run the requested stages in order; returns 0, 1 (a stage failed), 2 (refused) or 130 (stopped)."""
    try:
        check_dimensions(options.width, options.height, options.frames)
        requested = parse_steps(options.steps)
        paths = project_paths(options)
        config = build_training_config(options, paths)  # bad overrides fail now, not after captioning
    except (PipelineError, ConfigError) as error:
        return refuse(str(error))
    redact = _Redactor(options.api_key or os.environ.get(options.api_key_env))
    env = _child_environment(options)
    status = _Status(options, paths, requested)
    say(f"Pipeline for {options.project!r}: {', '.join(requested)}; run folder {paths.run_dir}")
    emit("pipeline_start", project=options.project, run_name=paths.run_dir.name, run_dir=str(paths.run_dir),
         status_file=str(paths.status_file), stages=list(requested), resume=False)

    with _StopForwarder() as stop:
        for stage in requested:
            started = _now()
            if stop.requested:
                return _fail(status, stage, "stopped by the user before this stage started", EXIT_STOPPED)
            plan = _plan_stage(stage, options, paths, config)
            config = plan.config or config
            old = status.previous_done(stage)
            if not plan.refusal and old and old["fingerprint"] == plan.fingerprint and _outputs_present(stage, paths):
                status.update(
                    stage, status="skipped", started_at=started, finished_at=_now(),
                    message=f"already done at {old['done_at']}; its inputs have not changed",
                    artefacts=old.get("artefacts", {}), fingerprint=plan.fingerprint, done_at=old["done_at"],
                )
                say(f"[{stage}] skipped: already done at {old['done_at']}")
                continue
            if stage == "train" and not plan.refusal:
                plan = _train_plan(paths, config, plan.fingerprint, old and old["fingerprint"])
            if plan.refusal:
                status.update(stage, status="failed", started_at=started, finished_at=_now(), message=plan.refusal)
                return _fail(status, stage, plan.refusal, EXIT_FAILED)

            if stage == "train":
                save_config(config, paths.config_file)
            status.update(stage, status="running", started_at=started, message=f"running {STAGE_SCRIPTS[stage]}")
            result = run_stage_process(stage, plan.arguments, env, redact, stop)
            if result.returncode != 0:
                message = redact(result.error_event or error_paragraph(result.stderr_lines)
                                 or f"{STAGE_SCRIPTS[stage]} exited with code {result.returncode}")
                stopped = stop.requested or result.returncode == EXIT_STOPPED
                if stopped:
                    message = f"stopped by the user; run the pipeline again to continue. {message}"
                status.update(stage, status="failed", finished_at=_now(), message=message,
                              artefacts=stage_artefacts(stage, paths))
                return _fail(status, stage, message, EXIT_STOPPED if stopped else EXIT_FAILED)
            finished = _now()
            status.update(stage, status="done", finished_at=finished, message=_success_message(result),
                          artefacts=stage_artefacts(stage, paths), fingerprint=plan.fingerprint, done_at=finished)

    status.finish("done")
    for stage in requested:
        for key, value in status.data["stages"][stage]["artefacts"].items():
            if value and key in ("scenes_dir", "captions_file", "precomputed_dir", "config", "lora", "comfyui_lora"):
                say(f"  {key:15} {value}")
    say(f"Pipeline finished; status in {paths.status_file}")
    emit("summary", stage="pipeline", status="done", status_file=str(paths.status_file), run_dir=str(paths.run_dir))
    _end("finished", paths, None, "")
    return EXIT_OK


def _end(state: str, paths: ProjectPaths | None, stage: str | None, message: str) -> None:
    """The last JSON line of every pipeline process: how it ended and where its results are."""
    from ltxtrainer.training.checkpoints import latest_checkpoint

    run_dir = paths.run_dir if paths else None
    checkpoint = latest_checkpoint(run_dir) if run_dir and run_dir.is_dir() else None
    emit("pipeline_end", status=state, run_name=run_dir.name if run_dir else None,
         run_dir=str(run_dir) if run_dir else None,
         lora=str(paths.lora_file) if paths and paths.lora_file.is_file() else None,
         comfyui_lora=str(paths.comfy_file) if paths and paths.comfy_file.is_file() else None,
         checkpoint=str(checkpoint) if checkpoint else None, stage=stage, message=message)


def refuse(message: str) -> int:
    """A request refused before any stage starts: its reason on stderr and as the pipeline's end."""
    say(message)
    emit("error", stage="pipeline", message=message)
    _end("refused", None, None, message)
    return EXIT_USAGE


def _fail(status: _Status, stage: str, message: str, code: int) -> int:
    status.finish("failed" if code != EXIT_STOPPED else "stopped", {"stage": stage, "message": message})
    say(f"Pipeline stopped at stage '{stage}': {message}")
    emit("error", stage=stage, message=message, status_file=str(status.path))
    _end("stopped" if code == EXIT_STOPPED else "failed", status.paths, stage, message)
    return code


def options_from_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """Parse repeated `--set key.path=value` arguments into {key: value}."""
    return dict(parse_override(text) for text in overrides)

