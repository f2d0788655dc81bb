"""The memory line next to Start: a template's estimate against the detected card, in the user's language.

The card comes from nvidia-smi (`env_check.query_gpus`) and the estimate from `ltxtrainer.memory`,
both without torch, so the GUI process stays free of torch and peft. The line says whether the
run fits, is tight or will not fit, and if not, the smallest change of settings that makes it fit.
The same numbers choose the template a page starts with: the biggest model that fits the card.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ltxtrainer import env_check, memory
from ltxtrainer.config import TrainerConfig, load_config
from ltxtrainer.pipeline import PipelineError, check_dimensions, parse_resolution, template_path
from ltxtrainer.ui import model_choice
from ltxtrainer.ui.i18n import t
from ltxtrainer.ui.workspace import AppPaths

GIB = 1024**3  # cards are sold and listed (nvidia-smi, Task Manager) in GiB, written "GB"
# Templates from the biggest model (or the most memory) down, per family: the page starts with the
# first one that fits the card; for LTX-2 the last is the one to try when none is estimated to fit.
TEMPLATE_PREFERENCE = {"ltx_video": ("13b", "13b-int8", "2b", "tiny"), "ltx2": ("ltx2-80gb", "ltx2-32gb", "ltx2")}
CPU_TEMPLATE = "tiny"  # without a GPU only the tiny demo model trains in useful time
SUGGESTION_SIZE = (768, 512, 49)  # the pipeline tab's default size
# Models up to this size train on a CPU in minutes (the tiny demo has 0.1 M parameters); the 2B
# model needs hours per step there.
CPU_PARAMETER_LIMIT = 50_000_000


@dataclass(frozen=True)
class Card:
    name: str
    total_bytes: int


@functools.cache
def detect_card() -> Card | None:
    """The first NVIDIA GPU (the one training uses), once per GUI process; None without one."""
    gpus = [gpu for gpu in env_check.query_gpus() if gpu.total_memory_gb]
    if not gpus:
        return None
    return Card(gpus[0].name, int(gpus[0].total_memory_gb * GIB))


def _variant_from_name(name: str) -> str | None:
    """The built-in shape a model folder's name points to, when the folder itself is not there."""
    lowered = name.lower()
    if model_choice.family_from_name(name) == model_choice.LTX2:
        if "tiny" in lowered:
            return "tiny-ltx2"
        return "ltx2.3" if re.search(r"ltx-?2[._-]3", lowered) else "ltx2"
    if "tiny" in lowered:
        return "tiny"
    if "13b" in lowered or re.search(r"0\.9\.[78]", lowered):
        return "13b"
    if "2b" in lowered or re.search(r"0\.9\.[0-6]", lowered):
        return "2b"
    return None


def model_shape(paths: AppPaths, model_source: str) -> dict | str | None:
    """The transformer's shape for a config's model_source: the folder's config.json (as given, or
    by name under the GUI's models/), else the built-in shape its name names; None when unknown."""
    source = Path(model_source)
    for folder in (source, paths.root / source, paths.models / source.name):
        if (folder / "transformer" / "config.json").is_file():
            try:
                return memory.resolve_transformer_config(folder)
            except ValueError:  # a half-downloaded config.json: the Environment tab names it
                break
    return _variant_from_name(source.name)


def config_estimate(paths: AppPaths, config: TrainerConfig, width: int, height: int, frames: int,
                    card: Card | None, setup: memory.TrainingSetup | None = None) -> dict:
    """The estimate of a config at WxHxF against `card`, as plain values for the GUI.

    Keys: device ("cuda" or "cpu"), total_bytes, card_name, card_bytes, verdict ("fits", "tight",
    "too_big", "cpu" for a tiny model without a GPU, "no_gpu" for a real model without one),
    advice ({changes, total_bytes} or None), model (the config's model_source), known (False when
    the model's shape is unknown; nothing else is set then).
    """
    setup = setup or memory.TrainingSetup.from_config(config)
    source = config.model.model_source
    shape = model_shape(paths, source)
    if shape is None:
        return {"known": False, "model": source}
    parameters = memory.count_parameters(memory.resolve_transformer_config(shape), (), 0)["base"]
    on_cpu = card is None and parameters <= CPU_PARAMETER_LIMIT  # else the GPU it would need is estimated
    device = "cpu" if on_cpu else "cuda"
    need = memory.estimate(setup, width, height, frames, shape, device).total_bytes
    result = {"known": True, "model": source, "device": device, "total_bytes": need, "advice": None,
              "card_name": card.name if card else None, "card_bytes": card.total_bytes if card else None}
    if card is None:
        result["verdict"] = "cpu" if on_cpu else "no_gpu"
        return result
    result["verdict"] = memory.judge(need, card.total_bytes)
    if result["verdict"] != "fits":
        advice = memory.advise(setup, width, height, frames, shape, card.total_bytes, device)
        result["advice"] = {"changes": advice.changes, "total_bytes": advice.total_bytes} if advice else None
    return result


def memory_estimate(paths: AppPaths, template: str, width: int, height: int, frames: int,
                    card: Card | None, model: str | None = None) -> dict:
    """`config_estimate` for a pipeline template at the size the pipeline tab asks for, on the
    chosen model folder under models/ (`model`, a folder name), else the template's own."""
    config = load_config(template_path(template))
    if model:
        config.model.model_source = str(paths.models / model)
    # A template's empty prompts are filled from the captions by the pipeline: validation (and the
    # VAE it keeps loaded) is on whenever the template sets an interval.
    setup = replace(memory.TrainingSetup.from_config(config), validation_videos=bool(config.validation.interval))
    return config_estimate(paths, config, width, height, frames, card, setup)


def suggested_template(paths: AppPaths, card: Card | None, family: str = "ltx_video") -> str:
    """The first template of `family` that fits the card at the default size: for LTX-Video the
    biggest model (tiny without a GPU or when none fits), for LTX-2 the one with the most memory."""
    preference = TEMPLATE_PREFERENCE[family]
    fallback = CPU_TEMPLATE if family == "ltx_video" else preference[-1]
    if card is None:
        return fallback
    for template in preference:
        result = memory_estimate(paths, template, *SUGGESTION_SIZE, card)
        if result["known"] and result["verdict"] == "fits":
            return template
    return fallback


def _size(byte_count: int) -> str:
    return f"{byte_count / GIB:.1f} GB" if byte_count >= GIB / 10 else f"{byte_count / 2**20:.0f} MB"


def _change(setting: str, value, lang: str) -> str:
    return t(f"memory.change.{setting}", lang, value=value)


def memory_text(paths: AppPaths, template: str, resolution: str, frames, lang: str, card: Card | None,
                model: str | None = None) -> str:
    """The line under the pipeline form, entirely in `lang`."""
    try:
        width, height = parse_resolution(str(resolution or ""))
        check_dimensions(width, height, int(frames))
    except (PipelineError, TypeError, ValueError):
        return t("memory.bad_size", lang, resolution=resolution, frames=frames)
    return estimate_text(memory_estimate(paths, template, width, height, int(frames), card, model), lang)


def config_memory_text(paths: AppPaths, config: TrainerConfig, lang: str, card: Card | None) -> str:
    """The line under the Advanced form: the config at its validation size (the pipeline sets that
    to the training size; a config of one's own may train other buckets)."""
    width, height, frames = config.validation.video_dims
    size = f"{width}x{height}x{frames}"
    return t("memory.at_size", lang, size=size) + estimate_text(config_estimate(paths, config, width, height, frames,
                                                                                 card), lang)


def estimate_text(result: dict, lang: str) -> str:
    """A `config_estimate` result as one line in `lang`: the verdict, and the change that fits."""
    if not result["known"]:
        return t("memory.unknown_model", lang, model=result["model"])
    need = _size(result["total_bytes"])
    if result["verdict"] in ("cpu", "no_gpu"):
        return t(f"memory.{result['verdict']}", lang, need=need)
    line = t(f"memory.{result['verdict']}", lang, need=need, card=result["card_name"],
             total=_size(result["card_bytes"]))
    if result["verdict"] == "fits":
        return line
    advice = result["advice"]
    if advice is None:
        return line + " " + t("memory.no_advice", lang)
    separator = t("memory.change.separator", lang)
    changes = separator.join(_change(setting, value, lang) for setting, value in advice["changes"].items())
    return line + " " + t("memory.advice", lang, changes=changes, need=_size(advice["total_bytes"]))
