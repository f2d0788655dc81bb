"""Resolution buckets: the `WxHxF;WxHxF` strings users write, and which bucket a clip trains in.

The trainer, the GUI and the preprocessing stage all read the same strings, so the rules live
here once, in plain Python (no torch: the GUI imports this to validate a form field).
Width and height must be multiples of 32 and the frame count 8k+1 because the LTX-Video VAE
compresses 32x spatially and 8x temporally with the first frame kept on its own; anything else
would be cropped or padded silently by the model, so it is refused here with the rule spelled out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

SPATIAL_MULTIPLE = 32
FRAME_MULTIPLE = 8
# Two aspect ratios closer than this (in log space) count as the same shape.
_ASPECT_TOLERANCE = 1e-6


class BucketError(ValueError):
    """A resolution-bucket string that cannot be used; the message names the entry and the rule."""


class Bucket(NamedTuple):
    width: int
    height: int
    num_frames: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}x{self.num_frames}"

    @property
    def aspect(self) -> float:
        return self.width / self.height


def _entry_error(entry: str, rule: str) -> BucketError:
    return BucketError(f"resolution bucket {entry!r}: {rule}")


def parse_bucket(entry: str) -> Bucket:
    """One `WxHxF` entry (`x` or `X` or `×` between numbers, spaces ignored)."""
    text = entry.strip().lower().replace("×", "x").replace(" ", "")
    parts = text.split("x")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise _entry_error(entry, "write it as WIDTHxHEIGHTxFRAMES, e.g. 768x512x49")
    width, height, num_frames = (int(part) for part in parts)
    if width <= 0 or height <= 0 or width % SPATIAL_MULTIPLE or height % SPATIAL_MULTIPLE:
        raise _entry_error(
            entry, f"width and height must be positive multiples of {SPATIAL_MULTIPLE} (got {width}x{height})"
        )
    if num_frames < 1 or (num_frames - 1) % FRAME_MULTIPLE:
        below = (max(num_frames, 1) - 1) // FRAME_MULTIPLE * FRAME_MULTIPLE + 1
        raise _entry_error(
            entry,
            f"the frame count must be {FRAME_MULTIPLE}k+1 (1, 9, 17, 25, ..., 49, ...); "
            f"got {num_frames}, nearest allowed below is {below}",
        )
    return Bucket(width, height, num_frames)


def parse_buckets(text: str | Iterable[str | Bucket | tuple[int, int, int]]) -> list[Bucket]:
    """`"768x512x49;512x768x49"` (or a list of entries) -> buckets, duplicates dropped, order kept."""
    entries = text.split(";") if isinstance(text, str) else list(text)
    buckets: list[Bucket] = []
    for entry in entries:
        if isinstance(entry, str):
            if not entry.strip():
                continue
            bucket = parse_bucket(entry)
        else:
            bucket = parse_bucket("x".join(str(int(value)) for value in entry))
        if bucket not in buckets:
            buckets.append(bucket)
    if not buckets:
        raise BucketError("no resolution bucket given; write at least one, e.g. 768x512x49")
    return buckets


def format_buckets(buckets: Iterable[Bucket | tuple[int, int, int]]) -> str:
    """The inverse of `parse_buckets`: `"768x512x49;512x768x49"`."""
    return ";".join(str(Bucket(*bucket)) for bucket in buckets)


def _aspect_distance(width: int, height: int, bucket: Bucket) -> float:
    return abs(math.log(width / height) - math.log(bucket.aspect))


def assign_bucket(width: int, height: int, num_frames: int, buckets: list[Bucket]) -> Bucket:
    """The bucket a `width` x `height` clip of `num_frames` frames trains in.

    "Nearest" is decided in this order, each step only breaking the previous step's ties:
    1. aspect ratio: the smallest |log(clip W/H) - log(bucket W/H)|, so 2:1 and 1:2 are
       equally far from 1:1 and the clip loses as little as possible to the centre crop;
    2. length: the longest bucket whose frame count fits in the clip (F <= num_frames); if none
       fits, the shortest bucket (the caller then skips the clip
       or shrinks it to `shrink_frames`);
    3. size: the largest bucket not bigger than the clip (no upscaling); if all are bigger,
       the smallest.
    A single image (num_frames == 1) trains as one frame: it goes to a 1-frame bucket when the
    list has one, otherwise it gets the nearest bucket's width and height with 1 frame.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"clip size must be positive, got {width}x{height}")
    if not buckets:
        raise BucketError("no resolution bucket given")
    candidates = list(buckets)
    image = num_frames == 1
    if image and any(bucket.num_frames == 1 for bucket in candidates):
        candidates = [bucket for bucket in candidates if bucket.num_frames == 1]
    best_aspect = min(_aspect_distance(width, height, bucket) for bucket in candidates)
    candidates = [b for b in candidates if _aspect_distance(width, height, b) <= best_aspect + _ASPECT_TOLERANCE]
    if not image:
        fitting = [b for b in candidates if b.num_frames <= num_frames]
        if fitting:
            longest = max(b.num_frames for b in fitting)
            candidates = [b for b in fitting if b.num_frames == longest]
        else:
            shortest = min(b.num_frames for b in candidates)
            candidates = [b for b in candidates if b.num_frames == shortest]
    area = width * height
    not_upscaled = [b for b in candidates if b.width * b.height <= area]
    if not_upscaled:
        chosen = max(not_upscaled, key=lambda b: b.width * b.height)
    else:
        chosen = min(candidates, key=lambda b: b.width * b.height)
    return chosen._replace(num_frames=1) if image else chosen


def shrink_frames(num_frames: int) -> int:
    """The longest 8k+1 frame count that a clip of `num_frames` frames can fill (at least 1)."""
    return (max(num_frames, 1) - 1) // FRAME_MULTIPLE * FRAME_MULTIPLE + 1
