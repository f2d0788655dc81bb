"""Scene detection and splitting: one clip per scene, so a training sample never spans a cut.

Detection is PySceneDetect with its PyAV backend. The clips are cut by decoding the source once
and re-encoding each scene with PyAV, frame-exact. PySceneDetect's own splitter is not used: it
shells out to an ffmpeg binary, and without one it reports success and writes nothing.

A source with sound gives clips with sound: its first audio track is decoded once, in order,
cut sample-exactly to each scene's time span (measured from the first video frame, so the sound
stays in sync with the picture) and re-encoded as AAC at the source's rate and channel layout
beside the clip's H.264 stream. LTX-2 trains on both streams, and a clip that lost its sound in
the split could only train video.

The stage is idempotent. Each finished source leaves a small manifest in
`<output_dir>/.split/<source stem>.json` naming its clips; a re-run skips a source whose
manifest matches it (same size and modification time) and whose clips all exist, and also a
source with `<stem>-Scene-001.mp4` already in the output folder (clips written by PySceneDetect's
own naming, as the older GUI did).

Still images in the input folder go to the output folder unchanged (training takes an image as
a one-frame sample): each is checked with the same reader preprocessing uses, and copied unless
an identical copy is already there.
"""

from __future__ import annotations

import filecmp
import json
import math
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from scenedetect import AdaptiveDetector, ContentDetector, SceneManager, open_video

from ltxtrainer.atomic import replace_with_retry, write_atomic
from ltxtrainer.dataset_key import IMAGE_EXTENSIONS, MEDIA_EXTENSIONS, find_media
from ltxtrainer.media import MediaError, VideoWriter, open_frames, probe_video
from ltxtrainer.progress import emit, say, track

DETECTORS = ("content", "adaptive")
DEFAULT_MIN_SCENE_LEN = 15  # frames; PySceneDetect's default, ~0.6 s at 24 fps
MANIFEST_FOLDER = ".split"
# The channel layouts ffmpeg's AAC encoder takes, by channel count. A source's own layout may be a
# variant it refuses (AC-3's "5.1(side)" in a .mkv): swresample maps it onto the plain one, and an
# unusual count is mixed down to stereo.
_AAC_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 8: "7.1"}


@dataclass
class SplitReport:
    """What one run of the stage did, source by source."""

    written: list[Path] = field(default_factory=list)  # clips written by this run
    copied: list[Path] = field(default_factory=list)  # images copied by this run
    skipped: list[Path] = field(default_factory=list)  # sources already split (or images copied) earlier
    failed: list[tuple[Path, str]] = field(default_factory=list)  # sources that could not be split, and why


def scene_clip_name(source: Path, scene_number: int) -> str:
    """`<source stem>-Scene-<NNN>.mp4`, PySceneDetect's default naming, numbered from 1."""
    return f"{source.stem}-Scene-{scene_number:03d}.mp4"


def detect_scenes(
    path: str | Path,
    detector: str = "content",
    threshold: float | None = None,
    min_scene_len: int = DEFAULT_MIN_SCENE_LEN,
) -> list[tuple[int, int]]:
    """Scenes of a video as [start, end) frame ranges covering every frame, in order.

    `threshold` is the detector's own scale (content: 27 by default, lower cuts more; adaptive:
    3.0 by default). A video without a cut is one scene.
    """
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, got {detector!r}")
    if min_scene_len < 1:
        raise ValueError(f"min_scene_len must be at least 1 frame, got {min_scene_len}")
    info = probe_video(path)
    if detector == "content":
        scene_detector = ContentDetector(
            min_scene_len=min_scene_len, **({} if threshold is None else {"threshold": threshold})
        )
    else:
        scene_detector = AdaptiveDetector(
            min_scene_len=min_scene_len, **({} if threshold is None else {"adaptive_threshold": threshold})
        )
    manager = SceneManager()
    manager.add_detector(scene_detector)
    # suppress_output=True keeps FFmpeg's log quiet: scenedetect 0.7.2 otherwise restores FFmpeg's
    # default log callback for the whole process, and every later x264 encode prints its statistics.
    manager.detect_scenes(open_video(str(info.path), backend="pyav", suppress_output=True))
    scenes = [(start.frame_num, end.frame_num) for start, end in manager.get_scene_list(start_in_scene=True)]
    return scenes or [(0, info.num_frames)]


def limit_scene_length(
    scenes: list[tuple[int, int]], max_frames: int | None, min_scene_len: int = 1
) -> list[tuple[int, int]]:
    """Cut scenes longer than max_frames into consecutive pieces of exactly max_frames.

    Full-length pieces are what training wants (a clip of the bucket's frame count); a last
    piece shorter than min_scene_len is dropped rather than kept as a sliver of a few frames.
    """
    if max_frames is None:
        return list(scenes)
    if max_frames < 1:
        raise ValueError(f"the maximum scene length must be at least 1 frame, got {max_frames}")
    pieces = []
    for start, end in scenes:
        for piece_start in range(start, end, max_frames):
            piece_end = min(piece_start + max_frames, end)
            if piece_start > start and piece_end - piece_start < min_scene_len:
                break
            pieces.append((piece_start, piece_end))
    return pieces


def write_scene_clips(
    source: str | Path, output_dir: str | Path, scenes: list[tuple[int, int]]
) -> list[Path]:
    """Decode `source` once and write each [start, end) range as its own H.264 clip, frame-exact,
    with the source's sound over the same span (AAC) when it has a sound track.

    Ranges must be in order and not overlap. If the source ends early, the clips of this call
    are removed again, so a re-run never mistakes a partial split for a finished one.
    """
    info = probe_video(source)
    output_dir = Path(output_dir)
    clips = [output_dir / scene_clip_name(info.path, number) for number in range(1, len(scenes) + 1)]
    finished: list[Path] = []
    writer: VideoWriter | None = None
    try:
        with open_frames(info.path) as source_frames, _SourceSound.open(info.path) as sound:
            for index, to_rgb in enumerate(source_frames):
                start, end = scenes[len(finished)]
                if index < start:
                    continue
                if writer is None:
                    writer = VideoWriter(clips[len(finished)], info.fps)
                writer.write(to_rgb())
                if index == end - 1:
                    finished.append(writer.close())
                    writer = None
                    if sound is not None:
                        _add_sound(finished[-1], sound, start / info.fps, end / info.fps)
                    if len(finished) == len(scenes):
                        break
        if len(finished) < len(scenes):
            raise MediaError(
                f"{info.path}: ended before frame {scenes[-1][1] - 1}, where its last scene ends; "
                "the file may be truncated"
            )
    except BaseException:
        if writer is not None:
            writer.abort()
        for clip in finished:
            clip.unlink(missing_ok=True)
        raise
    return clips


def split_video(
    source: str | Path,
    output_dir: str | Path,
    detector: str = "content",
    threshold: float | None = None,
    min_scene_len: int = DEFAULT_MIN_SCENE_LEN,
    max_scene_len: float | None = None,
) -> list[Path]:
    """Detect the scenes of one video and write one clip per scene (long scenes cut at max_scene_len seconds)."""
    info = probe_video(source)
    scenes = detect_scenes(info.path, detector, threshold, min_scene_len)
    max_frames = None if max_scene_len is None else max(1, math.floor(max_scene_len * info.fps + 1e-6))
    scenes = limit_scene_length(scenes, max_frames, min_scene_len)
    output_dir = Path(output_dir)
    planned = [output_dir / scene_clip_name(info.path, number) for number in range(1, len(scenes) + 1)]
    settings = {
        "detector": detector,
        "threshold": threshold,
        "min_scene_len": min_scene_len,
        "max_scene_len": max_scene_len,
    }
    # Recorded as unfinished first: if the process is killed mid-way, the next run finds the
    # manifest, removes the partial clips and starts this source again.
    _write_manifest(info.path, output_dir, planned, settings, complete=False)
    clips = write_scene_clips(info.path, output_dir, scenes)
    _write_manifest(info.path, output_dir, clips, settings, complete=True)
    return clips


def copy_image(source: str | Path, output_dir: str | Path) -> Path | None:
    """Copy a still image into `output_dir` under its own name; None when an identical copy is there.

    The image is decoded first, as preprocessing will decode it, so a corrupt file is refused
    here (MediaError naming it) instead of failing training later.
    """
    source = Path(source)
    target = Path(output_dir) / source.name
    if target.is_file() and filecmp.cmp(source, target, shallow=False):
        return None
    try:
        probe_video(source)
    except MediaError as error:
        raise MediaError(f"{source}: is not a readable image ({error})") from None
    return write_atomic(target, lambda temp: shutil.copyfile(source, temp))


def split_scenes(
    inputs: str | Path,
    output_dir: str | Path,
    detector: str = "content",
    threshold: float | None = None,
    min_scene_len: int = DEFAULT_MIN_SCENE_LEN,
    max_scene_len: float | None = None,
) -> SplitReport:
    """Split every video in `inputs` (a folder, searched recursively, or one file) into scene clips,
    and copy every still image there unchanged.

    Clips of a video in a subfolder go to the same subfolder under output_dir, so two sources
    with the same name never overwrite each other. Sources already split are skipped; a source
    that cannot be read or split is reported in `failed` and the stage goes on with the rest.
    `max_scene_len` is in seconds (None: no limit), `min_scene_len` in frames.
    """
    inputs, output_dir = Path(inputs), Path(output_dir)
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, got {detector!r}")
    if max_scene_len is not None and max_scene_len <= 0:
        raise ValueError(f"max_scene_len must be a positive number of seconds, got {max_scene_len}")
    sources = _sources(inputs, output_dir)
    report = SplitReport()
    for source in track(sources, stage="split", unit="file"):
        clip_dir = output_dir / source.parent.relative_to(inputs) if inputs.is_dir() else output_dir
        try:
            if source.suffix.lower() in IMAGE_EXTENSIONS:
                copied = copy_image(source, clip_dir)
                if copied is None:
                    report.skipped.append(source)
                else:
                    report.copied.append(copied)
                continue
            if _already_split(source, clip_dir):
                report.skipped.append(source)
                continue
            report.written.extend(
                split_video(source, clip_dir, detector, threshold, min_scene_len, max_scene_len)
            )
        # One bad file must not end a batch of hundreds: any error is recorded against its file.
        except Exception as error:
            reason = (
                str(error) if isinstance(error, MediaError) else f"{source}: {type(error).__name__}: {error}"
            )
            say(f"split: skipped unusable file: {reason}")
            report.failed.append((source, reason))
    emit(
        "summary",
        stage="split",
        written=len(report.written),
        copied=len(report.copied),
        skipped=len(report.skipped),
        failed=len(report.failed),
        failed_files=[{"path": str(path), "reason": reason} for path, reason in report.failed],
    )
    return report


# --- internals ---------------------------------------------------------------------------------


class _SourceSound:
    """A source's first audio track, decoded once and in order, handed out span by span.

    Samples are counted from the source's first video frame: a track that starts later is
    preceded by silence, one that starts earlier loses its head, so each clip's sound starts at
    its first frame. A span the track does not cover is filled with silence. Only the samples of
    the span being cut are held, so an hour-long source costs no more memory than its longest scene.
    """

    def __init__(self, path: Path, container: av.container.InputContainer) -> None:
        self.path = path
        stream = container.streams.audio[0]
        self.rate: int = stream.codec_context.sample_rate
        self.layout: str = _AAC_LAYOUTS.get(stream.codec_context.channels, "stereo")
        self.channels = len(av.AudioLayout(self.layout).channels)
        video = container.streams.video[0] if container.streams.video else None
        self._origin_s = float(video.start_time * video.time_base) if video and video.start_time else 0.0
        self._frames = container.decode(stream)
        # Planar float at the source's own rate, in the layout the AAC encoder takes.
        self._resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
        # Decoded pieces, joined only when a span is cut (joining per audio frame would copy quadratically).
        self._pieces: list[np.ndarray] = []
        self._held = 0  # samples in _pieces
        self._first: int | None = None  # sample index (from the origin) of the first held sample
        self._exhausted = False

    @classmethod
    @contextmanager
    def open(cls, path: Path) -> Iterator[_SourceSound | None]:
        """The sound of `path`, or None when it has no audio track (or PyAV cannot open it at all)."""
        try:
            container = av.open(str(path))
        except av.error.FFmpegError:
            yield None
            return
        with container:
            yield cls(path, container) if container.streams.audio else None

    def take(self, start_s: float, end_s: float) -> np.ndarray:
        """[channels, samples] float32 of the span [start_s, end_s); spans must come in order."""
        start, end = round(start_s * self.rate), round(end_s * self.rate)
        while not self._exhausted and (self._first is None or self._first + self._held < end):
            self._decode_more()
        span = np.zeros((self.channels, end - start), dtype=np.float32)
        if self._first is None:  # the track holds no sample at all
            return span
        held = np.concatenate(self._pieces, axis=1) if self._pieces else np.zeros((self.channels, 0), np.float32)
        low, high = max(start, self._first), min(end, self._first + self._held)
        if high > low:
            span[:, low - start : high - start] = held[:, low - self._first : high - self._first]
        # Later spans never reach back: keep only what lies after this one.
        drop = min(self._held, max(0, end - self._first))
        self._pieces, self._held, self._first = [held[:, drop:]], self._held - drop, self._first + drop
        return span

    def _decode_more(self) -> None:
        try:
            frame = next(self._frames, None)
            converted = self._resampler.resample(frame)
        except av.error.FFmpegError as error:
            raise MediaError(f"{self.path}: its sound track cannot be decoded ({error})") from error
        if frame is None:
            self._exhausted = True
        elif self._first is None:
            self._first = round((float(frame.time or 0.0) - self._origin_s) * self.rate)
        for piece in converted:
            self._pieces.append(piece.to_ndarray())
            self._held += self._pieces[-1].shape[1]


def _add_sound(clip: Path, sound: _SourceSound, start_s: float, end_s: float) -> None:
    """Mux the source's sound of [start_s, end_s) into `clip` as AAC; its H.264 stream is copied as it is."""
    samples = sound.take(start_s, end_s)
    partial = clip.with_name(f".{clip.stem}.sound-partial{clip.suffix}")
    try:
        with av.open(str(clip)) as silent, av.open(str(partial), "w", format="mp4") as target:
            video_in = silent.streams.video[0]
            video_out = target.add_stream_from_template(video_in)
            audio = target.add_stream("aac", rate=sound.rate, layout=sound.layout)
            for packet in silent.demux(video_in):
                if packet.dts is None:  # the demuxer's empty flush packet
                    continue
                packet.stream = video_out
                target.mux(packet)
            # PyAV 18 drops the encoder's last partial frame (1024 samples for AAC): pad the span
            # with silence to whole frames, at most 1023 samples (23 ms at 44.1 kHz) longer.
            frame_size = audio.codec_context.frame_size
            padded = np.pad(samples, ((0, 0), (0, -samples.shape[1] % frame_size)))
            for offset in range(0, padded.shape[1], frame_size):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(padded[:, offset : offset + frame_size]), format="fltp", layout=sound.layout
                )
                frame.sample_rate, frame.pts = sound.rate, offset
                target.mux(audio.encode(frame))
            target.mux(audio.encode(None))
        replace_with_retry(partial, clip)
    finally:
        partial.unlink(missing_ok=True)


def _sources(inputs: Path, output_dir: Path) -> list[Path]:
    """The videos and images to take; an output folder nested inside the input folder is never read back."""
    if inputs.is_file():
        if inputs.suffix.lower() not in MEDIA_EXTENSIONS:
            raise MediaError(
                f"{inputs}: is not a video or image file (expected {', '.join(sorted(MEDIA_EXTENSIONS))})"
            )
        return [inputs]
    if not inputs.is_dir():
        raise MediaError(f"{inputs}: no such file or folder")
    resolved_output = output_dir.resolve()
    return [path for path in find_media(inputs) if not path.resolve().is_relative_to(resolved_output)]


def _manifest_path(source: Path, clip_dir: Path) -> Path:
    return clip_dir / MANIFEST_FOLDER / f"{source.stem}.json"


def _source_stamp(source: Path) -> dict:
    stat = source.stat()
    return {"source": source.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _write_manifest(source: Path, clip_dir: Path, clips: list[Path], settings: dict, complete: bool) -> None:
    manifest = {
        **_source_stamp(source),
        "complete": complete,
        "clips": [clip.name for clip in clips],
        "settings": settings,
    }
    path = _manifest_path(source, clip_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
    partial.replace(path)


def _already_split(source: Path, clip_dir: Path) -> bool:
    """True when this source's clips are all there; clips of an interrupted split or of a
    source changed since are removed.

    Raises MediaError when the clips there belong to another source with the same stem (a.mp4
    beside a.mov), which would otherwise be overwritten.
    """
    manifest_path = _manifest_path(source, clip_dir)
    if not manifest_path.is_file():
        return (clip_dir / scene_clip_name(source, 1)).is_file()
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if manifest.get("source") != source.name:
        raise MediaError(
            f"{source}: its clips would overwrite those of {manifest.get('source')} in {clip_dir} "
            "(same name, other extension); rename one of them"
        )
    stamp_matches = all(manifest.get(key) == value for key, value in _source_stamp(source).items())
    clips = [clip_dir / name for name in manifest.get("clips", [])]
    if stamp_matches and manifest.get("complete") and all(clip.is_file() for clip in clips):
        return True
    for clip in clips:  # an interrupted split, or a source changed since: these clips are stale
        clip.unlink(missing_ok=True)
    manifest_path.unlink()
    return False
