"""Reading and writing video: probing, frame decoding, resize + centre crop, clip normalisation.

Every stage that touches pixels goes through this module, so the rules live in one place:
frames are [F, H, W, 3] uint8 RGB; training clips are W x H x F with W and H multiples of 32 and
F = 8k+1 (the LTX VAE compresses 32x in space and 8x in time after the first frame).

Decoding is PyAV first (its wheels bundle FFmpeg, so no system install is needed) with OpenCV as
a fallback for files PyAV cannot open. Decoding always stops at the last frame a caller needs:
the reference trainer decodes a whole video to keep its first F frames, which makes a long
source cost minutes and gigabytes for a two-second clip.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from ltxtrainer.atomic import replace_with_retry

VIDEO_EXTENSIONS: frozenset[str] = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"})

# Folders never searched for source videos: our own precomputed tensors, and hidden folders
# (editors' caches, .git, partially written files).
_SKIPPED_FOLDERS = frozenset({".precomputed"})

# x264 settings for every clip we write: crf 17 is visually lossless for training input, and
# "veryfast" keeps re-encoding a long source on a CPU within minutes.
_X264_OPTIONS = {"crf": "17", "preset": "veryfast"}


class MediaError(Exception):
    """A video that cannot be used; the message names the file and the reason in plain words."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds, as displayed (width and height after any rotation in its metadata)."""

    path: Path
    width: int
    height: int
    num_frames: int
    fps: float
    duration_s: float


# A decoded frame is handed out as a zero-argument function returning RGB pixels, so frames a
# caller skips are decoded (the codec needs them) but never converted to RGB, the costly part.
FrameSource = Iterator[Callable[[], np.ndarray]]


def find_videos(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Video files under `folder`, sorted, chosen by extension (case-insensitive).

    Hidden files and folders and `.precomputed` are skipped: they hold our own partial writes
    and tensors, never a user's source clip.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MediaError(f"{folder}: is not a folder")
    found = []
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    for path in candidates:
        relative_parts = path.relative_to(folder).parts
        if any(part.startswith(".") or part in _SKIPPED_FOLDERS for part in relative_parts):
            continue
        if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file():
            found.append(path)
    return sorted(found)


def probe_video(path: str | Path) -> VideoInfo:
    """Size, frame count and rate of a video, after checking that its first frame decodes.

    Raises MediaError for a missing, empty, unreadable or corrupt file, one with no video track
    (audio only) and one without a single decodable frame.
    """
    path = _existing_file(path)
    try:
        return _probe_pyav(path)
    except _PyAVCannotOpen as pyav_error:
        return _probe_opencv(path, pyav_reason=str(pyav_error))


def read_frames(path: str | Path, start: int = 0, count: int | None = None, stride: int = 1) -> np.ndarray:
    """Frames start, start+stride, ... (at most `count`; None = to the end) as [F, H, W, 3] uint8 RGB.

    Decoding stops after the last frame asked for. Like a slice, a video that ends early gives
    fewer frames (callers that need an exact count check it, as load_clip does). Raises
    MediaError if no frame exists at `start` or the file cannot be decoded.
    """
    if start < 0 or stride < 1 or (count is not None and count < 0):
        raise ValueError("read_frames needs start >= 0, stride >= 1 and count >= 0 (or None)")
    path = _existing_file(path)
    if count == 0:
        info = probe_video(path)
        return np.empty((0, info.height, info.width, 3), dtype=np.uint8)
    frames = []
    with _open_frames(path) as source:
        for index, to_rgb in enumerate(source):
            if index < start or (index - start) % stride:
                continue
            frames.append(to_rgb())
            if count is not None and len(frames) == count:
                break
    if not frames:
        raise MediaError(f"{path}: has no frame at index {start} (the video is shorter)")
    return np.stack(frames)


def resize_and_crop(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale so the frame covers width x height (short side fits), then centre-crop to exactly that.

    Takes [F, H, W, 3] or a single [H, W, 3] frame and returns the same rank. Cropping rather
    than padding or stretching keeps proportions and never adds black bars the model would learn.
    """
    if width < 1 or height < 1:
        raise ValueError(f"target size must be positive, got {width}x{height}")
    if frames.ndim == 3:
        return _resize_and_crop_frame(frames, width, height)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames shaped [F, H, W, 3] or [H, W, 3], got {frames.shape}")
    return np.stack([_resize_and_crop_frame(frame, width, height) for frame in frames])


def largest_valid_frame_count(available: int) -> int:
    """The largest 8k+1 that is <= available (0 when not even one frame is available)."""
    if available < 1:
        return 0
    return (available - 1) // 8 * 8 + 1


def load_clip(
    path: str | Path,
    width: int,
    height: int,
    num_frames: int,
    fps: float | None = None,
    on_short: str = "skip",
) -> tuple[np.ndarray, float]:
    """A training clip from the start of a video: ([num_frames, height, width, 3] uint8, fps).

    fps=None keeps the source rate; a lower fps picks the source frame shown at each sample
    time (a stride of source_fps/fps, exact for whole ratios); a higher fps than the source
    keeps the source rate (frames are never invented). A video too short for num_frames
    raises MediaError with on_short="skip", or with on_short="shrink" gives the largest 8k+1
    frame count it has. Each frame is resized as it is decoded, so memory holds only the clip.
    """
    _check_clip_shape(width, height, num_frames)
    if on_short not in ("skip", "shrink"):
        raise ValueError(f'on_short must be "skip" or "shrink", got {on_short!r}')
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    info = probe_video(path)
    step = 1.0 if fps is None or fps >= info.fps else info.fps / fps
    effective_fps = info.fps / step
    available = math.ceil(info.num_frames / step - 1e-9)
    num_frames = _frames_to_take(info.path, available, num_frames, effective_fps, on_short)

    wanted = [int(sample * step + 1e-9) for sample in range(num_frames)]
    frames = []
    with _open_frames(info.path) as source:
        for index, to_rgb in enumerate(source):
            if index == wanted[len(frames)]:
                frames.append(_resize_and_crop_frame(to_rgb(), width, height))
                if len(frames) == num_frames:
                    break
    if len(frames) < num_frames:  # the container claimed more frames than it holds
        frames = frames[: _frames_to_take(info.path, len(frames), num_frames, effective_fps, on_short)]
    return np.stack(frames), effective_fps


def sample_frames(path: str | Path, count: int) -> list[np.ndarray]:
    """`count` evenly spaced RGB frames (fewer if the video is shorter), for captioning.

    Frames are taken at the centres of `count` equal spans rather than at the very first and
    last frame, which are often black or mid-fade.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    info = probe_video(path)
    wanted = sorted({int((sample + 0.5) * info.num_frames / count) for sample in range(count)})
    frames: list[np.ndarray] = []
    with _open_frames(info.path) as source:
        for index, to_rgb in enumerate(source):
            if index == wanted[len(frames)]:
                frames.append(to_rgb())
                if len(frames) == len(wanted):
                    break
    if not frames:
        raise MediaError(f"{info.path}: no frame could be decoded")
    return frames


def write_video(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """Write [F, H, W, 3] uint8 RGB frames as an H.264 mp4; the file appears only when complete."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(
            f"write_video needs non-empty uint8 frames [F, H, W, 3], got {frames.dtype} {frames.shape}"
        )
    with VideoWriter(path, fps) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.path


class VideoWriter:
    """Streaming H.264 writer: frames go to a hidden temporary file renamed into place on success.

    The rename makes writing atomic, so an interrupted stage never leaves a half-written clip
    that a re-run would mistake for finished work. Odd widths or heights lose their last
    column or row (4:2:0 H.264 needs even sizes). Use as a context manager: leaving it by an
    exception deletes the temporary file.
    """

    def __init__(self, path: str | Path, fps: float):
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = self.path.with_name(f".{self.path.stem}.partial-{os.getpid()}{self.path.suffix}")
        self._rate = Fraction(fps).limit_denominator(1001)
        self._container = av.open(str(self._partial), mode="w", format="mp4")
        self._stream = None
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        """Append one [H, W, 3] uint8 RGB frame."""
        if self._stream is None:
            self._stream = self._container.add_stream("libx264", rate=self._rate)
            self._stream.width = frame.shape[1] - frame.shape[1] % 2
            self._stream.height = frame.shape[0] - frame.shape[0] % 2
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = dict(_X264_OPTIONS)
        pixels = np.ascontiguousarray(frame[: self._stream.height, : self._stream.width])
        video_frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        video_frame.pts = self.frames_written
        video_frame.time_base = 1 / self._rate
        self._container.mux(self._stream.encode(video_frame))
        self.frames_written += 1

    def close(self) -> Path:
        """Flush the encoder and move the finished file to its final path."""
        if self._stream is None:
            self.abort()
            raise ValueError(f"{self.path}: no frames were written")
        self._container.mux(self._stream.encode(None))
        self._container.close()
        replace_with_retry(self._partial, self.path)  # a player may hold the old file open on Windows
        return self.path

    def abort(self) -> None:
        """Drop everything written so far."""
        self._container.close()
        self._partial.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@contextmanager
def open_frames(path: str | Path) -> Iterator[FrameSource]:
    """Decode a video frame by frame, in order; each item converts its frame to RGB when called.

    For stages (scene splitting) that stream a whole video without holding it in memory.
    """
    with _open_frames(_existing_file(path)) as source:
        yield source


# --- internals ---------------------------------------------------------------------------------


class _PyAVCannotOpen(Exception):
    """PyAV could not open the container at all; OpenCV gets a try."""


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: file not found")
    if not path.is_file():
        raise MediaError(f"{path}: is not a file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: the file is empty (0 bytes)")
    return path


def _check_clip_shape(width: int, height: int, num_frames: int) -> None:
    if width < 32 or height < 32 or width % 32 or height % 32:
        raise ValueError(
            f"width and height must be positive multiples of 32 (LTX-Video's VAE), got {width}x{height}"
        )
    if num_frames < 1 or num_frames % 8 != 1:
        raise ValueError(f"num_frames must be 8k+1 (1, 9, 17, 25, ...) for LTX-Video's VAE, got {num_frames}")


def _frames_to_take(path: Path, available: int, needed: int, fps: float, on_short: str) -> int:
    if available >= needed:
        return needed
    if on_short == "skip":
        raise MediaError(f"{path}: has {available} frames at {fps:g} fps, needs {needed}")
    shrunk = largest_valid_frame_count(available)
    if shrunk == 0:
        raise MediaError(f"{path}: has no frames to make a clip from")
    return shrunk


def _resize_and_crop_frame(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    source_height, source_width = frame.shape[:2]
    scale = max(width / source_width, height / source_height)
    scaled_width = max(width, round(source_width * scale))
    scaled_height = max(height, round(source_height * scale))
    if (scaled_width, scaled_height) != (source_width, source_height):
        # INTER_AREA averages when shrinking (no aliasing shimmer); cubic is sharper when enlarging.
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        frame = cv2.resize(frame, (scaled_width, scaled_height), interpolation=interpolation)
    left = (scaled_width - width) // 2
    top = (scaled_height - height) // 2
    return np.ascontiguousarray(frame[top : top + height, left : left + width])


def _pyav_rgb(frame: av.VideoFrame) -> np.ndarray:
    """RGB pixels as displayed: phones store portrait video as landscape plus a rotation."""
    pixels = frame.to_ndarray(format="rgb24")
    quarter_turns = round(frame.rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(pixels, k=quarter_turns)) if quarter_turns else pixels


def _open_pyav(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise _PyAVCannotOpen(f"PyAV: {reason}") from error


def _video_stream(container: av.container.InputContainer, path: Path) -> av.VideoStream:
    if not container.streams.video:
        if container.streams.audio:
            raise MediaError(f"{path}: has no video track (audio only)")
        raise MediaError(f"{path}: has no video track")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def _probe_pyav(path: Path) -> VideoInfo:
    with _open_pyav(path) as container:
        stream = _video_stream(container, path)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as error:
            raise MediaError(f"{path}: the video data is corrupt ({error})") from error
        if first is None:
            raise MediaError(f"{path}: has no decodable video frames")
        sideways = round(first.rotation / 90) % 2 == 1
        width, height = (first.height, first.width) if sideways else (first.width, first.height)
        num_frames = stream.frames
    if not num_frames:  # Matroska/WebM carry no frame count: count packets (no decoding needed)
        num_frames = _count_video_packets(path)
    if not rate or num_frames < 1:
        raise MediaError(f"{path}: frame rate or frame count cannot be read")
    fps = float(rate)
    return VideoInfo(path, width, height, num_frames, fps, num_frames / fps)


def _count_video_packets(path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        try:
            return sum(1 for packet in container.demux(stream) if packet.size)
        except av.FFmpegError as error:
            raise MediaError(f"{path}: the video data is corrupt ({error})") from error


def _probe_opencv(path: Path, pyav_reason: str) -> VideoInfo:
    capture = cv2.VideoCapture(str(path))
    try:
        ok, frame = capture.read() if capture.isOpened() else (False, None)
        if not ok:
            raise MediaError(
                f"{path}: cannot be read as a video ({pyav_reason}; OpenCV could not open it either)"
            )
        num_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(capture.get(cv2.CAP_PROP_FPS))
    finally:
        capture.release()
    if fps <= 0 or num_frames < 1:
        raise MediaError(f"{path}: frame rate or frame count cannot be read")
    height, width = frame.shape[:2]
    return VideoInfo(path, width, height, num_frames, fps, num_frames / fps)


@contextmanager
def _open_frames(path: Path) -> Iterator[FrameSource]:
    try:
        container = _open_pyav(path)
    except _PyAVCannotOpen as pyav_error:
        with _opencv_frames(path, str(pyav_error)) as source:
            yield source
        return
    with container:
        stream = _video_stream(container, path)
        yield _pyav_frames(container, stream, path)


def _pyav_frames(container: av.container.InputContainer, stream: av.VideoStream, path: Path) -> FrameSource:
    try:
        for frame in container.decode(stream):
            yield lambda frame=frame: _pyav_rgb(frame)
    except av.FFmpegError as error:
        raise MediaError(
            f"{path}: decoding failed part-way, the file may be truncated or corrupt ({error})"
        ) from error


@contextmanager
def _opencv_frames(path: Path, pyav_reason: str) -> Iterator[FrameSource]:
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise MediaError(
                f"{path}: cannot be read as a video ({pyav_reason}; OpenCV could not open it either)"
            )
        yield _opencv_frame_source(capture)
    finally:
        capture.release()


def _opencv_frame_source(capture: cv2.VideoCapture) -> FrameSource:
    while capture.grab():
        yield lambda: cv2.cvtColor(capture.retrieve()[1], cv2.COLOR_BGR2RGB)
