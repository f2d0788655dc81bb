"""The folders the GUI works in, safe path handling, projects and their clips and captions.

Every name or path typed into the GUI is resolved here against one of the project folders and
refused if it could point anywhere else (`..`, absolute paths, drive letters, symlinks out):
the GUI may be reachable over a network, and a text box must never become a file browser.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ltxtrainer.captioning.store import (
    caption_text_path,
    load_captions,
    media_key,
    read_caption_text,
    save_captions,
    write_caption_text,
)
from ltxtrainer.dataset_key import MEDIA_EXTENSIONS
from ltxtrainer.media import MediaError, find_videos, probe_video
from ltxtrainer.pipeline import (
    PipelineError,
    PipelineOptions,
    ProjectPaths,
    check_project_name,
    project_paths,
)
from ltxtrainer.reference import REFERENCE_KINDS, find_reference

REPO_ROOT = Path(__file__).resolve().parents[2]
_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafePathError(ValueError):
    """A path from the GUI that would leave the project folders."""


@dataclass(frozen=True)
class AppPaths:
    """The GUI's folders; jobs run with `root` as their working directory."""

    root: Path = REPO_ROOT
    train_date: Path = REPO_ROOT / "train_date"
    datasets: Path = REPO_ROOT / "datasets"
    outputs: Path = REPO_ROOT / "outputs"
    models: Path = REPO_ROOT / "models"
    configs: Path = REPO_ROOT / "configs"

    @property
    def jobs(self) -> Path:
        return self.outputs / ".jobs"

    @property
    def settings_file(self) -> Path:
        return self.outputs / ".ui" / "settings.json"

    @property
    def comfyui_exports(self) -> Path:
        return self.outputs / "comfyui"

    @property
    def scripts(self) -> Path:
        return self.root / "scripts"


def safe_join(base: Path, relative: str) -> Path:
    """`base / relative`, refusing anything that could resolve outside `base`."""
    text = (relative or "").strip()
    if not text:
        raise UnsafePathError("empty path")
    if _DRIVE.match(text) or text.startswith(("/", "\\")) or Path(text).is_absolute():
        raise UnsafePathError(f"{text!r}: absolute paths and drive letters are not allowed; give a path inside {base}")
    parts = PurePosixPath(text.replace("\\", "/")).parts
    if ".." in parts:
        raise UnsafePathError(f"{text!r}: '..' is not allowed")
    path = base.joinpath(*parts)
    if not path.resolve().is_relative_to(base.resolve()):
        raise UnsafePathError(f"{text!r} leads outside {base}")
    return path


def project_layout(paths: AppPaths, project: str, width: int = 768, height: int = 512, frames: int = 49) -> ProjectPaths:
    """The pipeline's folders for a project (its own rules, including the name check)."""
    options = PipelineOptions(
        project=project, width=width, height=height, frames=frames,
        train_date_dir=paths.train_date, work_dir=paths.datasets, outputs_dir=paths.outputs,
    )
    return project_paths(options)


# ---- projects --------------------------------------------------------------------------------------

# The videos and still images preprocess trains on (dataset_key holds them without importing torch).
UPLOAD_EXTENSIONS = MEDIA_EXTENSIONS

_probe_cache: dict[tuple[str, int, int], tuple[float, int]] = {}


def _probe(path: Path) -> tuple[float, int]:
    """(seconds, frames) of a video, cached by size and mtime: project lists are redrawn often."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _probe_cache:
        try:
            info = probe_video(path)
            _probe_cache[key] = (info.duration_s, info.num_frames)
        except MediaError:
            _probe_cache[key] = (0.0, 0)
    return _probe_cache[key]


def clip_duration(path: Path) -> float:
    return _probe(path)[0]


def clip_frame_counts(paths: AppPaths, project: str) -> list[int]:
    """Frames of each clip that will be trained on (scene clips once split, else the raw videos)."""
    return [_probe(video)[1] for video in find_videos(clips_folder(paths, project))]


def create_project(paths: AppPaths, name: str, files: Iterable[str | Path]) -> Path:
    """A new project folder train_date/<name>/ holding copies of the uploaded videos and images.

    The name is checked by the pipeline's own rule (it becomes the trigger word). Refuses a name
    already taken, no files, and files that are neither video nor image, before copying anything.
    """
    name = check_project_name((name or "").strip())
    folder = safe_join(paths.train_date, name)
    if folder.exists():
        raise PipelineError(f"Project {name!r} already exists in {paths.train_date}; choose another name.")
    sources = [Path(file) for file in files]
    if not sources:
        raise PipelineError("No files: add at least one video or image.")
    refused = [source.name for source in sources if source.suffix.lower() not in UPLOAD_EXTENSIONS]
    if refused:
        allowed = " ".join(sorted(UPLOAD_EXTENSIONS))
        raise PipelineError(f"Not a video or image: {', '.join(refused)}. Allowed: {allowed}.")
    folder.mkdir(parents=True)
    taken: set[str] = set()
    for source in sources:
        target_name = source.name
        stem, suffix, number = source.stem, source.suffix, 1
        while target_name.lower() in taken:  # two uploads with one name keep both
            number += 1
            target_name = f"{stem}_{number}{suffix}"
        taken.add(target_name.lower())
        shutil.copy2(source, folder / target_name)
    return folder


@dataclass(frozen=True)
class ProjectSummary:
    name: str
    clips: int
    duration_s: float


def list_projects(paths: AppPaths) -> list[ProjectSummary]:
    """Every folder in train_date/ with its number of videos and their total length."""
    if not paths.train_date.is_dir():
        return []
    projects = []
    for folder in sorted(p for p in paths.train_date.iterdir() if p.is_dir() and not p.name.startswith(".")):
        videos = find_videos(folder)
        projects.append(ProjectSummary(folder.name, len(videos), sum(clip_duration(v) for v in videos)))
    return projects


def clips_folder(paths: AppPaths, project: str) -> Path:
    """The folder whose clips get captions: the scene clips once split, else the raw videos."""
    layout = project_layout(paths, project)
    if layout.scenes_dir.is_dir() and find_videos(layout.scenes_dir):
        return layout.scenes_dir
    return layout.raw_dir


def list_clips(paths: AppPaths, project: str) -> list[str]:
    """Clip paths relative to the project's clips folder (forward slashes)."""
    folder = clips_folder(paths, project)
    if not folder.is_dir():
        return []
    return [media_key(folder, clip) for clip in find_videos(folder)]


def clip_path(paths: AppPaths, project: str, clip: str) -> Path:
    path = safe_join(clips_folder(paths, project), clip)
    if not path.is_file():
        raise FileNotFoundError(f"{clip}: no such clip in project {project}")
    return path


def clip_reference(paths: AppPaths, project: str, clip: str, kind: str | None = None,
                   own_folder: str | None = None) -> Path | None:
    """The IC-LoRA reference video of a clip, None when it has none.

    Looked up (`reference.find_reference`) in the user's own folder when the chosen kind is
    "folder", then in the references the pipeline computed for the chosen kind, then for the
    other kinds (`datasets/<project>/references_<kind>/`).
    """
    layout = project_layout(paths, project)
    kinds = [kind] if kind in REFERENCE_KINDS else []
    kinds += [other for other in REFERENCE_KINDS if other not in kinds]
    folders = [Path(own_folder)] if kind == "folder" and own_folder and own_folder.strip() else []
    folders += [layout.computed_references(other) for other in kinds]
    for folder in folders:
        found = find_reference(clip, folder)
        if found is not None:
            return found
    return None


def read_caption(paths: AppPaths, project: str, clip: str) -> str:
    """The `.txt` beside the clip first (the file people edit), then captions.json."""
    path = clip_path(paths, project, clip)
    text = read_caption_text(path)
    if text is not None:
        return text
    return load_captions(clips_folder(paths, project)).get(clip, "")


def save_caption(paths: AppPaths, project: str, clip: str, caption: str) -> Path:
    """Write one caption to the clip's .txt and to captions.json, so both stay in agreement."""
    path = clip_path(paths, project, clip)
    caption = caption.strip()
    if not caption:
        raise ValueError("empty caption")
    folder = clips_folder(paths, project)
    write_caption_text(path, caption)
    captions = load_captions(folder)
    captions[media_key(folder, path)] = caption
    return save_captions(folder, captions)


def forget_caption(paths: AppPaths, project: str, clip: str) -> None:
    """Remove one clip's caption so the captioning stage (which skips captioned clips) redoes it."""
    path = clip_path(paths, project, clip)
    folder = clips_folder(paths, project)
    caption_text_path(path).unlink(missing_ok=True)
    captions = load_captions(folder)
    if captions.pop(media_key(folder, path), None) is not None:
        save_captions(folder, captions)
