"""What the GUI's buttons do, as plain functions: build a command line and queue it as a job.

The event handlers in the `tab_*` modules only translate widget values into calls of these
functions and their results into widget updates, so everything here can be called (and
tested) without a browser. The stage scripts are always run as subprocesses: the GUI never
imports torch or holds a model.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from ltxtrainer.config import TrainerConfig, load_config, save_config
from ltxtrainer.pipeline import (
    CONFIG_FILE,
    STAGES,
    TEMPLATES,
    check_dimensions,
    check_project_name,
    parse_resolution,
    template_path,
)
from ltxtrainer.ui import model_choice
from ltxtrainer.ui.jobs import Job, JobRunner
from ltxtrainer.ui.runs import comfy_export_path, read_pipeline_status
from ltxtrainer.ui.workspace import AppPaths, clips_folder, forget_caption, safe_join

API_KEY_ENV = "LTXT_CAPTION_API_KEY"  # the variable the GUI's key travels in; never written anywhere
CONFIG_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
# export follows train itself; reference runs before preprocess in every IC-LoRA request (the conditioning choice)
PIPELINE_STEPS = tuple(stage for stage in STAGES if stage not in ("export", "reference"))

# (label key, width, height): the seed GUI's range, 320x320 to 1280x736, multiples of 32.
RESOLUTIONS = (
    ("res.landscape", 768, 512), ("res.landscape", 704, 480), ("res.landscape", 960, 544),
    ("res.landscape", 1024, 576), ("res.landscape", 1280, 736), ("res.landscape", 512, 320),
    ("res.portrait", 512, 768), ("res.portrait", 480, 704), ("res.portrait", 544, 960),
    ("res.portrait", 576, 1024), ("res.portrait", 736, 1280), ("res.portrait", 320, 512),
    ("res.square", 320, 320), ("res.square", 512, 512), ("res.square", 640, 640),
    ("res.square", 768, 768), ("res.square", 1024, 1024),
)
# Every count the VAE accepts (8k+1), up to the seed GUI's longest; the tab marks those the clips allow.
FRAME_COUNTS = tuple(8 * k + 1 for k in range(1, 46))  # 9, 17, 25, ..., 361
ON_SHORT = ("shrink", "skip")  # run_pipeline.py --on-short: what happens to a clip shorter than the frame count


def _script(paths: AppPaths, name: str) -> str:
    return str(paths.scripts / name)


def caption_arguments(captioner: str, api_base_url: str | None, api_model: str | None, api_key: str | None):
    """(extra argv, secret env) for a captioner choice; the key only ever goes into the env."""
    argv: list[str] = []
    secret: dict[str, str] = {}
    if captioner == "api":
        if api_base_url:
            argv += ["--api-base-url", api_base_url.strip()]
        if api_model:
            argv += ["--api-model", api_model.strip()]
        if api_key and api_key.strip():
            argv += ["--api-key-env", API_KEY_ENV]
            secret[API_KEY_ENV] = api_key.strip()
    return argv, secret


def template_model_path(paths: AppPaths, template: str) -> Path | None:
    """The template's model folder inside the GUI's models/ folder, when it is there."""
    data = yaml.safe_load(template_path(template).read_text(encoding="utf-8")) or {}
    source = str((data.get("model") or {}).get("model_source") or "")
    candidate = paths.models / Path(source).name if source else None
    return candidate if candidate is not None and candidate.is_dir() else None


def start_pipeline(
    runner: JobRunner,
    paths: AppPaths,
    *,
    project: str,
    resolution: str,
    frames: int,
    steps: list[str],
    template: str,
    captioner: str,
    api_base_url: str | None = None,
    api_model: str | None = None,
    api_key: str | None = None,
    run_name: str | None = None,
    on_short: str = "shrink",
    train_steps: int | None = None,
    tab: str = "pipeline",
    model: str | None = None,
    audio: str = "auto",
    lora_presets: list[str] | None = None,
    conditioning: str = "none",
    reference_kind: str = "canny",
    reference_dir: str | None = None,
    reference_downscale: int = 1,
) -> Job:
    """Queue scripts/run_pipeline.py for a project; raises ValueError with the reason to show.

    `model` is a folder name under the GUI's models/ (default: the template's own folder). For an
    LTX-2 folder `audio` (auto, with, without) and `lora_presets` (model_choice.LORA_PRESETS; None
    keeps the template's targets) become `--set` overrides; `conditioning` reference_video adds the
    IC-LoRA flags (`model_choice.conditioning_arguments`).

    Each request trains a new run folder (the pipeline names it, or `run_name` when typed); the
    run folder is learnt from the pipeline's first JSON line, so it is not in the job's meta.
    Raises DuplicateJobError when the identical request is already queued or running.
    """
    width, height = parse_resolution(resolution)
    check_dimensions(width, height, int(frames))
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}")
    if on_short not in ON_SHORT:
        raise ValueError(f"short clips: {on_short!r} is not one of {', '.join(ON_SHORT)}")
    chosen = [step for step in PIPELINE_STEPS if step in steps]
    if not chosen:
        raise ValueError("no steps chosen")
    check_project_name(project)
    argv = [
        sys.executable, _script(paths, "run_pipeline.py"), project,
        "--resolution", f"{width}x{height}", "--frames", str(int(frames)), "--steps", ",".join(chosen),
        "--config-template", template, "--captioner", captioner, "--on-short", on_short,
        "--train-date-dir", str(paths.train_date), "--work-dir", str(paths.datasets), "--outputs-dir", str(paths.outputs),
    ]
    if train_steps:  # 0 or empty: the template's own number of steps
        argv += ["--set", f"optimization.steps={int(train_steps)}"]
    meta = {"project": project, "tab": tab}
    run_name = (run_name or "").strip()
    if run_name:
        argv += ["--run-name", run_name]
        meta["run_dir"] = str(safe_join(paths.outputs, run_name))
    model_path = paths.models / model if model else template_model_path(paths, template)
    if model_path is not None:
        argv += ["--model-path", str(model_path)]
    family = model_choice.model_family(paths, model) if model else model_choice.template_family(template)
    if family == model_choice.LTX2:
        for override in model_choice.ltx2_overrides(audio, lora_presets):
            argv += ["--set", override]
    argv += model_choice.conditioning_arguments(conditioning, reference_kind, reference_dir, reference_downscale, family)
    extra, secret = caption_arguments(captioner, api_base_url, api_model, api_key)
    title = f"{project} {width}x{height}x{int(frames)} ({'+'.join(chosen)})" + (f" {run_name}" if run_name else "")
    meta["title"] = {"key": "title.pipeline", "project": project, "size": f"{width}x{height}x{int(frames)}",
                     "stages": chosen, "run": run_name}
    return runner.submit("pipeline", title, argv + extra, cwd=paths.root, meta=meta, secret_env=secret)


def start_training(runner: JobRunner, paths: AppPaths, config_file: Path, resume: bool = False,
                   tab: str = "advanced") -> Job:
    """Queue scripts/train.py for a config already checked by the schema."""
    config = load_config(config_file)
    run_dir = Path(config.output_dir)
    run_dir = run_dir if run_dir.is_absolute() else paths.root / run_dir
    argv = [sys.executable, _script(paths, "train.py"), str(config_file)] + (["--resume"] if resume else [])
    title = f"{'resume' if resume else 'train'} {run_dir.name}"
    meta = {"run_dir": str(run_dir), "tab": tab,
            "title": {"key": "title.resume" if resume else "title.train", "run": run_dir.name}}
    return runner.submit("train", title, argv, cwd=paths.root, meta=meta)


def resume_run(runner: JobRunner, paths: AppPaths, run_name: str, tab: str = "runs") -> Job:
    """Continue a stopped run from its latest checkpoint, with its own config and data.

    A run the pipeline made is continued by the pipeline (`--run-name NAME --resume`, train
    only), so the ComfyUI export follows; a run trained from the Advanced tab by train.py alone.
    """
    run_dir = safe_join(paths.outputs, run_name)
    status = read_pipeline_status(run_dir)
    if not status.get("project"):
        return start_training(runner, paths, run_dir / CONFIG_FILE, resume=True, tab=tab)
    argv = [
        sys.executable, _script(paths, "run_pipeline.py"), str(status["project"]),
        "--run-name", str(status.get("run_name") or run_dir.name), "--resume",
        "--train-date-dir", str(paths.train_date), "--work-dir", str(paths.datasets), "--outputs-dir", str(paths.outputs),
    ]
    meta = {"project": status["project"], "run_dir": str(run_dir), "tab": tab,
            "title": {"key": "title.resume", "run": run_dir.name}}
    return runner.submit("pipeline", f"resume {run_dir.name}", argv, cwd=paths.root, meta=meta)


def config_file_for(paths: AppPaths, name: str) -> Path:
    """configs/<name>.yaml for a plain file name (no folders), refusing anything else."""
    name = name.strip()
    if name.lower().endswith((".yaml", ".yml")):
        name = name.rsplit(".", 1)[0]
    if not CONFIG_NAME.fullmatch(name) or name.startswith("."):
        raise ValueError(name)
    return safe_join(paths.configs, f"{name}.yaml")


def list_configs(paths: AppPaths) -> list[str]:
    return sorted(p.name for p in paths.configs.glob("*.yaml")) if paths.configs.is_dir() else []


def save_named_config(paths: AppPaths, config: TrainerConfig, name: str) -> Path:
    return save_config(config, config_file_for(paths, name))


def recaption_clip(
    runner: JobRunner,
    paths: AppPaths,
    project: str,
    clip: str,
    captioner: str,
    api_base_url: str | None = None,
    api_model: str | None = None,
    api_key: str | None = None,
    tab: str = "dataset",
) -> Job:
    """Forget one clip's caption and queue the captioning stage, which redoes only missing ones."""
    forget_caption(paths, project, clip)
    folder = clips_folder(paths, project)
    extra, secret = caption_arguments(captioner, api_base_url, api_model, api_key)
    argv = [sys.executable, _script(paths, "caption_videos.py"), str(folder), "--backend", captioner,
            "--trigger-word", project, *extra]
    return runner.submit("caption", f"caption {project}/{clip}", argv, cwd=paths.root,
                         meta={"project": project, "clip": clip, "tab": tab,
                               "title": {"key": "title.caption", "project": project, "clip": clip}},
                         secret_env=secret)


def export_lora(runner: JobRunner, paths: AppPaths, lora_relative: str, tab: str = "export") -> Job:
    """Queue the ComfyUI conversion of a LoRA under outputs/ into outputs/comfyui/."""
    lora = safe_join(paths.outputs, lora_relative)
    if not lora.is_file():
        raise FileNotFoundError(str(lora))
    output = comfy_export_path(paths.comfyui_exports, lora.relative_to(paths.outputs).as_posix())
    argv = [sys.executable, _script(paths, "convert_to_comfyui.py"), str(lora), "--output", str(output)]
    return runner.submit("export", f"export {lora_relative}", argv, cwd=paths.root,
                         meta={"output": str(output), "tab": tab, "title": {"key": "title.export", "lora": lora_relative}})


def environment_report(paths: AppPaths, timeout_s: float = 180) -> dict:
    """scripts/check_env.py --json, run as a subprocess (it imports torch; the GUI does not)."""
    result = subprocess.run(
        [sys.executable, _script(paths, "check_env.py"), "--json", "--models-dir", str(paths.models),
         "--outputs-dir", str(paths.outputs)],
        cwd=paths.root, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout_s,
    )
    lines = [line for line in result.stdout.splitlines() if line.strip().startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError((result.stderr or result.stdout).strip()[-500:] or f"exit code {result.returncode}")
    return json.loads(lines[-1])
