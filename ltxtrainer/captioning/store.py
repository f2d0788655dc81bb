"""Where captions live on disk: `captions.json` in the clips folder plus one `.txt` beside each clip.

`captions.json` is a list of {"media_path", "caption"} with paths relative to the clips folder
(forward slashes, never absolute), the layout the reference trainer's preprocessing reads, so
the folder can be moved or zipped to another machine. Every write goes through a temporary file
and a rename: the stage saves after every clip, and a crash must never leave half a file.
"""

from __future__ import annotations

import json
from pathlib import Path

from ltxtrainer.atomic import write_text_atomic

CAPTIONS_FILE = "captions.json"


def media_key(clips_dir: Path, clip: Path) -> str:
    """The clip's path relative to the clips folder, with forward slashes on every OS."""
    return clip.relative_to(clips_dir).as_posix()


def caption_text_path(clip: Path) -> Path:
    return clip.with_suffix(".txt")


def load_captions(clips_dir: Path) -> dict[str, str]:
    """Captions already saved in `captions.json` (empty when there is none yet)."""
    path = clips_dir / CAPTIONS_FILE
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        return {str(entry["media_path"]): str(entry["caption"]) for entry in entries}
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(
            f"{path} is not a list of {{\"media_path\", \"caption\"}} entries ({error}); "
            "fix or delete it and run captioning again"
        ) from None


def save_captions(clips_dir: Path, captions: dict[str, str]) -> Path:
    """Replace `captions.json` atomically, entries sorted by path so diffs stay small."""
    entries = [{"media_path": key, "caption": captions[key]} for key in sorted(captions)]
    text = json.dumps(entries, ensure_ascii=False, indent=2) + "\n"
    return write_text_atomic(clips_dir / CAPTIONS_FILE, text)


def read_caption_text(clip: Path) -> str | None:
    """The caption in the `.txt` beside a clip, or None when there is none (or it is empty)."""
    path = caption_text_path(clip)
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8-sig").strip()
    return text or None


def write_caption_text(clip: Path, caption: str) -> Path:
    return write_text_atomic(caption_text_path(clip), caption + "\n")
