"""The captioning stage: give every clip and image in a folder a caption, saving after every single one.

The reference trainer captioned everything and wrote the file once at the end, so a crash or an
API outage at clip 900 of 1000 lost all 899 captions. Here `captions.json` and the clip's `.txt`
are replaced atomically as soon as each caption arrives, and a re-run captions only the clips
that still have none. A clip that fails is reported with its reason and the stage goes on; only
an error that would fail every clip (wrong key, unknown model, unreachable server) stops it.

Which caption is "existing": the `.txt` beside a clip first (that is the file people edit by
hand), then the entry in `captions.json`.

A still image is captioned as a clip of one frame (the pixels preprocessing will train on), with
an instruction about a picture rather than a video unless the caller chose their own.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from ltxtrainer.captioning.base import (
    DEFAULT_IMAGE_INSTRUCTION,
    DEFAULT_INSTRUCTION,
    Captioner,
    CaptionError,
    FatalCaptionError,
    check_trigger_word,
    clean_caption,
    with_trigger_word,
)
from ltxtrainer.captioning.store import (
    CAPTIONS_FILE,
    caption_text_path,
    load_captions,
    media_key,
    read_caption_text,
    save_captions,
    write_caption_text,
)
from ltxtrainer.dataset_key import IMAGE_EXTENSIONS, find_media
from ltxtrainer.progress import emit, say, track

STAGE = "caption"


@dataclass
class CaptionReport:
    """What one run did; paths are relative to the clips folder, with forward slashes."""

    captioned: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    captions_file: Path | None = None

    @property
    def complete(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        total = len(self.captioned) + len(self.skipped) + len(self.failed)
        line = f"{len(self.captioned)} captioned, {len(self.skipped)} already had captions"
        if self.failed:
            line += f"; {len(self.failed)} of {total} clips failed; re-run to finish them"
        return line


def caption_clips(
    clips_dir: str | Path,
    captioner: Captioner,
    instruction: str = DEFAULT_INSTRUCTION,
    trigger_word: str | None = None,
    overwrite: bool = False,
    frames_per_clip: int = 8,
) -> CaptionReport:
    """Caption every video and image under `clips_dir` that has no caption yet (all of them with `overwrite`).

    These are the files preprocessing trains on (`ltxtrainer.dataset_key.find_media`).
    """
    clips_dir = Path(clips_dir)
    if trigger_word:
        check_trigger_word(trigger_word)
    clips = find_media(clips_dir)
    report = CaptionReport(captions_file=clips_dir / CAPTIONS_FILE)
    saved = load_captions(clips_dir)
    captions = {key: text for key, text in saved.items() if (clips_dir / key).is_file()}  # drop deleted clips

    todo: list[Path] = []
    text_owner: dict[Path, str] = {}
    for clip in clips:
        key = media_key(clips_dir, clip)
        other = text_owner.setdefault(caption_text_path(clip), key)
        if other != key:
            report.failed.append((key, f"{other} already uses {caption_text_path(clip).name}; rename one of them"))
            continue
        existing = None if overwrite else (read_caption_text(clip) or captions.get(key))
        if existing:
            _store(clips_dir, clip, with_trigger_word(clean_caption(existing), trigger_word), captions)
            report.skipped.append(key)
        else:
            todo.append(clip)
    if captions != saved:
        save_captions(clips_dir, captions)
    if report.skipped:
        say(f"caption: {len(report.skipped)} clips already have captions (use overwrite to redo them)")

    if todo:
        _caption_all(clips_dir, todo, captioner, instruction, trigger_word, frames_per_clip, captions, report)
        report.captioned.sort()  # clips finish in any order when several are in flight
        report.failed.sort()
    emit(
        "summary",
        stage=STAGE,
        backend=captioner.name,
        total=len(clips),
        captioned=len(report.captioned),
        skipped=len(report.skipped),
        failed=len(report.failed),
        failures=[{"media_path": key, "reason": reason} for key, reason in report.failed],
        captions_file=CAPTIONS_FILE,
    )
    return report


def _caption_all(
    clips_dir: Path,
    todo: list[Path],
    captioner: Captioner,
    instruction: str,
    trigger_word: str | None,
    frames_per_clip: int,
    captions: dict[str, str],
    report: CaptionReport,
) -> None:
    """Caption `todo` with up to `captioner.parallel_requests` clips in flight; save each as it lands."""
    fatal: str | None = None
    stop = threading.Event()

    def caption_one(clip: Path) -> str:
        if stop.is_set():  # a worker must not send one more request after a fatal answer
            raise FatalCaptionError("stopped")
        try:
            return captioner.caption_video(clip, _instruction_for(clip, instruction), frames_per_clip)
        except FatalCaptionError:
            stop.set()
            raise

    executor = ThreadPoolExecutor(max_workers=captioner.parallel_requests, thread_name_prefix="caption")
    futures: dict[Future, Path] = {executor.submit(caption_one, clip): clip for clip in todo}
    progress = track(as_completed(futures), stage=STAGE, total=len(futures), unit="clip")
    try:
        for future in progress:
            fatal = _record(clips_dir, futures.pop(future), future, captioner, trigger_word, captions, report)
            if fatal:
                break
    finally:
        progress.close()
        executor.shutdown(wait=True, cancel_futures=True)
    for future, clip in futures.items():  # only left after a fatal error: keep what finished anyway
        if future.done() and not future.cancelled() and future.exception() is None:
            _record(clips_dir, clip, future, captioner, trigger_word, captions, report)
        else:
            report.failed.append((media_key(clips_dir, clip), f"not captioned: {fatal}"))
    if fatal:
        say(f"caption: stopped: {fatal}")


def _instruction_for(clip: Path, instruction: str) -> str:
    """The default video instruction asks how the camera moves; a still image gets the picture one."""
    if instruction == DEFAULT_INSTRUCTION and clip.suffix.lower() in IMAGE_EXTENSIONS:
        return DEFAULT_IMAGE_INSTRUCTION
    return instruction


def _record(
    clips_dir: Path,
    clip: Path,
    future: Future,
    captioner: Captioner,
    trigger_word: str | None,
    captions: dict[str, str],
    report: CaptionReport,
) -> str | None:
    """Save one finished clip's caption at once, or note why it failed; return a fatal reason."""
    key = media_key(clips_dir, clip)
    try:
        caption = clean_caption(future.result())
        if not caption:
            raise CaptionError("the captioner returned an empty caption")
    except FatalCaptionError as error:
        reason = captioner.redact(str(error))
        report.failed.append((key, reason))
        return reason
    except Exception as error:  # any one clip's failure (bad file, model error) must not stop the others
        reason = str(error) if isinstance(error, CaptionError) else f"{type(error).__name__}: {error}"
        reason = captioner.redact(reason)
        report.failed.append((key, reason))
        say(f"caption: {key}: {reason}")
        return None
    _store(clips_dir, clip, with_trigger_word(caption, trigger_word), captions)
    save_captions(clips_dir, captions)
    report.captioned.append(key)
    return None


def _store(clips_dir: Path, clip: Path, caption: str, captions: dict[str, str]) -> None:
    """Put the caption in the table and rewrite the clip's .txt only when its text changes."""
    captions[media_key(clips_dir, clip)] = caption
    if read_caption_text(clip) != caption:
        write_caption_text(clip, caption)
