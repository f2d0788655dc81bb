"""Captioning: the captioner interface, its backends (api, llava, qwen, files, demo) and the stage."""

from ltxtrainer.captioning.backends import BACKENDS, DEFAULT_API_KEY_ENV, open_captioner
from ltxtrainer.captioning.base import DEFAULT_INSTRUCTION, Captioner, CaptionError, FatalCaptionError
from ltxtrainer.captioning.stage import CaptionReport, caption_clips
from ltxtrainer.captioning.store import CAPTIONS_FILE

__all__ = [
    "BACKENDS",
    "CAPTIONS_FILE",
    "DEFAULT_API_KEY_ENV",
    "DEFAULT_INSTRUCTION",
    "CaptionError",
    "CaptionReport",
    "Captioner",
    "FatalCaptionError",
    "caption_clips",
    "open_captioner",
]
