"""The captioner interface every backend implements, and the errors a stage can report.

A captioner turns a handful of RGB frames plus an instruction into one paragraph of text. The
stage never needs to know whether that happens on a local GPU, behind an HTTP API or by reading
a file, so the API backend, the local VLMs, the file reader and the demo are interchangeable.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

DEFAULT_INSTRUCTION = (
    "Describe this video in one detailed paragraph of plain English, as a caption for training a "
    "video generation model: the main subjects and what they do, their appearance, the setting, "
    "the lighting and colours, and how the camera moves. Start directly with the description; "
    "no preamble, no lists, no opinions."
)
# For a still image: it trains as a one-frame clip, so the caption describes what a video of it
# would show, but asking how the camera moves would invite an invented motion.
DEFAULT_IMAGE_INSTRUCTION = (
    "Describe this image in one detailed paragraph of plain English, as a caption for training a "
    "video generation model: the main subjects and what they are doing, their appearance, the "
    "setting, the lighting and colours, and the framing. Start directly with the description; "
    "no preamble, no lists, no opinions."
)

TRIGGER_WORD_PATTERN = re.compile(r"[A-Za-z0-9_-]+")


class CaptionError(Exception):
    """One clip could not be captioned; the message is one readable line, already scrubbed."""


class FatalCaptionError(CaptionError):
    """No clip can be captioned (wrong key, unknown model, unreachable server): stop the stage."""


class Captioner:
    """Base of every backend: `caption(frames, instruction) -> str`, a `name`, `close()`.

    `parallel_requests` tells the stage how many clips it may caption at once: an HTTP API gains
    from several requests in flight, a local model on one GPU does not.
    """

    name = "captioner"
    parallel_requests = 1

    def caption(self, frames: list[np.ndarray], instruction: str) -> str:
        raise NotImplementedError

    def caption_video(self, path: Path, instruction: str, frames_per_clip: int) -> str:
        """Sample frames evenly from `path` and caption them (the file backend reads text instead).

        A still image decodes as a video of one frame, so it is captioned from that one frame:
        the same decoder and pixels preprocessing trains on.
        """
        from ltxtrainer.media import sample_frames

        return self.caption(sample_frames(path, frames_per_clip), instruction)

    def redact(self, text: str) -> str:
        """Remove this backend's secrets from a message before anyone logs or stores it."""
        return text

    def close(self) -> None:
        """Free the model or connection; the default backend holds nothing."""

    def __enter__(self) -> Captioner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def clean_caption(text: str) -> str:
    """One paragraph: models like to answer with line breaks and runs of spaces."""
    return " ".join(text.split())


def check_trigger_word(word: str) -> str:
    """The trigger word must survive every tokenizer and file name unchanged (DESIGN conventions)."""
    if not TRIGGER_WORD_PATTERN.fullmatch(word):
        raise ValueError(
            f"trigger word {word!r} may contain only ASCII letters, digits, '_' and '-' "
            "(no spaces or other characters); choose a short made-up word such as 'sks_style'"
        )
    return word


def with_trigger_word(caption: str, trigger_word: str | None) -> str:
    """Put the trigger word at the front of the caption unless it already appears as a word."""
    if not trigger_word:
        return caption
    if re.search(rf"(?<![\w-]){re.escape(trigger_word)}(?![\w-])", caption):
        return caption
    return f"{trigger_word}, {caption}"
