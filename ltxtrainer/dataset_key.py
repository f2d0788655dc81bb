"""The identity of a set of precomputed data: a key made of everything that produced it.

Latents and text embeddings of one dataset live in one folder per key,

    <dataset>/.precomputed/<key>/latents/...  conditions/...  manifest.json

so making data for another resolution, text length or caption set never writes into a folder a
run already trains on: two keys never share a folder, and a run's config names its key folder.
The key starts with what a person recognises (`768x512x49_t256_`) and ends with a short hash of
the clips (path, size, modification time), their captions, the buckets, the text length, the
short-clip rule and the VAE and text encoder (fingerprints of their files, not their path, so a
moved model folder keeps its keys).

This module stays light (no torch) because the pipeline computes keys before it starts a stage.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import av

from ltxtrainer.media import VIDEO_EXTENSIONS

PRECOMPUTED = ".precomputed"
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | IMAGE_EXTENSIONS
MANIFEST = "manifest.json"
# T5 tokens per caption, as the reference trainer and diffusers' LTXConditionPipeline encode them
# (diffusers' LTXPipeline default of 128 cuts a captioner's paragraph short).
DEFAULT_TEXT_LENGTH = 256
# Enough of each weight file to tell two checkpoints apart without reading 10 GB of T5.
_FINGERPRINT_BYTES = 1 << 20
_HASH_CHARS = 10


def find_media(dataset_dir: Path) -> list[Path]:
    """Media files under the dataset, skipping hidden folders and our own `.precomputed`."""
    found = []
    for path in Path(dataset_dir).rglob("*"):
        parts = path.relative_to(dataset_dir).parts
        if any(part.startswith(".") for part in parts):
            continue
        if path.suffix.lower() in MEDIA_EXTENSIONS and path.is_file():
            found.append(path)
    return sorted(found)


def model_fingerprints(model_dir: Path) -> dict[str, str]:
    """Short hashes of the VAE and of the text encoder + tokenizer: configs, weight sizes, weight heads/tails."""

    def digest(*folders: str) -> str:
        hasher = hashlib.sha256()
        for name in folders:
            for file in sorted((Path(model_dir) / name).iterdir()):
                if not file.is_file():
                    continue
                hasher.update(f"{name}/{file.name}:{file.stat().st_size}".encode())
                with open(file, "rb") as handle:
                    hasher.update(handle.read(_FINGERPRINT_BYTES))
                    if file.stat().st_size > 2 * _FINGERPRINT_BYTES:
                        handle.seek(-_FINGERPRINT_BYTES, os.SEEK_END)
                        hasher.update(handle.read())
        return hasher.hexdigest()[:16]

    return {"vae": digest("vae"), "text_encoder": digest("text_encoder", "tokenizer")}


def _file_sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def file_stamps(folder: Path, files: list[Path]) -> list[tuple[str, int, int]]:
    """(relative path, size, modification time) of each file: what changes when a file is edited."""
    stamps = []
    for path in files:
        stat = path.stat()
        stamps.append((path.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns))
    return stamps


def data_key(dataset_dir: Path, buckets: str, text_length: int | None, on_short: str, model_dir: Path,
             extra: dict | None = None) -> str:
    """`<buckets>_t<text length>_<hash>`: the folder name under `.precomputed/` for this data.

    `text_length` None (LTX-2: Gemma's length is fixed) leaves the `_t...` part out. `extra` holds
    further inputs of the data (IC-LoRA references) that join the hash; without it the key is what
    it always was, so existing data keeps its folder.
    """
    dataset_dir = Path(dataset_dir)
    media = []
    for path in find_media(dataset_dir):
        stat = path.stat()
        media.append((path.relative_to(dataset_dir).as_posix(), stat.st_size, stat.st_mtime_ns,
                      _file_sha256(path.with_suffix(".txt"))))
    inputs = {
        "media": media,
        "captions_json": _file_sha256(dataset_dir / "captions.json"),
        "buckets": buckets,
        "on_short": on_short,
        "model": model_fingerprints(model_dir),
    }
    if text_length is not None:
        inputs["text_length"] = text_length
    if extra:
        inputs["extra"] = extra
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode("utf-8")).hexdigest()[:_HASH_CHARS]
    length = "" if text_length is None else f"_t{text_length}"
    return f"{buckets.replace(';', '+')}{length}_{digest}"


@functools.lru_cache(maxsize=64)
def _all_have_sound(folder: str, stamps: tuple[tuple[str, int, int], ...]) -> bool:
    for relative, _, _ in stamps:
        with av.open(str(Path(folder) / relative)) as container:
            if not container.streams.audio:
                return False
    return True


def all_have_sound(dataset_dir: Path) -> bool:
    """Whether every media file of the dataset has a sound track (a still image or a silent clip has none).

    Each file is opened once per version of it (the answer is kept per path, size and modification
    time), so the pipeline may ask at every stage without probing the clips again.
    """
    dataset_dir = Path(dataset_dir)
    files = find_media(dataset_dir) if dataset_dir.is_dir() else []
    return _all_have_sound(str(dataset_dir), tuple(file_stamps(dataset_dir, files)))


def key_folder(dataset_dir: Path, key: str) -> Path:
    return Path(dataset_dir) / PRECOMPUTED / key


def manifest_digest(folder: Path) -> str | None:
    """A hash of what a data folder's manifest says its files were made from (None without one).

    It changes whenever a sample is added, removed or made from other inputs; where the model
    folder lives is left out, so moving the models does not count as a change of data.
    """
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    samples = manifest.get("samples") if isinstance(manifest, dict) else None
    if not isinstance(samples, dict):
        return None
    made_from = {
        relative: {kind: {k: v for k, v in record.items() if k != "model_path"} for kind, record in entry.items()}
        for relative, entry in samples.items()
    }
    return hashlib.sha256(json.dumps(made_from, sort_keys=True).encode("utf-8")).hexdigest()[:32]
