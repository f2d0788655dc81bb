"""The `files` backend: captions someone already wrote, from `.txt` files or a CSV/JSON table.

Users arrive with captions from other trainers (a `.txt` beside each clip, a reference-trainer
`captions.json`, a spreadsheet exported as CSV). Reading them through the same stage gives them
the trigger word, the `captions.json` layout and the per-clip report without any model.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from ltxtrainer.captioning.base import Captioner, CaptionError
from ltxtrainer.captioning.store import caption_text_path, read_caption_text

PATH_COLUMNS = ("media_path", "video", "path", "file", "filename", "media")
CAPTION_COLUMNS = ("caption", "text", "prompt", "description")


class FileCaptioner(Captioner):
    """Looks a clip's caption up in `captions_from` (a table or a folder of .txt), or beside it."""

    name = "files"

    def __init__(self, captions_from: str | Path | None = None):
        self.captions_from = Path(captions_from) if captions_from else None
        self._table: _CaptionTable | None = None
        if self.captions_from is None:
            return
        if not self.captions_from.exists():
            raise FileNotFoundError(f"--captions-from {self.captions_from}: no such file or folder")
        if self.captions_from.is_file():
            self._table = _CaptionTable(read_caption_table(self.captions_from), self.captions_from.parent)

    def caption(self, frames: list[np.ndarray], instruction: str) -> str:
        raise CaptionError("the files backend reads existing captions; it cannot caption frames")

    def caption_video(self, path: Path, instruction: str, frames_per_clip: int) -> str:
        if self._table is not None:
            return self._table.lookup(path)
        if self.captions_from is not None and self.captions_from.is_dir():
            text_file = self.captions_from / caption_text_path(Path(path.name))
            found = text_file.read_text(encoding="utf-8-sig").strip() if text_file.is_file() else None
        else:
            text_file = caption_text_path(path)
            found = read_caption_text(path)
        if not found:
            raise CaptionError(f"no caption file {text_file.name} (or it is empty)")
        return found


def read_caption_table(path: Path) -> list[tuple[str, str]]:
    """(media path, caption) rows from a .json (list of objects or {path: caption}), .jsonl or .csv."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return _csv_rows(path)
        if suffix == ".jsonl":
            lines = path.read_text(encoding="utf-8-sig").splitlines()
            return [_row_from_object(json.loads(line), path) for line in lines if line.strip()]
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8-sig"))
            if isinstance(data, dict):
                return [(str(key), str(value)) for key, value in data.items()]
            return [_row_from_object(entry, path) for entry in data]
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: cannot read captions from it ({error})") from None
    raise ValueError(f"{path}: captions must come from a .csv, .json or .jsonl file or a folder of .txt files")


def _row_from_object(entry: object, source: Path) -> tuple[str, str]:
    if not isinstance(entry, dict):
        raise ValueError(f"expected objects with a media path and a caption, got {type(entry).__name__}")
    path_key = next((key for key in PATH_COLUMNS if key in entry), None)
    caption_key = next((key for key in CAPTION_COLUMNS if key in entry), None)
    if path_key is None or caption_key is None:
        raise ValueError(f"an entry has keys {sorted(entry)}; expected one of {PATH_COLUMNS} and one of {CAPTION_COLUMNS}")
    return str(entry[path_key]), str(entry[caption_key])


def _csv_rows(path: Path) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0]]
    path_index = next((header.index(name) for name in PATH_COLUMNS if name in header), None)
    caption_index = next((header.index(name) for name in CAPTION_COLUMNS if name in header), None)
    if path_index is None or caption_index is None:  # no header: first column path, second caption
        path_index, caption_index, body = 0, 1, rows
    else:
        body = rows[1:]
    return [(row[path_index], row[caption_index]) for row in body if len(row) > max(path_index, caption_index)]


class _CaptionTable:
    """Matches clips to table rows by full path, path relative to the table, file name, or stem.

    Tables made elsewhere name clips in every way: absolute paths from another machine, paths
    relative to the table, bare file names. A bare name or stem only counts when it is unique.
    """

    def __init__(self, rows: list[tuple[str, str]], table_folder: Path):
        self.by_path: dict[Path, str] = {}
        self.by_name: dict[str, list[str]] = defaultdict(list)
        self.by_stem: dict[str, list[str]] = defaultdict(list)
        for media_path, caption in rows:
            key = Path(media_path.strip().replace("\\", "/"))
            location = key if key.is_absolute() else table_folder / key
            self.by_path[location.resolve()] = caption
            self.by_name[key.name].append(caption)
            self.by_stem[key.stem].append(caption)

    def lookup(self, clip: Path) -> str:
        found = self.by_path.get(clip.resolve())
        if found is None and len(self.by_name.get(clip.name, [])) == 1:
            found = self.by_name[clip.name][0]
        if found is None and len(self.by_stem.get(clip.stem, [])) == 1:
            found = self.by_stem[clip.stem][0]
        if found is None or not found.strip():
            raise CaptionError(f"no caption for {clip.name} in the captions table")
        return found.strip()
