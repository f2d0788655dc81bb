"""Precomputing VAE latents and T5 text embeddings, one file per sample, once.

Training reads these files instead of running the VAE and T5-XXL at every step. The layout is
the reference LTX-Video-Trainer's (FIELD_NOTES §2), so `data.PrecomputedDataset` reads data
made here or there alike. OUT is `<dataset>/.precomputed` by default (the reference layout) and
`<dataset>/.precomputed/<data key>` when the pipeline runs this stage (`ltxtrainer.dataset_key`:
one folder per resolution, text length and caption set, so no run's data changes under it):

    OUT/latents/<media path, suffix -> .pt>     {"latents" [T, C], "num_frames", "height", "width", "fps"}
    OUT/conditions/<media path, suffix -> .pt>  {"prompt_embeds" [L, D], "prompt_attention_mask" bool [L]}
    OUT/reference_latents/<media path -> .pt>   the latents layout, of the clip's IC-LoRA reference video
                                                (only with `reference_dir`; cut and resized exactly as the clip)
    OUT/manifest.json                           what each file was made from

The manifest makes the stage idempotent: a sample is recomputed only when what its file depends
on changed: latents on the clip file, its bucket and the VAE; text embeddings on the caption,
`max_sequence_length` and the text encoder; reference latents on the reference file, the bucket
and the VAE. Models are identified by a fingerprint of their
configs and weight files (not their path, so moving a model folder costs nothing); the path is
recorded for people reading the manifest. A sample that fails (unreadable clip, no caption,
too short) loses any stale files from an earlier run, so training never uses outdated data.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ltxtrainer.atomic import write_atomic, write_text_atomic
from ltxtrainer.buckets import Bucket, assign_bucket, parse_buckets, shrink_frames
from ltxtrainer.config import REFERENCE_LATENTS_DIR
from ltxtrainer.data import AUDIO_LATENTS_DIR
from ltxtrainer.dataset_key import (
    DEFAULT_TEXT_LENGTH,
    IMAGE_EXTENSIONS,
    MANIFEST,
    MEDIA_EXTENSIONS,
    PRECOMPUTED,
    find_media,
    model_fingerprints,
)
from ltxtrainer.media import MediaError, VideoInfo, load_clip, probe_video, write_video
from ltxtrainer.models.family import family_name
from ltxtrainer.models.folder import require_model_folder
from ltxtrainer.models.ltx_video import (
    denormalize_latents,
    encode_prompts,
    latent_size,
    load_text_encoder,
    load_tokenizer,
    load_vae,
    normalize_latents,
    pack_latents,
    unpack_latents,
)
from ltxtrainer.precompute_ltx2 import (
    ClipToEncode,
    ReferenceSizeError,
    has_sound,
    precompute_ltx2_references,
    precompute_ltx2_samples,
    reference_size,
    vae_spatial_compression,
)
from ltxtrainer.progress import emit, say, track
from ltxtrainer.reference import REFERENCE_SUFFIX, find_reference

MANIFEST_VERSION = 1
REFERENCE_DOWNSCALE_FACTORS = (1, 2, 4)  # as config.ConditioningConfig.reference_downscale_factor allows
# Columns of a captions table that name a clip's reference video: the reference LTX-Video-Trainer's
# IC-LoRA datasets use reference_path, Lightricks' LTX-2 trainer reference_video.
REFERENCE_COLUMNS = ("reference_path", "reference_video")
# A reference may run at a slightly different rate after a re-encode (29.97 vs 30); beyond this
# it shows another moment than the clip's frame beside it.
REFERENCE_FPS_TOLERANCE = 0.01
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class PreprocessError(ValueError):
    """The dataset cannot be preprocessed at all; the message says what to fix."""


@dataclass
class PreprocessReport:
    """Media paths relative to the dataset: what was (re)computed, already up to date, or failed why."""

    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)  # precomputed files of media no longer in the dataset
    shrunk: dict[str, str] = field(default_factory=dict)  # clips shorter than their bucket: "48 -> 41 frames"


@dataclass
class _Sample:
    relative: str  # posix path relative to the dataset: the manifest key
    path: Path
    caption: str
    bucket: Bucket
    fingerprint: dict  # the clip file's size and mtime
    reference: Path | None = None  # the IC-LoRA reference video (only when preprocessing with references)
    reference_fingerprint: dict | None = None  # its file name, size and mtime
    needs_latents: bool = False
    needs_conditions: bool = False
    needs_reference: bool = False


def precomputed_paths(output_dir: Path, relative: str) -> tuple[Path, Path]:
    """(latents file, conditions file) in the data folder `output_dir` of the media file at `relative`."""
    name = Path(relative).with_suffix(".pt")
    return Path(output_dir) / "latents" / name, Path(output_dir) / "conditions" / name


def reference_latents_path(output_dir: Path, relative: str) -> Path:
    """The reference latents file of the media file at `relative`: named after the clip, not the
    reference, as the reference trainer names them, so the trainer pairs them by name."""
    return Path(output_dir) / REFERENCE_LATENTS_DIR / Path(relative).with_suffix(".pt")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PreprocessError(
            f"device {device} was asked for but this torch ({torch.__version__}) sees no CUDA GPU; "
            "use --device cpu or install the CUDA build of torch"
        )
    return device


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """bf16 on a GPU, fp32 on the CPU unless asked otherwise (CPU half precision is slow, not small)."""
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise PreprocessError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


# --- finding samples and their captions -----------------------------------------------------------


def _read_captions_json(dataset_dir: Path) -> tuple[dict[str, str], dict[str, Path]]:
    """(caption, reference video) per media path relative to the dataset, from captions.json.

    A reference column (REFERENCE_COLUMNS) is read where an entry has one, relative to the dataset
    folder like media_path, or absolute.
    """
    path = dataset_dir / "captions.json"
    if not path.is_file():
        return {}, {}
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise PreprocessError(f"{path} is not valid JSON ({error}); fix or delete it and caption again") from None
    if not isinstance(entries, list):
        raise PreprocessError(f'{path} must hold a list of {{"media_path": ..., "caption": ...}} entries')
    captions, references = {}, {}
    for entry in entries:
        if not isinstance(entry, dict) or "media_path" not in entry:
            raise PreprocessError(f'{path}: every entry needs "media_path" and "caption", found {entry!r}')
        media_path = Path(str(entry["media_path"]))
        if media_path.is_absolute():
            try:
                media_path = media_path.relative_to(dataset_dir.resolve())
            except ValueError:
                media_path = Path(os.path.relpath(media_path, dataset_dir))
        captions[media_path.as_posix()] = str(entry.get("caption") or "")
        reference = next((entry[column] for column in REFERENCE_COLUMNS if entry.get(column)), None)
        if reference is not None:
            references[media_path.as_posix()] = dataset_dir / str(reference)  # an absolute path stays itself
    return captions, references


def _caption_of(path: Path, relative: str, captions: dict[str, str]) -> str:
    """The `.txt` beside a clip wins over captions.json: it is the file people edit by hand."""
    text_file = path.with_suffix(".txt")
    if text_file.is_file():
        return text_file.read_text(encoding="utf-8").strip()
    return captions.get(relative, "").strip()


def _clip_fingerprint(path: Path) -> dict:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _reference_fingerprint(path: Path) -> dict:
    """The name counts too: another file chosen as the reference (a user's own beside ours) is
    another reference even at the same size and time; the folder does not (moving one is free)."""
    return {"name": path.name, **_clip_fingerprint(path)}


def _caption_hash(caption: str) -> str:
    return hashlib.sha256(caption.encode("utf-8")).hexdigest()[:16]


# --- the manifest ----------------------------------------------------------------------------------


def _manifest_path(output_dir: Path) -> Path:
    return output_dir / MANIFEST


def _load_manifest(output_dir: Path) -> dict:
    path = _manifest_path(output_dir)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        # Missing or torn: every sample is recomputed, which is slow but never wrong.
        return {"version": MANIFEST_VERSION, "samples": {}}
    if manifest.get("version") != MANIFEST_VERSION or not isinstance(manifest.get("samples"), dict):
        return {"version": MANIFEST_VERSION, "samples": {}}
    return manifest


def _save_manifest(output_dir: Path, manifest: dict) -> None:
    write_text_atomic(_manifest_path(output_dir), json.dumps(manifest, indent=1, ensure_ascii=False))


def _latents_record(sample: _Sample, model: dict) -> dict:
    return {"bucket": str(sample.bucket), "clip": sample.fingerprint, "model_path": model["path"], "vae": model["vae"]}


def _reference_record(sample: _Sample, model: dict) -> dict:
    return {
        "bucket": str(sample.bucket),
        "reference": sample.reference_fingerprint,
        "model_path": model["path"],
        "vae": model["vae"],
    }


def _conditions_record(sample: _Sample, model: dict, max_sequence_length: int) -> dict:
    return {
        "caption_sha256": _caption_hash(sample.caption),
        "max_sequence_length": max_sequence_length,
        "model_path": model["path"],
        "text_encoder": model["text_encoder"],
    }


def _same(old: dict | None, new: dict) -> bool:
    """Records match on everything except where the model lives."""
    if not old:
        return False
    return {k: v for k, v in old.items() if k != "model_path"} == {k: v for k, v in new.items() if k != "model_path"}


def _remove_sample_files(output_dir: Path, relative: str, manifest: dict) -> bool:
    """Delete the files this stage wrote for a sample (those in the manifest); True if there were any.

    Files the manifest does not list (data preprocessed by the reference trainer, or a name
    shared by two media files) are never touched.
    """
    if manifest["samples"].pop(relative, None) is None:
        return False
    for path in precomputed_paths(output_dir, relative):
        path.unlink(missing_ok=True)
    (Path(output_dir) / AUDIO_LATENTS_DIR / Path(relative).with_suffix(".pt")).unlink(missing_ok=True)  # LTX-2
    reference_latents_path(output_dir, relative).unlink(missing_ok=True)
    return True


# --- planning --------------------------------------------------------------------------------------


def _plan(
    dataset_dir: Path, buckets: list[Bucket], on_short: str, report: PreprocessReport,
    reference_dir: Path | None = None,
) -> list[_Sample]:
    """Every captioned, readable media file with its bucket (and, with `reference_dir`, a usable
    reference video); the rest go to `report.failed`."""
    captions, listed_references = _read_captions_json(dataset_dir)
    paths = {path.relative_to(dataset_dir).as_posix(): path for path in find_media(dataset_dir)}
    for relative in captions:
        paths.setdefault(relative, dataset_dir / relative)
    references: dict[str, Path | None] = {}
    if reference_dir is not None:
        references = _pair_references(dataset_dir, paths, listed_references, reference_dir)
        paths = {relative: path for relative, path in paths.items() if relative in references}
    samples, taken = [], {}
    for relative in sorted(paths):
        path = paths[relative]
        if ".." in Path(relative).parts:
            report.failed[relative] = "lies outside the dataset folder; move it inside (captions.json names it)"
            continue
        stem = Path(relative).with_suffix("").as_posix()
        if stem in taken:
            report.failed[relative] = f"has the same name as {taken[stem]}, so their precomputed files would collide; rename one"
            continue
        taken[stem] = relative
        caption = _caption_of(path, relative, captions)
        if not caption:
            report.failed[relative] = "no caption (neither a .txt beside it nor an entry in captions.json)"
            continue
        try:
            info = probe_video(path)
        except MediaError as error:
            report.failed[relative] = str(error)
            continue
        num_frames = 1 if path.suffix.lower() in IMAGE_EXTENSIONS else info.num_frames
        bucket = assign_bucket(info.width, info.height, num_frames, buckets)
        if num_frames < bucket.num_frames:
            if on_short == "skip":
                report.failed[relative] = (
                    f"has {num_frames} frames, fewer than its bucket {bucket} needs "
                    "(use --on-short shrink to train it with fewer frames, or a bucket of at most that many frames)"
                )
                continue
            report.shrunk[relative] = f"{num_frames} frames, trained as {shrink_frames(num_frames)} instead of {bucket.num_frames}"
            bucket = bucket._replace(num_frames=shrink_frames(num_frames))
        sample = _Sample(relative, path, caption, bucket, _clip_fingerprint(path))
        if reference_dir is not None:
            problem = _check_reference(sample, references[relative], info, num_frames, reference_dir)
            if problem:
                report.failed[relative] = problem
                continue
            sample.reference = references[relative]
            sample.reference_fingerprint = _reference_fingerprint(sample.reference)
        samples.append(sample)
    return samples


def _pair_references(
    dataset_dir: Path, paths: dict[str, Path], listed: dict[str, Path], reference_dir: Path
) -> dict[str, Path | None]:
    """Each training medium's reference video (None: none found), leaving out the media that are
    references themselves: those inside `reference_dir` when it lies in the dataset, those named
    `*_reference.*` (as `compute_references` names them, and never takes them as clips either) and
    those another clip's reference is.

    A reference named in captions.json wins over the folder: it is the user's explicit choice.
    Raises PreprocessError when `reference_dir` is missing or not one medium has a reference.
    """
    if not reference_dir.is_dir():
        raise PreprocessError(
            f"reference folder not found: {reference_dir} (make the references with scripts/compute_reference.py)"
        )
    separate_folder = reference_dir.resolve() != dataset_dir.resolve()
    references: dict[str, Path | None] = {}
    for relative, path in paths.items():
        reference = listed.get(relative) or find_reference(relative, reference_dir)
        if reference is not None and reference.resolve() == path.resolve():
            reference = None  # a folder of references that is the dataset itself: `<stem>.mp4` is the clip
        references[relative] = reference
    taken = {reference.resolve() for reference in references.values() if reference is not None}
    if not taken:
        raise PreprocessError(
            f"not one of the {len(paths)} clip(s) has a reference video in {reference_dir}: name each "
            f"<clip name>{REFERENCE_SUFFIX}.mp4 (scripts/compute_reference.py makes them) or <clip name>.mp4, "
            "in the clip's own sub-folder, or list them in captions.json's reference_path"
        )
    return {
        relative: reference
        for relative, reference in references.items()
        if paths[relative].resolve() not in taken
        and not Path(relative).stem.endswith(REFERENCE_SUFFIX)
        and not (separate_folder and paths[relative].resolve().is_relative_to(reference_dir.resolve()))
    }


def _check_reference(
    sample: _Sample, reference: Path | None, clip_info: VideoInfo, clip_frames: int, reference_dir: Path
) -> str | None:
    """Why `reference` cannot guide `sample` (missing, unreadable, another frame rate, too short), or None."""
    relative = Path(sample.relative)
    if reference is None:
        return (
            f"no reference video: neither {relative.stem}{REFERENCE_SUFFIX}.<video> nor {relative.stem}.<video> "
            f"is in {reference_dir / relative.parent}"
        )
    try:
        info = probe_video(reference)
    except MediaError as error:
        return f"its reference video cannot be used: {error}"
    if clip_frames > 1 and abs(info.fps - clip_info.fps) > REFERENCE_FPS_TOLERANCE * clip_info.fps:
        return (
            f"its reference {reference.name} runs at {info.fps:g} fps and the clip at {clip_info.fps:g} fps; "
            "they must match frame for frame (make the reference from the clip itself)"
        )
    if info.num_frames < sample.bucket.num_frames:
        return (
            f"its reference {reference.name} has {info.num_frames} frames, fewer than the "
            f"{sample.bucket.num_frames} its clip trains with"
        )
    return None


# --- the work --------------------------------------------------------------------------------------


def _save_tensors(path: Path, tensors: dict) -> None:
    write_atomic(path, lambda temp: torch.save(tensors, temp))


def _encode_captions(
    samples: list[_Sample], model_dir: Path, device: torch.device, dtype: torch.dtype, max_sequence_length: int,
    output_dir: Path, manifest: dict, model: dict,
) -> None:
    # T5 overflows to inf/NaN in fp16 (its activations exceed 65504); bf16 has fp32's range.
    text_dtype = torch.bfloat16 if dtype == torch.float16 else dtype
    say(f"Loading the text encoder ({text_dtype}) on {device} for {len(samples)} caption(s)")
    tokenizer = load_tokenizer(model_dir)
    text_encoder = load_text_encoder(model_dir, dtype=text_dtype, device=device)
    for sample in track(samples, stage="preprocess:text", unit="caption"):
        embeds, mask = encode_prompts(tokenizer, text_encoder, [sample.caption], max_sequence_length)
        _, conditions_path = precomputed_paths(output_dir, sample.relative)
        _save_tensors(
            conditions_path,
            {"prompt_embeds": embeds[0].float().cpu(), "prompt_attention_mask": mask[0].bool().cpu()},
        )
        entry = manifest["samples"].setdefault(sample.relative, {})
        entry.pop("ltx2", None)  # an LTX-2 record of the file just overwritten
        entry["conditions"] = _conditions_record(sample, model, max_sequence_length)
        _save_manifest(output_dir, manifest)
    # Free T5-XXL (~9.5 GB in bf16) before the VAE works, so a 24 GB card holds only one of them.
    del text_encoder, tokenizer
    _free_memory(device)


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@torch.no_grad()
def encode_frames(vae, frames: np.ndarray) -> torch.Tensor:
    """[F, H, W, 3] uint8 frames -> normalised, packed latents [T, C] as the LTX pipeline expects them."""
    param = next(vae.parameters())
    video = torch.from_numpy(frames).to(device=param.device, dtype=torch.float32)
    video = (video / 127.5 - 1.0).permute(3, 0, 1, 2).unsqueeze(0).to(param.dtype)  # [1, 3, F, H, W] in [-1, 1]
    # The mode (the posterior mean), not a sample: the file is made once and reused every epoch,
    # so a sampled latent would bake one fixed draw of noise into all of training; the mode is
    # also deterministic, so re-running the stage reproduces the same files.
    latents = vae.encode(video).latent_dist.mode()
    latents = normalize_latents(latents.float(), vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    return pack_latents(latents, 1, 1)[0]


@torch.no_grad()
def decode_latents(vae, record: dict) -> np.ndarray:
    """A latents file's dictionary -> [F, H, W, 3] uint8 frames (the inverse of `encode_frames`)."""
    param = next(vae.parameters())
    latents = record["latents"].unsqueeze(0).float().to(param.device)
    latents = unpack_latents(latents, record["num_frames"], record["height"], record["width"], 1, 1)
    latents = denormalize_latents(latents, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    # VAEs with timestep conditioning (0.9.1) take the decode timestep; 0 means "clean latents".
    temb = torch.zeros(1, device=param.device, dtype=param.dtype) if vae.config.timestep_conditioning else None
    video = vae.decode(latents.to(param.dtype), temb, return_dict=False)[0][0]  # [3, F, H, W]
    video = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return video.permute(1, 2, 3, 0).cpu().numpy()


def _encode_clips(
    samples: list[_Sample], vae, on_short: str, output_dir: Path, manifest: dict, model: dict,
    report: PreprocessReport,
) -> None:
    """Clip latents where `needs_latents`, reference latents where `needs_reference`, one sample at a time."""
    for sample in track(samples, stage="preprocess:latents", unit="clip"):
        bucket = sample.bucket
        num_frames = bucket.num_frames
        entry = manifest["samples"].setdefault(sample.relative, {})
        if sample.needs_latents:
            try:
                frames, fps = load_clip(sample.path, bucket.width, bucket.height, num_frames, on_short=on_short)
            except MediaError as error:
                report.failed[sample.relative] = str(error)
                continue
            num_frames = frames.shape[0]  # fewer than the bucket when the file held fewer than it claimed
            latents_path, _ = precomputed_paths(output_dir, sample.relative)
            _save_tensors(latents_path, _latents_file(vae, frames, fps))
            entry.pop("ltx2", None)  # an LTX-2 record of the file just overwritten
            entry["latents"] = _latents_record(sample, model)
        if sample.needs_reference:
            # The reference is cut exactly as its clip: the same first frames, resize and centre crop.
            try:
                frames, fps = load_clip(sample.reference, bucket.width, bucket.height, num_frames, on_short="skip")
            except MediaError as error:
                report.failed[sample.relative] = f"its reference video cannot be used: {error}"
                continue
            _save_tensors(reference_latents_path(output_dir, sample.relative), _latents_file(vae, frames, fps))
            entry.pop("ltx2_reference", None)  # an LTX-2 record of the file just overwritten
            entry["reference"] = _reference_record(sample, model)
        _save_manifest(output_dir, manifest)


def _latents_file(vae, frames: np.ndarray, fps: float) -> dict:
    """The latents file's dictionary (the reference trainer's layout) of [F, H, W, 3] uint8 frames."""
    latent_frames, latent_height, latent_width = latent_size(frames.shape[2], frames.shape[1], frames.shape[0])
    return {
        # float32 on the CPU so the file loads anywhere; the trainer casts to its dtype.
        "latents": encode_frames(vae, frames).float().cpu(),
        "num_frames": latent_frames,
        "height": latent_height,
        "width": latent_width,
        "fps": float(fps),
    }


def _decode_check(
    samples: list[_Sample], count: int, vae, output_dir: Path, recomputed: set[str]
) -> list[Path]:
    written = []
    for sample in samples[:count]:
        latents_path, _ = precomputed_paths(output_dir, sample.relative)
        target = output_dir / "decoded" / Path(sample.relative).with_suffix(".mp4")
        if target.is_file() and sample.relative not in recomputed:
            continue
        record = torch.load(latents_path, map_location="cpu", weights_only=True)
        write_video(target, decode_latents(vae, record), fps=record["fps"])
        written.append(target)
    return written


def preprocess_dataset(
    dataset_dir: str | os.PathLike,
    resolution_buckets: str | list[Bucket],
    model_path: str | os.PathLike,
    max_sequence_length: int = DEFAULT_TEXT_LENGTH,
    vae_tiling: bool = False,
    decode_check: int = 0,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    overwrite: bool = False,
    on_short: str = "skip",
    output_dir: str | os.PathLike | None = None,
    with_audio: bool | None = None,
    reference_dir: str | os.PathLike | None = None,
    reference_downscale: int = 1,
) -> PreprocessReport:
    """Write latents and text embeddings for every captioned clip or image under `dataset_dir`.

    The files go to `output_dir` (default `<dataset>/.precomputed`, the reference layout; the
    pipeline passes one folder per data key, see `ltxtrainer.dataset_key`). Only samples whose
    inputs changed since the last run are computed (all with `overwrite`). The VAE and the text
    encoder are loaded only when there is work for them, one after the other. `decode_check=N`
    decodes the first N samples' latents to `<output_dir>/decoded/` so a person can see that the
    data is right. Raises PreprocessError, BucketError or ModelFolderError (all with messages for
    people) when nothing can be done at all.

    For an LTX-2 folder the clips go through `precompute_ltx2_samples` (Gemma + connectors, the
    video VAE and, with `with_audio`, the audio VAE). `with_audio=None` trains sound when every
    clip has a sound track and video only otherwise (said once); True refuses clips without sound.

    With `reference_dir` (IC-LoRA data) every clip's reference video, named in captions.json's
    reference_path / reference_video or found by `reference.find_reference` in that folder, is
    encoded to `reference_latents/` at the clip's bucket; a clip without a usable reference is
    skipped and named. `reference_downscale` (LTX-2 only: 1, 2 or 4) encodes the references at
    1/N of the clips' width and height.
    """
    model_dir = require_model_folder(model_path)  # a missing shard stops here, before any work
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise PreprocessError(f"dataset folder not found: {dataset_dir}")
    if on_short not in ("skip", "shrink"):
        raise PreprocessError(f'on_short must be "skip" or "shrink", got {on_short!r}')
    if max_sequence_length < 1:
        raise PreprocessError(f"max_sequence_length must be at least 1, got {max_sequence_length}")
    output_dir = Path(output_dir) if output_dir is not None else dataset_dir / PRECOMPUTED
    buckets = parse_buckets(resolution_buckets) if isinstance(resolution_buckets, str) else list(resolution_buckets)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    model = {"path": str(model_dir.resolve()), **model_fingerprints(model_dir)}

    reference_dir = Path(reference_dir) if reference_dir is not None else None
    if reference_downscale not in REFERENCE_DOWNSCALE_FACTORS:
        raise PreprocessError(
            f"reference_downscale must be one of {', '.join(map(str, REFERENCE_DOWNSCALE_FACTORS))}, "
            f"got {reference_downscale}"
        )

    report = PreprocessReport()
    manifest = _load_manifest(output_dir)
    samples = _plan(dataset_dir, buckets, on_short, report, reference_dir)
    if not samples and not report.failed:
        raise PreprocessError(
            f"no clips or images found in {dataset_dir} (looked for {', '.join(sorted(MEDIA_EXTENSIONS))})"
        )

    # Stale data must not train: drop files of failed samples and of media that is gone.
    present = {sample.relative for sample in samples}
    for relative in sorted(set(manifest["samples"]) - present):
        if _remove_sample_files(output_dir, relative, manifest) and relative not in report.failed:
            report.removed.append(relative)

    if family_name(model_dir) == "ltx2":
        audio = resolve_with_audio(samples, with_audio)
        _precompute_ltx2(
            samples, model_dir, output_dir, manifest, model, audio, reference_downscale, overwrite, device, dtype, report
        )
        recomputed = {s.relative for s in samples if s.needs_latents or s.needs_reference}
        return _finish(dataset_dir, output_dir, samples, report, recomputed)
    if with_audio:
        raise PreprocessError(
            f"with_audio is for LTX-2 model folders; {model_dir} is LTX-Video 0.9, which has no sound stream"
        )
    if reference_downscale != 1:
        raise PreprocessError(
            f"reference_downscale is for LTX-2 model folders; {model_dir} is LTX-Video 0.9, whose IC-LoRA "
            "references have the clips' own size"
        )

    for sample in samples:
        entry = manifest["samples"].get(sample.relative, {})
        latents_path, conditions_path = precomputed_paths(output_dir, sample.relative)
        sample.needs_latents = overwrite or not latents_path.is_file() or not _same(
            entry.get("latents"), _latents_record(sample, model)
        )
        sample.needs_conditions = overwrite or not conditions_path.is_file() or not _same(
            entry.get("conditions"), _conditions_record(sample, model, max_sequence_length)
        )
        sample.needs_reference = sample.reference is not None and (
            overwrite or not reference_latents_path(output_dir, sample.relative).is_file()
            or not _same(entry.get("reference"), _reference_record(sample, model))
        )
    text_work = [sample for sample in samples if sample.needs_conditions]
    latent_work = [sample for sample in samples if sample.needs_latents or sample.needs_reference]
    say(
        f"Preprocessing {dataset_dir} into {output_dir}: {len(samples)} sample(s), {len(text_work)} caption(s), "
        f"{sum(s.needs_latents for s in samples)} clip(s) and {sum(s.needs_reference for s in samples)} "
        f"reference(s) to encode, {len(report.failed)} failed"
    )
    if text_work:
        _encode_captions(text_work, model_dir, device, dtype, max_sequence_length, output_dir, manifest, model)

    recomputed = {sample.relative for sample in text_work + latent_work}
    decode_needed = decode_check > 0 and any(
        sample.relative in recomputed
        or not (output_dir / "decoded" / Path(sample.relative).with_suffix(".mp4")).is_file()
        for sample in samples[:decode_check]
    )
    if latent_work or decode_needed:
        say(f"Loading the VAE ({dtype}) on {device}")
        vae = load_vae(model_dir, dtype=dtype, device=device)
        if vae_tiling:
            vae.enable_tiling()  # encodes large frames tile by tile: less memory, a little slower
        _encode_clips(latent_work, vae, on_short, output_dir, manifest, model, report)
        for relative in report.failed:
            _remove_sample_files(output_dir, relative, manifest)
        _save_manifest(output_dir, manifest)
        good = [sample for sample in samples if sample.relative not in report.failed]
        for path in _decode_check(good, decode_check, vae, output_dir, recomputed):
            say(f"Decoded check video: {path}")
        del vae
        _free_memory(device)
    else:
        _save_manifest(output_dir, manifest)

    return _finish(dataset_dir, output_dir, samples, report, recomputed)


def _finish(
    dataset_dir: Path, output_dir: Path, samples: list[_Sample], report: PreprocessReport, recomputed: set[str]
) -> PreprocessReport:
    """Sort the samples into computed/skipped, say what happened and emit the stage summary."""
    for sample in samples:
        if sample.relative in report.failed:
            continue
        (report.computed if sample.relative in recomputed else report.skipped).append(sample.relative)
    for relative, reason in sorted(report.failed.items()):
        say(f"Skipped {relative}: {reason}")
    shrunk = {relative: note for relative, note in report.shrunk.items() if relative not in report.failed}
    say(
        f"Preprocessing done: {len(report.computed)} computed, {len(report.skipped)} already up to date, "
        f"{len(report.failed)} failed" + (f", {len(report.removed)} removed" if report.removed else "")
        + (f"; shorter than their bucket, so trained with fewer frames: {describe(shrunk)}" if shrunk else "")
    )
    emit(
        "summary",
        stage="preprocess",
        computed=len(report.computed),
        skipped=len(report.skipped),
        failed=len(report.failed),
        removed=len(report.removed),
        failures=report.failed,
        shrunk=shrunk,
        output=str(output_dir),
    )
    return report


# --- LTX-2 ------------------------------------------------------------------------------------------


def resolve_with_audio(samples: list[_Sample], with_audio: bool | None) -> bool:
    """The audio choice for an LTX-2 dataset: sound when asked and every clip has it; by default
    sound exactly when every clip has it (otherwise video only, said once)."""
    silent = [sample.relative for sample in samples if not has_sound(sample.path)]
    if with_audio and silent:
        raise PreprocessError(
            f"--with-audio needs a sound track in every clip, but {len(silent)} have none: "
            f"{', '.join(silent[:10])}. Remove them or preprocess with --no-audio (video only)."
        )
    if with_audio is None:
        with_audio = bool(samples) and not silent
        if not with_audio and samples:
            say(f"{len(silent)} clip(s) have no sound track ({', '.join(silent[:5])}): training video only")
    return with_audio


def _ltx2_record(sample: _Sample, model: dict, with_audio: bool) -> dict:
    return {**_latents_record(sample, model), "caption_sha256": _caption_hash(sample.caption), "with_audio": with_audio}


def _ltx2_reference_record(sample: _Sample, model: dict, downscale_factor: int) -> dict:
    return {**_reference_record(sample, model), "downscale_factor": downscale_factor}


def _precompute_ltx2(
    samples: list[_Sample], model_dir: Path, output_dir: Path, manifest: dict, model: dict, with_audio: bool,
    reference_downscale: int, overwrite: bool, device: torch.device, dtype: torch.dtype, report: PreprocessReport,
) -> None:
    """Encode the samples whose clip, bucket, caption, model or audio choice changed, and the references
    whose file, bucket, model or downscale changed, one bucket at a time (precompute_ltx2_samples takes
    one size), and record them in the manifest."""
    spatial_compression = vae_spatial_compression(model_dir)
    for bucket in sorted({sample.bucket for sample in samples if sample.reference is not None}):
        try:
            reference_size(bucket.width, bucket.height, reference_downscale, spatial_compression)
        except ReferenceSizeError as error:
            raise PreprocessError(f"--reference-downscale {reference_downscale} for bucket {bucket}: {error}") from None
    work = []
    for sample in samples:
        sample.needs_reference = sample.reference is not None and (
            overwrite or not reference_latents_path(output_dir, sample.relative).is_file()
            or not _same(
                manifest["samples"].get(sample.relative, {}).get("ltx2_reference"),
                _ltx2_reference_record(sample, model, reference_downscale),
            )
        )
        latents_path, conditions_path = precomputed_paths(output_dir, sample.relative)
        audio_path = output_dir / AUDIO_LATENTS_DIR / Path(sample.relative).with_suffix(".pt")
        sample.needs_latents = (
            overwrite or not latents_path.is_file() or not conditions_path.is_file()
            or (with_audio and not audio_path.is_file())
            or not _same(manifest["samples"].get(sample.relative, {}).get("ltx2"), _ltx2_record(sample, model, with_audio))
        )
        if sample.needs_latents or sample.needs_reference:
            work.append(sample)
        if sample.needs_latents and not with_audio:
            audio_path.unlink(missing_ok=True)  # a video-only folder holds no stale sound
    say(
        f"Preprocessing for LTX-2 ({'audio + video' if with_audio else 'video only'}) into {output_dir}: "
        f"{len(samples)} sample(s), {sum(s.needs_latents for s in samples)} to encode"
        + (f", {sum(s.needs_reference for s in samples)} reference(s) at 1/{reference_downscale} size"
           if any(s.reference is not None for s in samples) else "")
        + f", {len(report.failed)} failed"
    )
    groups: dict[Bucket, list[_Sample]] = {}
    for sample in work:
        groups.setdefault(sample.bucket, []).append(sample)
    for bucket, group in groups.items():
        clips = {
            s.relative: ClipToEncode(s.path, s.caption, Path(s.relative).with_suffix("").as_posix(), s.reference)
            for s in group
        }
        size = (bucket.width, bucket.height, bucket.num_frames)
        latents_work = [s for s in group if s.needs_latents]
        reference_work = [s for s in group if s.needs_reference]
        try:
            if latents_work:
                precompute_ltx2_samples(
                    model_dir, [clips[s.relative] for s in latents_work], output_dir, *size, with_audio,
                    device=device, dtype=dtype,
                )
            for sample in latents_work:
                # Replaces any 0.9 records: those files were just overwritten with LTX-2 data.
                kept = manifest["samples"].get(sample.relative, {}).get("ltx2_reference")
                manifest["samples"][sample.relative] = {"ltx2": _ltx2_record(sample, model, with_audio)}
                if kept is not None:
                    manifest["samples"][sample.relative]["ltx2_reference"] = kept
            _save_manifest(output_dir, manifest)
            if reference_work:
                precompute_ltx2_references(
                    model_dir, [clips[s.relative] for s in reference_work], output_dir, *size,
                    reference_downscale, device=device, dtype=dtype,
                )
        except MediaError as error:
            raise PreprocessError(f"a clip or reference of bucket {bucket} could not be read: {error}") from None
        for sample in reference_work:
            entry = manifest["samples"].setdefault(sample.relative, {})
            entry.pop("reference", None)  # a 0.9 record of the file just overwritten
            entry["ltx2_reference"] = _ltx2_reference_record(sample, model, reference_downscale)
        _save_manifest(output_dir, manifest)
    _save_manifest(output_dir, manifest)


def describe(notes: dict[str, str], limit: int = 10) -> str:
    """'a.mp4 (why); b.mp4 (why)', the first `limit` of them, then how many more."""
    items = [f"{relative} ({note})" for relative, note in sorted(notes.items())]
    more = f"; and {len(items) - limit} more" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more
