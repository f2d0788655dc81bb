"""LoRA files for ComfyUI and diffusers, and merging a LoRA into the base transformer.

The rules below were read from diffusers 0.42 (`LTXVideoLoraLoaderMixin.lora_state_dict`,
`_convert_non_diffusers_ltxv_lora_to_diffusers`, `PeftAdapterMixin.load_lora_adapter`) and from
ComfyUI's generic LoRA loader, as summarised in /work/shared/FIELD_NOTES.md §3:

- diffusers loads `transformer.<module>.lora_A.weight` / `.lora_B.weight`. When every key starts
  with `diffusion_model.` it swaps that prefix for `transformer.` and renames nothing else. A key
  without "lora" in it (such as `<module>.alpha`) makes it refuse the whole file. Alpha comes only
  from the safetensors metadata entry `lora_adapter_metadata` (keys `transformer.r`,
  `transformer.lora_alpha`, ...); without that entry alpha = rank.
- ComfyUI maps `diffusion_model.<module>` and kohya's `lora_unet_<module, dots as _>` keys, reads
  an optional `<module>.alpha` scalar (scale = alpha / rank, 1.0 when absent) and ignores metadata.
  Keys it cannot map (`transformer.`, `base_model.model.`) are skipped silently.
- So the one file both load correctly is `diffusion_model.<module>.lora_A/.lora_B.weight` with no
  `.alpha` keys and alpha/rank folded into lora_B. That is what `to_comfyui` writes. It must NOT
  carry `lora_adapter_metadata` (diffusers would apply alpha/rank a second time); rank, alpha and
  the folded scale go under our own metadata key instead, so `to_diffusers` can unfold them.
- diffusers before 0.35 ignore the metadata's alpha too, so the diffusers files we write (the
  trainer's `lora_weights.safetensors`, `to_diffusers`) are folded the same way, with the metadata
  saying alpha = rank and our record holding the trained values. Files without our record (the
  trainer's before this, other tools') are read unfolded with the alpha their metadata states.
- Module names inside `transformer_blocks.N` are the same in diffusers, ComfyUI and the original
  LTX code; outside the blocks they differ (`proj_in` vs `patchify_proj`, ...), so no single file
  can serve both there and such LoRAs are refused.

Folding multiplies lora_B by alpha/rank in float32 and casts back: exact (bit for bit there and
back) when alpha/rank is a power of two, exact to float rounding otherwise. The trainer's
checkpoints keep the unfolded fp32 adapter.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ltxtrainer.atomic import replace_with_retry
from ltxtrainer.models.tiny import TRANSFORMER_CONFIG as TINY_TRANSFORMER_CONFIG
from ltxtrainer.progress import say

# diffusers' LORA_ADAPTER_METADATA_KEY; its entries are prefixed with the component name.
DIFFUSERS_METADATA_KEY = "lora_adapter_metadata"
DIFFUSERS_COMPONENT = "transformer"
# Our own record (rank, alpha, folded scale, source) in a key no loader interprets.
LTXTRAINER_METADATA_KEY = "ltxtrainer_lora"
# An IC-LoRA's reference downscale factor N, where Lightricks' successor trainer writes it and its
# LTX-2 pipelines (ltx_pipelines.iclora_utils) read it: a top-level metadata entry, the integer as text.
REFERENCE_DOWNSCALE_METADATA_KEY = "reference_downscale_factor"
MERGE_RECORD = "ltxtrainer_merge.json"

PREFIXES = {
    "diffusers": "transformer.",
    "comfyui": "diffusion_model.",
    "kohya": "lora_unet_",
    "peft": "base_model.model.",
}

# Linear layers inside one LTX-Video block -> (in, out) as multiples of the model width d.
BLOCK_LINEARS: dict[str, tuple[int, int]] = {
    "attn1.to_q": (1, 1),
    "attn1.to_k": (1, 1),
    "attn1.to_v": (1, 1),
    "attn1.to_out.0": (1, 1),
    "attn2.to_q": (1, 1),
    "attn2.to_k": (1, 1),  # LTX-Video's caption projection outputs width d, so cross-attention k/v read d
    "attn2.to_v": (1, 1),
    "attn2.to_out.0": (1, 1),
    "ff.net.0.proj": (1, 4),
    "ff.net.2": (4, 1),
}
_BLOCK_MODULE = re.compile(
    r"transformer_blocks\.(\d+)\.(" + "|".join(re.escape(name) for name in BLOCK_LINEARS) + r")"
)
_KOHYA_MODULE = re.compile(
    r"transformer_blocks_(\d+)_(" + "|".join(name.replace(".", "_") for name in BLOCK_LINEARS) + r")"
)
_KOHYA_TO_DOTTED = {name.replace(".", "_"): name for name in BLOCK_LINEARS}
# LTX-Video modules outside the blocks, under both naming schemes (diffusers / original+ComfyUI).
_OUTSIDE_BLOCKS = ("proj_in", "patchify_proj", "proj_out", "time_embed", "adaln_single", "caption_projection")

# Model width -> (name, block count). The tiny test model is here so tests exercise the same checks.
_TINY_WIDTH = TINY_TRANSFORMER_CONFIG["num_attention_heads"] * TINY_TRANSFORMER_CONFIG["attention_head_dim"]
KNOWN_WIDTHS: dict[int, tuple[str, int]] = {
    2048: ("LTX-Video 2B", 28),
    4096: ("LTX-Video 13B", 48),
    _TINY_WIDTH: ("ltxtrainer tiny test model", TINY_TRANSFORMER_CONFIG["num_layers"]),
}


class LoraFormatError(ValueError):
    """A LoRA file that is unreadable, not an LTX-Video LoRA, or cannot be converted; says why."""


@dataclass
class LoraModule:
    """One adapted linear layer: `down` is lora_A [rank, in], `up` lora_B [out, rank] UNFOLDED
    (float32 when read from a folded file; `down` keeps the file's dtype)."""

    down: torch.Tensor
    up: torch.Tensor
    alpha: float

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


@dataclass
class LtxLora:
    """An LTX-Video LoRA read from any supported format, normalised to diffusers module names."""

    path: Path
    format: str
    modules: dict[str, LoraModule]
    # diffusers/peft LoraConfig kwargs (unprefixed) from the source file, kept for a faithful round trip.
    adapter_metadata: dict | None = None
    folded: bool = False
    width: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def rank(self) -> int:
        return collections.Counter(m.rank for m in self.modules.values()).most_common(1)[0][0]

    @property
    def alpha(self) -> float:
        return collections.Counter(m.alpha for m in self.modules.values()).most_common(1)[0][0]

    def describe(self) -> str:
        model = KNOWN_WIDTHS.get(self.width, ("unknown model", 0))[0]
        folded = ", alpha folded into lora_B" if self.folded else ""
        return (
            f"{self.format} LoRA for {model}: {len(self.modules)} modules, rank {self.rank}, "
            f"alpha {_number(self.alpha)} (scale {self.alpha / self.rank:g}{folded})"
        )


def _number(value: float) -> int | float:
    """Alpha as an int when it is one, so metadata reads `16`, not `16.0`."""
    return int(value) if float(value).is_integer() else float(value)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_lora_file(source: str | os.PathLike) -> Path:
    """The .safetensors file `source` names; a folder is accepted when it holds exactly one."""
    path = Path(source).expanduser()
    if path.is_dir():
        candidates = sorted(path.glob("*.safetensors"))
        if len(candidates) != 1:
            raise LoraFormatError(
                f"{path} is a folder with {len(candidates)} .safetensors files; name the LoRA file itself."
            )
        path = candidates[0]
    if not path.is_file():
        raise LoraFormatError(f"LoRA file not found: {path}")
    if path.suffix.lower() != ".safetensors":
        raise LoraFormatError(
            f"{path} is not a .safetensors file; only safetensors LoRAs are read (no pickles)."
        )
    return path


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # safetensors raises several types for a damaged header
        raise LoraFormatError(f"{path} is not a readable safetensors file ({error}).") from error
    if not tensors:
        raise LoraFormatError(f"{path} holds no tensors.")
    return tensors, metadata


def detect_format(keys: list[str], path: Path | str = "") -> str:
    """'diffusers', 'comfyui', 'kohya' or 'peft' from the key prefix; refuses mixed or foreign files."""
    found = {name for name, prefix in PREFIXES.items() if any(key.startswith(prefix) for key in keys)}
    unknown = [key for key in keys if not any(key.startswith(prefix) for prefix in PREFIXES.values())]
    if unknown:
        raise LoraFormatError(
            f"{path} is not an LTX-Video LoRA: key '{unknown[0]}' has none of the prefixes an LTX-Video "
            f"LoRA uses ({', '.join(PREFIXES.values())}). Text-encoder or other-model LoRAs cannot be converted."
        )
    if len(found) != 1:
        raise LoraFormatError(
            f"{path} mixes key prefixes of several formats ({', '.join(sorted(found))}); "
            "diffusers refuses such files and ComfyUI would load only part of it."
        )
    return found.pop()


def _module_name(raw: str, source_format: str, path: Path) -> str:
    """The diffusers module path for a key's module part, or a clear refusal."""
    if source_format == "kohya":
        match = _KOHYA_MODULE.fullmatch(raw)
        if match:
            return f"transformer_blocks.{match.group(1)}.{_KOHYA_TO_DOTTED[match.group(2)]}"
    elif _BLOCK_MODULE.fullmatch(raw):
        return raw
    if any(raw == name or raw.startswith((name + ".", name + "_")) for name in _OUTSIDE_BLOCKS):
        raise LoraFormatError(
            f"{path} adapts '{raw}', outside transformer_blocks. diffusers and ComfyUI name those modules "
            "differently (proj_in/patchify_proj, time_embed/adaln_single), so no single file works in both; "
            "train with targets inside the blocks (to_q, to_k, to_v, to_out.0, ff.net.0.proj, ff.net.2)."
        )
    raise LoraFormatError(
        f"{path} is not an LTX-Video LoRA: module '{raw}' does not exist in the LTX-Video transformer "
        "(expected transformer_blocks.N.attn1/attn2.to_q/to_k/to_v/to_out.0 or ff.net.0.proj/ff.net.2). "
        "It was probably trained for another model (SD, Flux, Wan, HunyuanVideo, ...)."
    )


_KEY_PARTS = re.compile(
    r"(?P<module>.+?)\.(?P<part>lora_A\.weight|lora_B\.weight|lora_down\.weight|lora_up\.weight|alpha)"
)


def _split_keys(
    tensors: dict[str, torch.Tensor], source_format: str, path: Path
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, float]]:
    """Group tensors by diffusers module name: {module: {"down": A, "up": B}} and {module: alpha}."""
    prefix = PREFIXES[source_format]
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    alphas: dict[str, float] = {}
    for key, tensor in tensors.items():
        match = _KEY_PARTS.fullmatch(key[len(prefix) :])
        if match is None:
            what = (
                "DoRA / LoRA-bias / LoHa / LoKr"
                if re.search(r"dora|magnitude|bias|hada|lokr", key)
                else "unknown"
            )
            raise LoraFormatError(
                f"{path} has a key this converter does not understand ('{key}', {what} part); only plain "
                "LoRA (lora_A/lora_B or lora_down/lora_up, optional .alpha) can be converted."
            )
        module = _module_name(match.group("module"), source_format, path)
        part = match.group("part")
        if part == "alpha":
            alphas[module] = float(tensor.float().reshape(-1)[0])
        else:
            pairs.setdefault(module, {})[
                "down" if part in ("lora_A.weight", "lora_down.weight") else "up"
            ] = tensor
    for module, pair in pairs.items():
        if set(pair) != {"down", "up"}:
            missing = "lora_B/lora_up" if "down" in pair else "lora_A/lora_down"
            raise LoraFormatError(f"{path} is incomplete: module '{module}' has no {missing} weight.")
    orphans = sorted(set(alphas) - set(pairs))
    if orphans:
        raise LoraFormatError(f"{path} has an alpha for '{orphans[0]}' but no LoRA weights for it.")
    return pairs, alphas


def _check_shapes(pairs: dict[str, dict[str, torch.Tensor]], path: Path) -> int:
    """The model width the LoRA fits; refuses shapes no LTX-Video transformer has."""
    widths = set()
    for module, pair in pairs.items():
        down, up = pair["down"], pair["up"]
        if down.ndim != 2 or up.ndim != 2 or down.shape[0] != up.shape[1]:
            raise LoraFormatError(
                f"{path}: module '{module}' has lora_A {tuple(down.shape)} and lora_B {tuple(up.shape)}, "
                "which are not a linear LoRA pair of one rank."
            )
        in_mult, out_mult = BLOCK_LINEARS[module.split(".", 2)[2]]
        if (
            down.shape[1] % in_mult
            or up.shape[0] % out_mult
            or down.shape[1] // in_mult != up.shape[0] // out_mult
        ):
            raise LoraFormatError(
                f"{path}: module '{module}' maps {down.shape[1]} -> {up.shape[0]} features, which does not fit "
                "an LTX-Video block; this LoRA was trained for another model."
            )
        widths.add(down.shape[1] // in_mult)
    if len(widths) != 1:
        raise LoraFormatError(
            f"{path}: modules disagree on the model width ({sorted(widths)}); not one LTX-Video model."
        )
    width = widths.pop()
    if width not in KNOWN_WIDTHS:
        known = ", ".join(f"{w} ({name})" for w, (name, _) in KNOWN_WIDTHS.items())
        raise LoraFormatError(
            f"{path}: layers are {width} wide, but LTX-Video transformers are {known}; "
            "this LoRA was trained for another model with similar module names (e.g. CogVideoX or Mochi)."
        )
    name, blocks = KNOWN_WIDTHS[width]
    deepest = max(int(module.split(".")[1]) for module in pairs)
    if deepest >= blocks:
        raise LoraFormatError(f"{path}: adapts block {deepest}, but {name} has only {blocks} blocks.")
    return width


def _pattern_value(patterns: dict, module: str, default: float) -> float:
    """peft's rank/alpha pattern lookup (peft.utils.other.get_pattern_key matches a dotted suffix)."""
    for pattern, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({pattern.lstrip('^')})$", module):
            return float(value)
    return float(default)


def _adapter_metadata(metadata: dict[str, str]) -> dict | None:
    raw = metadata.get(DIFFUSERS_METADATA_KEY)
    if not raw:
        return None
    packed = json.loads(raw)
    prefix = DIFFUSERS_COMPONENT + "."
    return {key[len(prefix) :]: value for key, value in packed.items() if key.startswith(prefix)} or None


def _peft_adapter_config(path: Path) -> dict | None:
    """peft's `save_pretrained` puts alpha in adapter_config.json beside adapter_model.safetensors."""
    config = path.with_name("adapter_config.json")
    if not config.is_file():
        return None
    return json.loads(config.read_text(encoding="utf-8"))


def read_lora(source: str | os.PathLike) -> LtxLora:
    """Read an LTX-Video LoRA in any supported format, with lora_B unfolded and alpha per module.

    Alpha comes from, in order: our own record of a folded file, `.alpha` keys, diffusers'
    `lora_adapter_metadata` (lora_alpha and alpha_pattern), a peft adapter_config.json beside
    the file; otherwise alpha = rank, which is what every loader assumes then.
    """
    path = resolve_lora_file(source)
    tensors, metadata = _load_safetensors(path)
    source_format = detect_format(list(tensors), path)
    pairs, alpha_keys = _split_keys(tensors, source_format, path)
    width = _check_shapes(pairs, path)

    record = json.loads(metadata[LTXTRAINER_METADATA_KEY]) if LTXTRAINER_METADATA_KEY in metadata else None
    folded = bool(record and record.get("folded"))
    adapter = _adapter_metadata(metadata)
    if record and record.get("adapter_metadata"):
        adapter = record["adapter_metadata"]
    if source_format == "peft":
        adapter = _peft_adapter_config(path) or adapter
    notes = []
    # rsLoRA scales by alpha/sqrt(rank); ComfyUI knows only alpha/rank, so carry the same scale
    # as an equivalent plain alpha (alpha * sqrt(rank)) from here on.
    rslora = bool(adapter and adapter.get("use_rslora") and not folded)
    if rslora:
        notes.append("rsLoRA file: its alpha/sqrt(rank) scale is kept as an equivalent plain alpha")
    modules: dict[str, LoraModule] = {}
    for module in sorted(pairs, key=_module_order):
        down, up = pairs[module]["down"], pairs[module]["up"]
        rank = down.shape[0]
        if folded:
            alpha = float(record.get("alphas", {}).get(module, record["alpha"]))
        elif module in alpha_keys:
            alpha = alpha_keys[module]
        elif adapter and "lora_alpha" in adapter:
            alpha = _pattern_value(adapter.get("alpha_pattern"), module, adapter["lora_alpha"])
        else:
            alpha = float(rank)
        if rslora and module not in alpha_keys:
            alpha *= math.sqrt(rank)
        if folded:  # unfolded in float32: folding it back then rounds to the stored lora_B exactly
            up = up.float() / (alpha / rank)
        modules[module] = LoraModule(down=down, up=up, alpha=alpha)
    if source_format in ("comfyui", "kohya") and not alpha_keys and not folded:
        notes.append(
            "no alpha keys and no ltxtrainer record: scale 1.0 (alpha = rank), as ComfyUI applies it"
        )
    return LtxLora(path, source_format, modules, adapter, folded, width, notes)


def _module_order(module: str) -> tuple[int, int]:
    """Block number, then the module's place in the block, so files list layers in model order."""
    _, block, name = module.split(".", 2)
    return int(block), list(BLOCK_LINEARS).index(name)


def _uniform_or_pattern(values: dict[str, float]) -> tuple[float, dict[str, float]]:
    common = collections.Counter(values.values()).most_common(1)[0][0]
    return common, {module: value for module, value in values.items() if value != common}


def diffusers_adapter_metadata(lora: LtxLora) -> dict:
    """LoraConfig kwargs diffusers builds the adapter from: the source's own, or made from the tensors."""
    ranks = {module: m.rank for module, m in lora.modules.items()}
    alphas = {module: m.alpha for module, m in lora.modules.items()}
    rank, rank_pattern = _uniform_or_pattern(ranks)
    alpha, alpha_pattern = _uniform_or_pattern(alphas)
    built = {
        "r": int(rank),
        "lora_alpha": _number(alpha),
        "target_modules": sorted(lora.modules, key=_module_order),
        "rank_pattern": {module: int(value) for module, value in rank_pattern.items()},
        "alpha_pattern": {module: _number(value) for module, value in alpha_pattern.items()},
    }
    from peft import (
        LoraConfig,
    )  # imported here: peft pulls in transformers, slow for a CLI that only converts

    # Only LoraConfig's own arguments: a peft adapter_config.json also holds peft_type, task_type, ...
    # that diffusers would pass to LoraConfig and fail on.
    accepted = {spec.name for spec in dataclasses.fields(LoraConfig) if spec.init}
    source = {key: value for key, value in (lora.adapter_metadata or {}).items() if key in accepted}
    # Keep the trainer's own record (target_modules, dropout, ...) when it agrees with the tensors.
    agrees = source.get("r") == built["r"] and float(source.get("lora_alpha", -1)) == float(alpha)
    if (
        agrees
        and not rank_pattern
        and not alpha_pattern
        and not source.get("rank_pattern")
        and not source.get("alpha_pattern")
        and not source.get("use_rslora")
    ):
        return source
    return {
        **{k: v for k, v in source.items() if k in ("lora_dropout", "init_lora_weights", "use_dora")},
        **built,
    }


def _folded_record(lora: LtxLora) -> dict:
    """Our metadata record of a folded file: the trained rank, alpha(s) and LoraConfig kwargs."""
    alpha, alpha_pattern = _uniform_or_pattern({module: m.alpha for module, m in lora.modules.items()})
    record = {
        "folded": True,
        "rank": lora.rank,
        "alpha": _number(alpha),
        "scale": alpha / lora.rank,
        "adapter_metadata": diffusers_adapter_metadata(lora),
    }
    if alpha_pattern:
        record["alphas"] = {module: _number(value) for module, value in alpha_pattern.items()}
    return record


def _folded_tensors(lora: LtxLora, prefix: str) -> dict[str, torch.Tensor]:
    """lora_A as is and lora_B times alpha/rank (in float32, cast to lora_A's dtype), under `prefix`."""
    tensors: dict[str, torch.Tensor] = {}
    for module, lora_module in lora.modules.items():
        up = lora_module.up
        tensors[f"{prefix}{module}.lora_A.weight"] = lora_module.down.contiguous()
        folded = up.float() * lora_module.scale
        tensors[f"{prefix}{module}.lora_B.weight"] = folded.to(lora_module.down.dtype).contiguous()
    return tensors


def diffusers_state_dict(lora: LtxLora) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of the diffusers file (`LTXPipeline.save_lora_weights` layout), folded.

    Like the trainer's own file: alpha/rank folded into lora_B and `lora_adapter_metadata` saying
    alpha = rank for every module, so diffusers before 0.35 (which ignore that alpha) load it at
    the trained strength too; the trained values go in our record.
    """
    adapter = diffusers_adapter_metadata(lora)
    rank_pattern = dict(adapter.get("rank_pattern") or {})
    loaded_as = {**adapter, "lora_alpha": adapter["r"], "alpha_pattern": rank_pattern}
    packed = {f"{DIFFUSERS_COMPONENT}.{key}": value for key, value in loaded_as.items()}
    metadata = {
        "format": "pt",
        DIFFUSERS_METADATA_KEY: json.dumps(packed, indent=2, sort_keys=True),
        LTXTRAINER_METADATA_KEY: json.dumps(_folded_record(lora), sort_keys=True),
    }
    return _folded_tensors(lora, PREFIXES["diffusers"]), metadata


def comfyui_state_dict(lora: LtxLora) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of the file both ComfyUI and diffusers load at the trained strength."""
    metadata = {"format": "pt", LTXTRAINER_METADATA_KEY: json.dumps(_folded_record(lora), sort_keys=True)}
    return _folded_tensors(lora, PREFIXES["comfyui"]), metadata


def _atomic_save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], destination: Path) -> None:
    """Write beside the destination, then rename: a crash never leaves a half-written LoRA."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.{os.getpid()}.partial")
    try:
        save_file(tensors, str(partial), metadata=metadata)
        replace_with_retry(partial, destination)  # ComfyUI may hold the old file open on Windows
    finally:
        partial.unlink(missing_ok=True)


def _already_converted(destination: Path, source_hash: str, direction: str) -> bool:
    """True when `destination` was written by us from exactly this source in this direction."""
    if not destination.is_file():
        return False
    try:
        with safe_open(str(destination), framework="pt") as handle:
            record = json.loads((handle.metadata() or {}).get(LTXTRAINER_METADATA_KEY, "{}"))
    except Exception:
        return False
    return record.get("source_sha256") == source_hash and record.get("direction") == direction


def _convert(source: str | os.PathLike, destination: str | os.PathLike | None, direction: str) -> Path:
    path = resolve_lora_file(source)
    stem = path.stem.removesuffix("_comfy") if direction == "diffusers" else path.stem
    target = (
        Path(destination).expanduser() if destination else path.with_name(f"{stem}_{direction}.safetensors")
    )
    if target.resolve() == path.resolve():
        raise LoraFormatError(f"The output {target} would overwrite the input; choose another --output.")
    source_hash = file_sha256(path)
    if _already_converted(target, source_hash, direction):
        say(f"Skipped: {target} is already the {direction} conversion of {path.name}.")
        return target
    tensors, metadata = _load_safetensors(path)
    if is_ltx2_lora(tensors, metadata):
        tensors, metadata = _ltx2_conversion(tensors, metadata, path, direction)
        record = json.loads(metadata[LTXTRAINER_METADATA_KEY])
        record.update(direction=direction, source=path.name, source_sha256=source_hash)
        metadata[LTXTRAINER_METADATA_KEY] = json.dumps(record, sort_keys=True)
        _atomic_save(tensors, metadata, target)
        say(f"LTX-2 LoRA: {len(tensors) // 2} modules, rank {record['rank']}, alpha {record['alpha']} -> {target}")
        return target
    lora = read_lora(path)
    if direction == "comfy":
        if lora.format == "comfyui" and lora.folded:
            raise LoraFormatError(
                f"{path} is already a ComfyUI LoRA with alpha folded in; nothing to convert."
            )
        tensors, metadata = comfyui_state_dict(lora)
    else:
        # An unfolded diffusers file at alpha != rank is worth folding (diffusers < 0.35 misread it).
        if lora.format == "diffusers" and (lora.folded or all(m.scale == 1 for m in lora.modules.values())):
            raise LoraFormatError(f"{path} is already a diffusers LoRA that every version loads; nothing to convert.")
        tensors, metadata = diffusers_state_dict(lora)
    record = json.loads(metadata[LTXTRAINER_METADATA_KEY])
    record.update(direction=direction, source=path.name, source_format=lora.format, source_sha256=source_hash)
    metadata[LTXTRAINER_METADATA_KEY] = json.dumps(record, sort_keys=True)
    _atomic_save(tensors, metadata, target)
    for note in lora.notes:
        say(f"Note: {note}.")
    say(f"{lora.describe()} -> {target}")
    return target


# Modules only LTX-2's transformer blocks have (audio stream, audio<->video attention).
_LTX2_ONLY_MODULES = re.compile(r"\.(audio_attn1|audio_attn2|audio_to_video_attn|video_to_audio_attn|audio_ff)\.")


def is_ltx2_lora(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bool:
    """An LTX-2 LoRA: our record says so (a video-only LTX-2 LoRA has 0.9-like keys), or it adapts audio modules."""
    record = json.loads(metadata.get(LTXTRAINER_METADATA_KEY, "{}"))
    return record.get("family") == "ltx2" or any(_LTX2_ONLY_MODULES.search(key) for key in tensors)


def _ltx2_conversion(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path, direction: str
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """An LTX-2 LoRA (diffusers `transformer.` or ComfyUI `diffusion_model.` keys) in the other format.

    Module names inside the blocks are the same in both, so the file is renamed; ComfyUI's file is
    `ltx2.comfyui_state_dict` of the unfolded adapter (alpha/rank folded back in). Both are folded,
    so `LTX2Pipeline.load_lora_weights` and ComfyUI load them at the trained strength.
    """
    from ltxtrainer.models import ltx2

    source_format = detect_format(list(tensors), path)
    if source_format not in ("diffusers", "comfyui") or any(key.endswith(".alpha") for key in tensors):
        raise LoraFormatError(
            f"{path} is an LTX-2 LoRA in {source_format} layout (or with .alpha keys); only diffusers "
            "(transformer.) and ComfyUI (diffusion_model.) LTX-2 files without .alpha keys are converted."
        )
    if (source_format == "comfyui") == (direction == "comfy"):
        raise LoraFormatError(f"{path} is already a {source_format} LTX-2 LoRA; nothing to convert.")
    record = json.loads(metadata.get(LTXTRAINER_METADATA_KEY, "{}"))
    prefix = PREFIXES[source_format]
    state = {key.removeprefix(prefix): value for key, value in tensors.items()}
    rank = next(value.shape[0] for key, value in state.items() if key.endswith(".lora_A.weight"))
    # A file without our record loads at alpha = rank everywhere (ComfyUI: no .alpha keys; diffusers:
    # the metadata's alpha is applied only by 0.35+, which we do not rely on); it is taken as folded.
    alpha = float(record.get("alpha", rank))
    scale = alpha / rank if record.get("folded", True) and "alpha" in record else 1.0
    unfolded = {key: value.float() / scale if ".lora_B." in key else value for key, value in state.items()}
    # An IC-LoRA is useless without its reference scale: it goes into the converted file too.
    kept = {key: metadata[key] for key in (REFERENCE_DOWNSCALE_METADATA_KEY,) if key in metadata}
    if direction == "comfy":
        folded, new_metadata = ltx2.comfyui_state_dict(unfolded, rank, alpha)
        key_dtype = {ltx2.COMFYUI_PREFIX + key: value.dtype for key, value in state.items()}
        return {key: value.to(key_dtype[key]) for key, value in folded.items()}, {**new_metadata, **kept}
    converted = {f"{DIFFUSERS_COMPONENT}.{key}": value.contiguous() for key, value in state.items()}
    new_record = {"family": "ltx2", "folded": True, "rank": rank, "alpha": _number(alpha), "scale": alpha / rank}
    return converted, {"format": "pt", LTXTRAINER_METADATA_KEY: json.dumps(new_record, sort_keys=True), **kept}


def to_comfyui(src: str | os.PathLike, dst: str | os.PathLike | None = None) -> Path:
    """Write the file ComfyUI and diffusers both load (default `<name>_comfy.safetensors` beside `src`)."""
    return _convert(src, dst, "comfy")


def to_diffusers(src: str | os.PathLike, dst: str | os.PathLike | None = None) -> Path:
    """Write a diffusers LoRA (alpha in `lora_adapter_metadata`) from a ComfyUI, kohya or peft file.

    Default output: `<name without _comfy>_diffusers.safetensors` beside `src`, so the trainer's
    master file is never overwritten.
    """
    return _convert(src, dst, "diffusers")


def _safetensors_dtype(folder: Path) -> torch.dtype:
    """The stored dtype of a transformer folder's weights, so merging a bf16 13B stays bf16 (26 GB, not 52)."""
    names = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
    for weights in sorted(folder.glob("*.safetensors")):
        with safe_open(str(weights), framework="pt") as handle:
            for key in handle.keys():
                return names.get(handle.get_slice(key).get_dtype(), torch.float32)
    return torch.float32


def _transformer_folder(model_path: Path) -> Path:
    """A model folder's transformer/ subfolder, or the transformer folder itself."""
    from ltxtrainer.models.folder import resolve_model_path

    folder = resolve_model_path(model_path)
    if (folder / "transformer" / "config.json").is_file():
        return folder / "transformer"
    if (folder / "config.json").is_file():
        return folder
    raise LoraFormatError(
        f"No LTX-Video transformer found at {folder}: expected transformer/config.json (a diffusers model "
        "folder) or config.json (a transformer folder)."
    )


def _check_fits(lora: LtxLora, transformer: torch.nn.Module) -> None:
    """Every adapted module must exist in this transformer with the LoRA's shapes."""
    for module, lora_module in lora.modules.items():
        try:
            layer = transformer.get_submodule(module)
        except AttributeError:
            raise LoraFormatError(f"{lora.path}: the base transformer has no module '{module}'.") from None
        expected = (layer.out_features, layer.in_features)
        got = (lora_module.up.shape[0], lora_module.down.shape[1])
        if expected != got:
            raise LoraFormatError(
                f"{lora.path}: '{module}' is {got[1]} -> {got[0]} in the LoRA but {expected[1]} -> {expected[0]} "
                "in the base transformer; the LoRA was trained for another LTX-Video size."
            )


def merge_lora(
    model_path_or_transformer: str | os.PathLike | torch.nn.Module,
    lora_path: str | os.PathLike,
    strength: float,
    output_dir: str | os.PathLike,
    overwrite: bool = False,
) -> Path:
    """Fuse the LoRA into the base transformer at `strength`; save a diffusers transformer folder.

    Uses diffusers' own `load_lora_adapter` + `fuse_lora(lora_scale=strength)` + `unload_lora`, so the
    merged weights are exactly what inference with the LoRA loaded computes. A transformer object
    passed in is merged in place. Re-running with the same inputs skips; a different existing
    folder is replaced only with `overwrite`.
    """
    output_dir = Path(output_dir).expanduser()
    lora_file = resolve_lora_file(lora_path)
    in_memory = isinstance(model_path_or_transformer, torch.nn.Module)
    record = {
        "lora": str(lora_file.resolve()),
        "lora_sha256": file_sha256(lora_file),
        "strength": float(strength),
        "model": None if in_memory else str(_transformer_folder(Path(model_path_or_transformer)).resolve()),
    }
    marker = output_dir / MERGE_RECORD
    if not in_memory and marker.is_file() and (output_dir / "config.json").is_file():
        if json.loads(marker.read_text(encoding="utf-8")) == record:
            say(f"Skipped: {output_dir} already holds this merge (strength {strength:g}).")
            return output_dir
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise LoraFormatError(
            f"{output_dir} already exists and holds something else; choose another output folder or allow "
            "overwriting (--overwrite)."
        )

    lora = read_lora(lora_file)
    if in_memory:
        transformer = model_path_or_transformer
        if getattr(transformer, "peft_config", None):
            raise LoraFormatError(
                "The transformer already carries LoRA adapters; merge into a clean base model."
            )
    else:
        from diffusers import LTXVideoTransformer3DModel

        folder = Path(record["model"])
        transformer = LTXVideoTransformer3DModel.from_pretrained(
            folder, torch_dtype=_safetensors_dtype(folder), local_files_only=True, use_safetensors=True
        )
    _check_fits(lora, transformer)
    tensors, metadata = diffusers_state_dict(lora)
    adapter_name = "ltxtrainer_merge"
    # Keys and metadata exactly as the diffusers file holds them ("transformer."-prefixed).
    transformer.load_lora_adapter(
        tensors,
        prefix=DIFFUSERS_COMPONENT,
        adapter_name=adapter_name,
        metadata=json.loads(metadata[DIFFUSERS_METADATA_KEY]),
    )
    transformer.fuse_lora(lora_scale=float(strength), adapter_names=[adapter_name])
    transformer.unload_lora()

    staging = output_dir.with_name(f".{output_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    transformer.save_pretrained(staging, safe_serialization=True)
    (staging / MERGE_RECORD).write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
    if output_dir.exists():
        shutil.rmtree(output_dir)
    replace_with_retry(staging, output_dir)
    say(f"Merged {lora.describe()} at strength {strength:g} -> {output_dir}")
    return output_dir
