"""Reference videos for IC-LoRA: one control video per training clip, made from the clip itself.

An IC-LoRA learns to turn a reference video (edges, a blurred or grey or low-resolution version
of a clip) into the clip. This module makes those references with OpenCV, frame by frame, at the
clip's own size, frame count and frame rate, so preprocessing can cut and resize a clip and its
reference exactly alike:

    <clips_dir>/<sub>/<stem>.<ext>  ->  <output_dir>/<sub>/<stem>_reference.mp4

The stage is idempotent: `<output_dir>/.references.json` records, per clip, the kind and the
clip's size and modification time; a re-run skips a clip whose record matches and whose reference
exists. A clip that cannot be read is skipped and reported with the reason, never ending the run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ltxtrainer.atomic import write_text_atomic
from ltxtrainer.media import VIDEO_EXTENSIONS, MediaError, VideoWriter, find_videos, open_frames, probe_video
from ltxtrainer.progress import emit, say, track
from ltxtrainer.stopfile import stop_requested

REFERENCE_KINDS = ("canny", "blur", "gray", "downscale")
REFERENCE_SUFFIX = "_reference"
MANIFEST_NAME = ".references.json"
MANIFEST_VERSION = 1

# Canny's hysteresis thresholds on 8-bit grey, as Lightricks' IC-LoRA trainers compute their
# references (LTX-2's compute_reference.py, LTX-Video-Trainer's compute_condition.py): LoRAs trained
# on our edges then take the edge videos made for theirs, and the other way round.
CANNY_LOW, CANNY_HIGH = 100, 200
# Blur strength as a fraction of the frame's shorter side, so a reference looks equally blurred at
# every resolution (sigma 25 px on 512 px): the layout and colours survive, every detail the LoRA
# is to restore is gone.
BLUR_SIGMA_FRACTION = 1 / 20
# "downscale" keeps 1/4 of the width and height, then scales back up to the clip's size.
DOWNSCALE_FACTOR = 4


@dataclass
class ReferenceReport:
    """What one run did, clip by clip (clip paths as found under clips_dir)."""

    written: list[Path] = field(default_factory=list)  # references made by this run
    up_to_date: list[Path] = field(default_factory=list)  # clips whose reference was already made
    failed: list[tuple[Path, str]] = field(default_factory=list)  # clips that could not be read, and why
    stopped: bool = False  # the job's stop file appeared; the clips not reached are in none of the lists


def reference_file_name(clip: Path) -> str:
    """`<stem>_reference.mp4`: the reference of `clip`, in the same sub-folder of the output folder."""
    return f"{Path(clip).stem}{REFERENCE_SUFFIX}.mp4"


def find_reference(clip_relative: str | Path, reference_dir: str | Path) -> Path | None:
    """The reference video of the clip at `clip_relative` (relative to its dataset) in `reference_dir`.

    Looks in the clip's own sub-folder of `reference_dir` for `<stem>_reference.<video ext>` (what
    `compute_references` writes), then `<stem>.<video ext>` (a folder of references a user made,
    named like the clips); extensions match case-insensitively. None when neither exists.
    """
    clip_relative = Path(clip_relative)
    folder = Path(reference_dir) / clip_relative.parent
    if not folder.is_dir():
        return None
    by_name = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file():
            by_name.setdefault(path.stem, path)
    stem = clip_relative.stem
    return by_name.get(f"{stem}{REFERENCE_SUFFIX}") or by_name.get(stem)


def reference_frame(frame: np.ndarray, kind: str) -> np.ndarray:
    """One [H, W, 3] uint8 RGB frame -> its reference frame of the same size, for `kind`."""
    return _KIND_FUNCTIONS[kind](frame)


def compute_references(clips_dir: str | Path, output_dir: str | Path, kind: str) -> ReferenceReport:
    """Write `<output_dir>/<sub>/<stem>_reference.mp4` of `kind` for every video under `clips_dir`.

    Videos inside `output_dir` (when it lies within `clips_dir`) and videos named `*_reference.*`
    are references themselves and are never taken as clips. Raises ValueError for an unknown kind
    and MediaError when `clips_dir` is not a folder; an unreadable clip goes to `failed`.
    Stops between clips when the job's stop file appears (`report.stopped`).
    """
    if kind not in REFERENCE_KINDS:
        raise ValueError(f"kind must be one of {', '.join(REFERENCE_KINDS)}, got {kind!r}")
    clips_dir, output_dir = Path(clips_dir), Path(output_dir)
    clips = _clips(clips_dir, output_dir)
    manifest = _load_manifest(output_dir)
    report = ReferenceReport()
    for clip in track(clips, stage="reference", unit="clip"):
        if stop_requested():
            report.stopped = True
            break
        relative = clip.relative_to(clips_dir).as_posix()
        target = output_dir / Path(relative).parent / reference_file_name(clip)
        stamp = {"kind": kind, **_file_stamp(clip)}
        if manifest["clips"].get(relative) == stamp and target.is_file():
            report.up_to_date.append(clip)
            continue
        try:
            _write_reference(clip, target, kind)
        except MediaError as error:
            say(f"reference: skipped unusable clip: {error}")
            report.failed.append((clip, str(error)))
            manifest["clips"].pop(relative, None)
            target.unlink(missing_ok=True)  # an old reference of a clip now broken must not train
            continue
        manifest["clips"][relative] = stamp
        _save_manifest(output_dir, manifest)  # after each clip, so a stopped run keeps what it made
        report.written.append(clip)
    _save_manifest(output_dir, manifest)
    emit(
        "summary",
        stage="reference",
        kind=kind,
        written=len(report.written),
        skipped=len(report.up_to_date),
        failed=len(report.failed),
        stopped=report.stopped,
        failed_files=[{"path": str(path), "reason": reason} for path, reason in report.failed],
        output=str(output_dir),
    )
    return report


# --- the kinds ---------------------------------------------------------------------------------------


def _canny(frame: np.ndarray) -> np.ndarray:
    edges = cv2.Canny(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), CANNY_LOW, CANNY_HIGH)
    return cv2.cvtColor(edges, cv2.COLOR_GRAY2RGB)  # 3 channels: the VAE encodes RGB


def _blur(frame: np.ndarray) -> np.ndarray:
    sigma = max(1.0, min(frame.shape[:2]) * BLUR_SIGMA_FRACTION)
    return cv2.GaussianBlur(frame, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


def _downscale(frame: np.ndarray) -> np.ndarray:
    height, width = frame.shape[:2]
    small = cv2.resize(
        frame,
        (max(1, width // DOWNSCALE_FACTOR), max(1, height // DOWNSCALE_FACTOR)),
        interpolation=cv2.INTER_AREA,  # averages, as a camera of lower resolution would
    )
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


_KIND_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "canny": _canny,
    "blur": _blur,
    "gray": _gray,
    "downscale": _downscale,
}


# --- internals ---------------------------------------------------------------------------------------


def _clips(clips_dir: Path, output_dir: Path) -> list[Path]:
    resolved_output = output_dir.resolve()
    inside_output = resolved_output != clips_dir.resolve()
    return [
        clip
        for clip in find_videos(clips_dir)
        if not clip.stem.endswith(REFERENCE_SUFFIX)
        and not (inside_output and clip.resolve().is_relative_to(resolved_output))
    ]


def _write_reference(clip: Path, target: Path, kind: str) -> None:
    """Every frame of `clip` through `kind`, at the clip's frame rate; the file appears only when whole."""
    info = probe_video(clip)
    with VideoWriter(target, info.fps) as writer, open_frames(clip) as frames:
        for to_rgb in frames:
            writer.write(reference_frame(to_rgb(), kind))


def _file_stamp(path: Path) -> dict:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _load_manifest(output_dir: Path) -> dict:
    try:
        manifest = json.loads((output_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"version": MANIFEST_VERSION, "clips": {}}  # missing or torn: everything is made again
    if manifest.get("version") != MANIFEST_VERSION or not isinstance(manifest.get("clips"), dict):
        return {"version": MANIFEST_VERSION, "clips": {}}
    return manifest


def _save_manifest(output_dir: Path, manifest: dict) -> None:
    write_text_atomic(output_dir / MANIFEST_NAME, json.dumps(manifest, indent=1, ensure_ascii=False))
