"""The advanced-parameters form, generated from the TrainerConfig schema so the two never drift.

`form_fields()` walks the pydantic model and describes each leaf field (kind of widget, choices,
limits, default, description); `values_from_config` and `config_from_values` convert between a
config and the widgets' values. Limits are shown as hints, not enforced by the widgets: the
schema itself rejects a bad value, so the user reads the same message the command line gives.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import annotated_types
import yaml
from pydantic import BaseModel

from ltxtrainer.config import ConfigError, TrainerConfig, config_from_dict

ENABLED = "enabled"  # pseudo-field of an optional section (lora, conditioning)


@dataclass(frozen=True)
class FormField:
    path: str  # dotted, e.g. "optimization.steps"; "lora.enabled" for an optional section's switch
    kind: str  # int, float, bool, choice, text, lines, mapping, dims, section
    default: Any
    description: str = ""
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    optional: bool = False  # None is allowed (an empty box means None)


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True  # noqa: UP007
    return annotation, False


def _section_type(annotation: Any) -> type[BaseModel] | None:
    annotation, _ = _strip_optional(annotation)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _bounds(metadata: list) -> tuple[float | None, float | None]:
    low = high = None
    for item in metadata:
        if isinstance(item, annotated_types.Ge | annotated_types.Gt):
            low = getattr(item, "ge", None) if isinstance(item, annotated_types.Ge) else item.gt
        if isinstance(item, annotated_types.Le | annotated_types.Lt):
            high = getattr(item, "le", None) if isinstance(item, annotated_types.Le) else item.lt
    return low, high


def _leaf(path: str, info) -> FormField:
    annotation, optional = _strip_optional(info.annotation)
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    low, high = _bounds(info.metadata)
    common = {"path": path, "default": default, "description": info.description or "", "optional": optional}
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return FormField(kind="choice", choices=tuple(typing.get_args(annotation)), **common)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # Literal[...] | None nested
        literals = [a for a in typing.get_args(annotation) if typing.get_origin(a) is Literal]
        if literals:
            return FormField(kind="choice", choices=tuple(typing.get_args(literals[0])), **common)
    if annotation is bool:
        return FormField(kind="bool", **common)
    if annotation is int:
        return FormField(kind="int", minimum=low, maximum=high, **common)
    if annotation is float:
        return FormField(kind="float", minimum=low, maximum=high, **common)
    if origin is list:
        return FormField(kind="lines", **common)
    if origin is dict:
        return FormField(kind="mapping", **common)
    if origin is tuple:
        return FormField(kind="dims", **common)
    return FormField(kind="text", **common)


def _walk(model: type[BaseModel], prefix: str) -> list[FormField]:
    fields = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        section = _section_type(info.annotation)
        if section is None:
            fields.append(_leaf(path, info))
            continue
        _, optional = _strip_optional(info.annotation)
        if optional:
            enabled_by_default = name == "lora"  # LoRA is the default training mode
            fields.append(FormField(path=f"{path}.{ENABLED}", kind="section", default=enabled_by_default,
                                    description=info.description or f"Write a '{name}' section."))
        fields.extend(_walk(section, f"{path}."))
    return fields


def form_fields() -> list[FormField]:
    """Every field of TrainerConfig, in schema order, sections flattened to dotted paths."""
    return _walk(TrainerConfig, "")


# ---- values <-> config -------------------------------------------------------------------------


def _to_widget(field: FormField, value: Any) -> Any:
    if field.kind == "lines":
        return "\n".join(value or [])
    if field.kind == "mapping":
        return yaml.safe_dump(value, sort_keys=False, allow_unicode=True).strip() if value else ""
    if field.kind == "dims":
        return ", ".join(str(v) for v in value) if value else ""
    if field.kind == "choice" and value is None:
        return ""
    if field.kind == "text":
        return "" if value is None else str(value)
    return value


def values_from_config(config: TrainerConfig | dict) -> list[Any]:
    """Widget values (in form_fields() order) showing a config; absent fields show defaults."""
    data = config.model_dump(mode="python") if isinstance(config, TrainerConfig) else config
    values = []
    for field in form_fields():
        parts = field.path.split(".")
        if field.kind == "section":
            values.append(data.get(parts[0]) is not None)
            continue
        node: Any = data
        for part in parts:
            node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
        values.append(_to_widget(field, field.default if node is _ABSENT else node))
    return values


_ABSENT = object()


def _from_widget(field: FormField, value: Any, problems: list[str]) -> Any:
    empty = value is None or (isinstance(value, str) and not value.strip())
    if field.kind in ("int", "float"):
        if empty:
            return None
        number = float(value)
        if field.kind == "int":
            if number != int(number):
                problems.append(f"{field.path} = {value!r}: must be a whole number")
                return value
            return int(number)
        return number
    if field.kind == "bool":
        return bool(value)
    if field.kind == "choice":
        return None if empty and field.optional else value
    if field.kind == "lines":
        if empty and field.optional:
            return None
        return [line.strip() for line in str(value or "").splitlines() if line.strip()]
    if field.kind == "mapping":
        try:
            parsed = yaml.safe_load(value) if not empty else {}
        except yaml.YAMLError as error:
            problems.append(f"{field.path}: not valid YAML ({error})")
            return {}
        if not isinstance(parsed, dict):
            problems.append(f"{field.path} = {value!r}: must be key: value pairs")
            return {}
        return parsed
    if field.kind == "dims":
        numbers = [piece for piece in str(value or "").replace("x", ",").split(",") if piece.strip()]
        try:
            return [int(piece) for piece in numbers]
        except ValueError:
            problems.append(f"{field.path} = {value!r}: write width, height, frames, e.g. 768, 512, 49")
            return numbers
    return None if empty and field.optional else ("" if value is None else str(value))


def dict_from_values(values: list[Any]) -> dict:
    """A config dict from the widget values; unparseable boxes raise ConfigError, one line each."""
    fields = form_fields()
    if len(values) != len(fields):
        raise ConfigError(f"expected {len(fields)} values, got {len(values)}")
    problems: list[str] = []
    data: dict = {}
    disabled = {f.path.rsplit(".", 1)[0] for f, v in zip(fields, values, strict=True) if f.kind == "section" and not v}
    for field, value in zip(fields, values, strict=True):
        if field.kind == "section" or field.path.split(".")[0] in disabled:
            continue
        node = data
        *parents, leaf = field.path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _from_widget(field, value, problems)
    if problems:
        raise ConfigError("Invalid training config:\n" + "\n".join(f"  - {line}" for line in problems))
    return data


def config_from_values(values: list[Any]) -> TrainerConfig:
    """Validate the form through the schema; ConfigError carries the schema's own messages."""
    return config_from_dict(dict_from_values(values))


# ---- the folders a config names ----------------------------------------------------------------

PRECOMPUTED = ".precomputed"
DATA_PARTS = ("latents", "conditions")


def holds_precomputed_data(folder: Path) -> bool:
    """A folder the trainer reads directly: it holds latents/ and conditions/."""
    return all((folder / part).is_dir() for part in DATA_PARTS)


def precomputed_sets(datasets: Path) -> list[Path]:
    """Every precomputed set of every project: `datasets/*/scenes/.precomputed` itself (one set, the
    older layout) or each folder inside it (one per data key) that holds latents/ and conditions/."""
    sets = []
    for precomputed in sorted(datasets.glob(f"*/scenes/{PRECOMPUTED}")):
        candidates = [precomputed, *sorted(child for child in precomputed.iterdir() if child.is_dir())]
        sets += [folder for folder in candidates if holds_precomputed_data(folder)]
    return sets


def data_folder_usable(folder: Path) -> bool:
    """What `data.preprocessed_data_root` may name: a set itself or a dataset folder with one in `.precomputed`."""
    return holds_precomputed_data(folder) or holds_precomputed_data(folder / PRECOMPUTED)
