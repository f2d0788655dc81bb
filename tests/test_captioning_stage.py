"""The captioning stage: idempotent re-runs, crash safety, trigger words, file layout and the CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ltxtrainer.captioning import caption_clips
from ltxtrainer.captioning.base import Captioner
from ltxtrainer.captioning.demo import DemoCaptioner, describe_frames
from ltxtrainer.captioning.files import FileCaptioner
from ltxtrainer.synthetic import make_clip, scene_frames

REPO_ROOT = Path(__file__).resolve().parents[1]


class CountingDemo(DemoCaptioner):
    """The demo captioner, counting how often the stage really asked for a caption."""

    def __init__(self, crash_on: int | None = None):
        self.calls = 0
        self.crash_on = crash_on

    def caption(self, frames: list[np.ndarray], instruction: str) -> str:
        self.calls += 1
        if self.calls == self.crash_on:
            raise KeyboardInterrupt("the machine went down")
        return super().caption(frames, instruction)


@pytest.fixture
def clips_dir(tmp_path) -> Path:
    """Three clips with different colours, one in a subfolder, names with spaces and Chinese."""
    folder = tmp_path / "train_date" / "我的 clips"
    make_clip(folder / "a red.mp4", 64, 48, (9,), 8)
    make_clip(folder / "b.mp4", 64, 48, (9,), 8)
    make_clip(folder / "场景" / "c.mov", 64, 48, (9,), 8)
    return folder


def saved_captions(folder: Path) -> dict[str, str]:
    entries = json.loads((folder / "captions.json").read_text(encoding="utf-8"))
    return {entry["media_path"]: entry["caption"] for entry in entries}


def test_second_run_does_no_work(clips_dir):
    captioner = CountingDemo()
    first = caption_clips(clips_dir, captioner, trigger_word="sks")
    assert first.captioned == ["a red.mp4", "b.mp4", "场景/c.mov"] and first.complete
    captions_json = (clips_dir / "captions.json").read_bytes()
    second = caption_clips(clips_dir, captioner, trigger_word="sks")
    assert second.captioned == [] and second.failed == []
    assert second.skipped == ["a red.mp4", "b.mp4", "场景/c.mov"]
    assert captioner.calls == 3
    assert (clips_dir / "captions.json").read_bytes() == captions_json


def test_outputs_use_relative_paths_and_a_txt_beside_each_clip(clips_dir):
    caption_clips(clips_dir, DemoCaptioner(), trigger_word="sks")
    captions = saved_captions(clips_dir)
    assert list(captions) == ["a red.mp4", "b.mp4", "场景/c.mov"]
    assert str(clips_dir) not in (clips_dir / "captions.json").read_text(encoding="utf-8")
    for media_path, caption in captions.items():
        assert caption.startswith("sks, A white square moves")
        assert (clips_dir / media_path).with_suffix(".txt").read_text(encoding="utf-8") == caption + "\n"


def test_crash_mid_run_keeps_finished_captions_and_a_rerun_finishes_the_rest(clips_dir):
    with pytest.raises(KeyboardInterrupt):
        caption_clips(clips_dir, CountingDemo(crash_on=3))
    assert list(saved_captions(clips_dir)) == ["a red.mp4", "b.mp4"]
    assert not list(clips_dir.rglob(".*.tmp")), "no half-written temporary files are left behind"
    rerun = CountingDemo()
    report = caption_clips(clips_dir, rerun)
    assert report.captioned == ["场景/c.mov"] and rerun.calls == 1


def test_existing_captions_are_kept_unless_overwrite_and_get_the_trigger_word(clips_dir):
    (clips_dir / "b.txt").write_text("A hand-written caption about sks.\n", encoding="utf-8")
    (clips_dir / "a red.txt").write_text("A person waves.\n", encoding="utf-8")
    captioner = CountingDemo()
    report = caption_clips(clips_dir, captioner, trigger_word="sks")
    assert report.skipped == ["a red.mp4", "b.mp4"] and report.captioned == ["场景/c.mov"]
    captions = saved_captions(clips_dir)
    assert captions["b.mp4"] == "A hand-written caption about sks."  # already has the word: unchanged
    assert captions["a red.mp4"] == "sks, A person waves."
    assert (clips_dir / "a red.txt").read_text(encoding="utf-8") == "sks, A person waves.\n"

    again = caption_clips(clips_dir, captioner, trigger_word="sks", overwrite=True)
    assert len(again.captioned) == 3 and captioner.calls == 4
    assert saved_captions(clips_dir)["b.mp4"].startswith("sks, A white square")


def test_a_broken_clip_is_reported_and_the_others_are_captioned(clips_dir):
    (clips_dir / "broken.mp4").write_bytes(b"this is not a video")
    report = caption_clips(clips_dir, DemoCaptioner())
    assert [path for path, _ in report.failed] == ["broken.mp4"]
    assert report.failed[0][1]  # a reason, not an empty string
    assert len(report.captioned) == 3 and "broken.mp4" not in saved_captions(clips_dir)


def test_demo_captions_follow_the_pixels():
    red, blue = (describe_frames(list(scene_frames(64, 48, 8, index))) for index in (0, 2))
    assert "red background" in red and "blue background" in blue
    assert "from left to right" in red
    assert describe_frames(list(scene_frames(64, 48, 8, 0))) == red  # deterministic


def test_files_backend_reads_a_csv_a_json_table_or_txt_files(clips_dir, tmp_path):
    table = tmp_path / "captions.csv"
    with table.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["media_path", "caption"])
        writer.writerow([str(clips_dir / "a red.mp4"), "From the table, by full path."])
        writer.writerow(["b.mp4", "From the table, by name."])
    report = caption_clips(clips_dir, FileCaptioner(table), trigger_word="sks")
    assert report.captioned == ["a red.mp4", "b.mp4"]
    assert report.failed == [("场景/c.mov", "no caption for c.mov in the captions table")]
    assert saved_captions(clips_dir)["b.mp4"] == "sks, From the table, by name."

    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"场景/c.mov": "From a JSON mapping."}, ensure_ascii=False), encoding="utf-8")
    caption_clips(clips_dir, FileCaptioner(mapping))
    assert saved_captions(clips_dir)["场景/c.mov"] == "From a JSON mapping."

    (clips_dir / "b.txt").write_text("Edited by hand.\n", encoding="utf-8")
    rerun = caption_clips(clips_dir, FileCaptioner(), overwrite=True)
    assert rerun.complete and saved_captions(clips_dir)["b.mp4"] == "Edited by hand."


def test_invalid_trigger_word_is_refused(clips_dir):
    with pytest.raises(ValueError, match="ASCII letters"):
        caption_clips(clips_dir, DemoCaptioner(), trigger_word="two words")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO_ROOT / "scripts" / "caption_videos.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, encoding="utf-8", timeout=120)


def test_command_line_exit_status_says_whether_every_clip_has_a_caption(clips_dir, tmp_path):
    (clips_dir / "broken.mp4").write_bytes(b"not a video")
    failed = run_cli(str(clips_dir), "--backend", "demo", "--trigger-word", "sks")
    assert failed.returncode == 1
    assert "1 of 4 clips failed; re-run to finish them" in failed.stderr
    assert "Traceback" not in failed.stderr
    (clips_dir / "broken.mp4").unlink()
    done = run_cli(str(clips_dir), "--backend", "demo", "--trigger-word", "sks")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["event"] == "summary" and summary["skipped"] == 3 and summary["captioned"] == 0

    empty = run_cli(str(tmp_path / "empty"), "--backend", "demo")
    assert empty.returncode != 0 and "not a folder" in empty.stderr
    no_key = run_cli(str(clips_dir), "--backend", "api", "--api-model", "m", "--api-key-env", "NO_SUCH_VAR_FOR_TEST")
    assert no_key.returncode == 1 and "set the environment variable NO_SUCH_VAR_FOR_TEST" in no_key.stderr


class Unused(Captioner):
    """A captioner the stage must not call when there is nothing to caption."""

    def caption(self, frames, instruction):
        raise AssertionError("no clip needed a caption")


def test_folder_without_clips_reports_nothing_to_do(tmp_path):
    report = caption_clips(tmp_path, Unused())
    assert report.captioned == report.skipped == report.failed == []
    assert not (tmp_path / "captions.json").exists()


class RecordingDemo(CountingDemo):
    """The demo captioner, noting how many frames and which instruction each call got."""

    def __init__(self, crash_on: int | None = None):
        super().__init__(crash_on)
        self.seen: list[tuple[int, str]] = []

    def caption(self, frames: list[np.ndarray], instruction: str) -> str:
        self.seen.append((len(frames), instruction))
        return super().caption(frames, instruction)


def test_images_are_captioned_as_one_frame_each_and_saved_one_by_one(tmp_path):
    from PIL import Image

    from ltxtrainer.captioning.base import DEFAULT_IMAGE_INSTRUCTION, DEFAULT_INSTRUCTION

    folder = tmp_path / "stills"
    folder.mkdir()
    make_clip(folder / "clip.mp4", 64, 48, (9,), 8)
    Image.fromarray(scene_frames(64, 48, 1, 0)[0]).save(folder / "red.png")
    Image.fromarray(scene_frames(64, 48, 1, 2)[0]).save(folder / "蓝 blue.jpg", quality=95)
    with pytest.raises(KeyboardInterrupt):  # the machine goes down at the last image
        caption_clips(folder, RecordingDemo(crash_on=3), trigger_word="sks")
    assert list(saved_captions(folder)) == ["clip.mp4", "red.png"]
    captioner = RecordingDemo()
    report = caption_clips(folder, captioner, trigger_word="sks")
    assert report.captioned == ["蓝 blue.jpg"] and report.skipped == ["clip.mp4", "red.png"]
    assert captioner.seen == [(1, DEFAULT_IMAGE_INSTRUCTION)]
    captions = saved_captions(folder)
    assert captions["red.png"] == "sks, A still, evenly lit shot of a plain red background; the camera does not move."
    assert "blue background" in captions["蓝 blue.jpg"]
    assert (folder / "red.txt").read_text(encoding="utf-8").strip() == captions["red.png"]
    again = caption_clips(folder, captioner, trigger_word="sks", overwrite=True)
    assert saved_captions(folder) == captions and len(again.captioned) == 3  # deterministic
    assert sorted(captioner.seen[1:]) == [(1, DEFAULT_IMAGE_INSTRUCTION)] * 2 + [(8, DEFAULT_INSTRUCTION)]
    caption_clips(folder, captioner, instruction="Name the colour.", overwrite=True)
    assert {instruction for _, instruction in captioner.seen[4:]} == {"Name the colour."}

    table = tmp_path / "captions.csv"
    table.write_text("file,caption\nred.png,a red card\n蓝 blue.jpg,a blue card\nclip.mp4,a clip\n", encoding="utf-8")
    caption_clips(folder, FileCaptioner(table), overwrite=True)
    assert saved_captions(folder) == {"clip.mp4": "a clip", "red.png": "a red card", "蓝 blue.jpg": "a blue card"}
