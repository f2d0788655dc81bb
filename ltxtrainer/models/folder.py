"""Finding an LTX-Video or LTX-2 model folder and checking it before anything heavy starts.

A missing shard normally surfaces minutes into a run as a cryptic loader traceback, and the
seed GUI silently trained on random placeholders instead. Here every missing or broken file is
named up front, with what to download and where to put it.

The model family (LTX-Video 0.9 or LTX-2) is read from `model_index.json`'s `_class_name`, the
one place every diffusers folder states which pipeline it belongs to.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ModelFamily = Literal["ltx_video", "ltx2"]

DEFAULT_MODEL_DIR = Path("models") / "LTX-Video-0.9.7-diffusers"
DOWNLOAD_HINT = (
    "Download the diffusers-format model (e.g. https://huggingface.co/a-r-r-o-w/LTX-Video-0.9.7-diffusers "
    "or Lightricks/LTX-Video-0.9.7-dev in diffusers layout) and put its folders "
    "transformer/, vae/, text_encoder/, tokenizer/, scheduler/ and model_index.json under {where}."
)

LTX2_DOWNLOAD_HINT = (
    "Download the diffusers-format LTX-2 model (e.g. https://huggingface.co/Lightricks/LTX-2) and put its "
    "folders transformer/, vae/, audio_vae/, vocoder/, connectors/, text_encoder/, tokenizer/, scheduler/ "
    "and model_index.json under {where}."
)

_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")

# component -> (config file, kind of weights)
COMPONENTS: dict[str, tuple[str, str]] = {
    "transformer": ("config.json", "diffusers"),
    "vae": ("config.json", "diffusers"),
    "text_encoder": ("config.json", "transformers"),
    "tokenizer": ("tokenizer_config.json", "tokenizer"),
    "scheduler": ("scheduler_config.json", "none"),
}

# LTX-2 adds the audio VAE, the vocoder that turns its mel spectrograms into sound, and the text
# connectors between Gemma and the transformer.
LTX2_COMPONENTS: dict[str, tuple[str, str]] = {
    **COMPONENTS,
    "audio_vae": ("config.json", "diffusers"),
    "vocoder": ("config.json", "diffusers"),
    "connectors": ("config.json", "diffusers"),
}
FAMILY_COMPONENTS: dict[str, dict[str, tuple[str, str]]] = {"ltx_video": COMPONENTS, "ltx2": LTX2_COMPONENTS}

# Parts an LTX-2 pipeline may name in model_index.json (LTX-2.5 ships a duration head and a prompt
# enhancer). Training needs neither, but `LTX2Pipeline.from_pretrained` (validation) loads every part
# the index names, so a named part that is missing is as fatal as a missing transformer.
LTX2_OPTIONAL_COMPONENTS: dict[str, tuple[str, str]] = {
    "duration_head": ("config.json", "diffusers"),
    "prompt_enhancer": ("config.json", "transformers"),
}


class ModelFolderError(RuntimeError):
    """A model folder is missing or incomplete; the message lists every problem."""


@dataclass
class ModelFolderReport:
    path: Path
    problems: list[str] = field(default_factory=list)
    variant: str = "unknown"
    family: ModelFamily = "ltx_video"

    @property
    def ok(self) -> bool:
        return not self.problems

    def message(self) -> str:
        name = "LTX-2" if self.family == "ltx2" else "LTX-Video"
        if self.ok:
            return f"Model folder {self.path} is complete ({name} {self.variant})."
        lines = [f"Model folder {self.path} is not usable:"]
        lines += [f"  - {problem}" for problem in self.problems]
        hint = LTX2_DOWNLOAD_HINT if self.family == "ltx2" else DOWNLOAD_HINT
        lines.append(hint.format(where=self.path))
        return "\n".join(lines)


def _hf_cache_snapshot(repo_dir: Path) -> Path | None:
    """The snapshot a `models--org--name` cache folder's refs/main points to (or its only one)."""
    snapshots = repo_dir / "snapshots"
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        candidate = snapshots / ref.read_text(encoding="utf-8").strip()
        if candidate.is_dir():
            return candidate
    found = sorted(p for p in snapshots.glob("*") if p.is_dir()) if snapshots.is_dir() else []
    return found[-1] if found else None


def resolve_model_path(source: str | os.PathLike | None) -> Path:
    """Turn a config's `model_source` into a local folder, without touching the network.

    Accepts a folder, a Hugging Face cache `models--org--name` folder or snapshot, or a repo id
    (`org/name`) that is already in the local Hugging Face cache.
    """
    if source is None or str(source).strip() == "":
        return DEFAULT_MODEL_DIR
    path = Path(str(source)).expanduser()
    if path.name.startswith("models--") and path.is_dir():
        return _hf_cache_snapshot(path) or path
    if path.exists():
        return path
    if _REPO_ID.match(str(source)):
        cache = Path(
            os.environ.get("HF_HUB_CACHE")
            or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
        )
        repo_dir = cache / ("models--" + str(source).replace("/", "--"))
        snapshot = _hf_cache_snapshot(repo_dir) if repo_dir.is_dir() else None
        if snapshot is not None:
            return snapshot
    return path


def _check_file(path: Path, problems: list[str], what: str) -> bool:
    if not path.is_file():
        problems.append(f"missing {what}: {path}")
        return False
    if path.stat().st_size == 0:
        problems.append(f"empty file (download incomplete?): {path}")
        return False
    return True


def _check_json(path: Path, problems: list[str], what: str) -> dict | None:
    if not _check_file(path, problems, what):
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        problems.append(f"unreadable JSON ({error}): {path}")
        return None


def _check_weights(folder: Path, problems: list[str]) -> None:
    """Single safetensors files must be non-empty; every shard an index names must exist."""
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    for index_path in indexes:
        index = _check_json(index_path, problems, "shard index")
        if index is None:
            continue
        for shard in sorted(set(index.get("weight_map", {}).values())):
            _check_file(folder / shard, problems, "weight shard")
    if indexes:
        return
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        if sorted(folder.glob("*.bin")):
            problems.append(
                f"only pickle (.bin) weights in {folder}; ltxtrainer loads .safetensors only "
                "(convert them or download the safetensors version)"
            )
        else:
            problems.append(f"missing weights (*.safetensors) in {folder}")
        return
    for weight in weights:
        _check_file(weight, problems, "weights")


def detect_variant(transformer_config: dict) -> str:
    """'2b', '13b' or 'custom' from the transformer's config (block count and head size)."""
    layers = transformer_config.get("num_layers")
    head_dim = transformer_config.get("attention_head_dim")
    if layers == 28 and head_dim == 64:
        return "2b"
    if layers == 48 and head_dim == 128:
        return "13b"
    return "custom"


def detect_family(model_index: dict | None) -> ModelFamily:
    """'ltx2' for LTX2* pipelines (LTX-2, 2.3, 2.5), else 'ltx_video' (LTXPipeline and the other 0.9 ones).

    An unreadable or missing model_index.json counts as 0.9, the family this project always had,
    so its problems are still reported against the 0.9 layout.
    """
    class_name = str((model_index or {}).get("_class_name", ""))
    return "ltx2" if class_name.startswith("LTX2") else "ltx_video"


def detect_ltx2_variant(transformer_config: dict, model_index: dict | None = None) -> str:
    """'2.5' when the text encoder is a Gemma 4 (LTX-2.5's `Gemma4UnifiedForConditionalGeneration`),
    else '2.3' when the transformer has gated attention (to_gate_logits), else '2.0'."""
    text_encoder = (model_index or {}).get("text_encoder") or [None, None]
    if str(text_encoder[1]).startswith("Gemma4"):
        return "2.5"
    return "2.3" if transformer_config.get("gated_attn") else "2.0"


def _check_text_encoder_class(model_index: dict | None, problems: list[str]) -> None:
    """The installed transformers must have the text encoder class the folder names: an LTX-2.5
    folder needs Gemma 4, which older transformers releases lack and would only fail on deep in loading."""
    library, class_name = (model_index or {}).get("text_encoder") or [None, None]
    if library != "transformers" or not class_name:
        return
    import transformers

    if getattr(transformers, class_name, None) is None:
        problems.append(
            f"text_encoder is a {class_name}, which the installed transformers {transformers.__version__} "
            "does not have; LTX-2.5 needs a transformers release with Gemma 4 (pip install -U transformers)"
        )


def check_model_folder(source: str | os.PathLike | None) -> ModelFolderReport:
    """Check everything the trainer will load; never raises, returns every problem found."""
    path = resolve_model_path(source)
    report = ModelFolderReport(path=path)
    if not path.is_dir():
        report.problems.append(f"folder not found: {path}")
        return report
    model_index = _check_json(path / "model_index.json", report.problems, "model_index.json")
    report.family = detect_family(model_index)
    components = dict(FAMILY_COMPONENTS[report.family])
    if report.family == "ltx2":
        components |= {
            name: spec
            for name, spec in LTX2_OPTIONAL_COMPONENTS.items()
            if ((model_index or {}).get(name) or [None])[0] is not None
        }
        _check_text_encoder_class(model_index, report.problems)
    for name, (config_name, kind) in components.items():
        folder = path / name
        if not folder.is_dir():
            report.problems.append(f"missing subfolder {name}/: {folder}")
            continue
        config = _check_json(folder / config_name, report.problems, f"{name} config")
        if kind in ("diffusers", "transformers"):
            _check_weights(folder, report.problems)
        elif kind == "tokenizer" and not (
            (folder / "tokenizer.json").is_file()
            or (folder / "spiece.model").is_file()
            or (folder / "tokenizer.model").is_file()
        ):
            report.problems.append(f"missing tokenizer.json, tokenizer.model or spiece.model in {folder}")
        if name == "transformer" and config:
            report.variant = (
                detect_ltx2_variant(config, model_index) if report.family == "ltx2" else detect_variant(config)
            )
            if (path / "ltxtrainer_tiny.json").is_file():
                report.variant = "tiny"
    return report


def require_model_folder(source: str | os.PathLike | None) -> Path:
    """The checked local folder for `source`; raises ModelFolderError naming every problem."""
    report = check_model_folder(source)
    if not report.ok:
        raise ModelFolderError(report.message())
    return report.path
