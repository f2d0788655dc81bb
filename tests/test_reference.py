"""IC-LoRA reference videos: each kind made at the clip's own size, length and rate; re-runs skip
what is made; unreadable clips are named; the command line's exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ltxtrainer.media import probe_video, read_frames
from ltxtrainer.reference import (
    REFERENCE_KINDS,
    compute_references,
    find_reference,
    reference_file_name,
    reference_frame,
)
from ltxtrainer.synthetic import make_clip, scene_frames

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_clips(folder: Path) -> dict[str, Path]:
    """Two clips, one in a sub-folder with a Chinese name and different size, length and rate."""
    return {
        "top": make_clip(folder / "walk one.mp4", width=96, height=64, frames_per_scene=(17,), fps=24.0),
        "nested": make_clip(folder / "子 folder" / "跑步.mp4", width=64, height=96, frames_per_scene=(12,), fps=30.0),
    }


def test_every_kind_keeps_the_clips_size_length_and_rate(tmp_path):
    clips = write_clips(tmp_path / "clips")
    for kind in REFERENCE_KINDS:
        output = tmp_path / f"refs {kind}"
        report = compute_references(tmp_path / "clips", output, kind)
        assert sorted(report.written) == sorted(clips.values()) and not report.failed
        for clip in clips.values():
            reference = output / clip.parent.relative_to(tmp_path / "clips") / reference_file_name(clip)
            clip_info, reference_info = probe_video(clip), probe_video(reference)
            assert (reference_info.width, reference_info.height, reference_info.num_frames) == (
                clip_info.width, clip_info.height, clip_info.num_frames,
            )
            assert reference_info.fps == pytest.approx(clip_info.fps)
            # The written frames are the kind applied to the clip's frames (up to H.264's loss),
            # and far from the clip itself (for gray: its colour is gone).
            source, made = read_frames(clip).astype(np.int16), read_frames(reference).astype(np.int16)
            expected = np.stack([reference_frame(frame.astype(np.uint8), kind) for frame in source]).astype(np.int16)
            assert np.abs(made - expected).mean() < 0.5 * np.abs(made - source).mean(), kind


def test_each_kind_shows_what_its_name_says():
    frame = scene_frames(128, 96, 9, scene_index=1)[4]
    canny = reference_frame(frame, "canny")
    assert canny.shape == frame.shape and set(np.unique(canny)) == {0, 255}
    assert (canny[..., 0] == canny[..., 1]).all() and (canny[..., 1] == canny[..., 2]).all()
    gray = reference_frame(frame, "gray")
    assert (gray[..., 0] == gray[..., 2]).all() and not (frame[..., 0] == frame[..., 2]).all()

    def sharpness(image: np.ndarray) -> float:
        return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())

    for kind in ("blur", "downscale"):
        softened = reference_frame(frame, kind)
        assert softened.shape == frame.shape and sharpness(softened) < 0.5 * sharpness(frame), kind


def test_a_rerun_skips_unchanged_clips_and_remakes_changed_ones(tmp_path):
    clips = write_clips(tmp_path / "clips")
    output = tmp_path / "refs"
    compute_references(tmp_path / "clips", output, "canny")
    reference = output / reference_file_name(clips["top"])
    stamp = reference.stat().st_mtime_ns

    again = compute_references(tmp_path / "clips", output, "canny")
    assert (again.written, sorted(again.up_to_date)) == ([], sorted(clips.values()))
    assert reference.stat().st_mtime_ns == stamp

    make_clip(clips["top"], width=96, height=64, frames_per_scene=(25,))  # the clip was re-cut
    changed = compute_references(tmp_path / "clips", output, "canny")
    assert (changed.written, changed.up_to_date) == ([clips["top"]], [clips["nested"]])
    assert probe_video(reference).num_frames == 25

    other_kind = compute_references(tmp_path / "clips", output, "blur")
    assert sorted(other_kind.written) == sorted(clips.values())

    reference.unlink()  # a reference deleted by hand is made again
    assert compute_references(tmp_path / "clips", output, "blur").written == [clips["top"]]


def test_unreadable_clips_are_named_and_references_never_become_clips(tmp_path):
    clips_dir = tmp_path / "clips"
    good = make_clip(clips_dir / "good.mp4", width=64, height=64, frames_per_scene=(9,))
    (clips_dir / "broken.mp4").write_bytes(b"not a video" * 40)
    make_clip(clips_dir / "good_reference.mp4", width=64, height=64, frames_per_scene=(9,))  # a user's own
    output = clips_dir / "references"  # inside the clips folder
    report = compute_references(clips_dir, output, "gray")
    assert report.written == [good]
    assert [path.name for path, _ in report.failed] == ["broken.mp4"]
    assert "broken.mp4" in report.failed[0][1]
    again = compute_references(clips_dir, output, "gray")  # references/good_reference.mp4 is not a clip
    assert (again.written, again.up_to_date) == ([], [good])
    assert sorted(p.name for p in output.rglob("*.mp4")) == ["good_reference.mp4"]


def test_find_reference_matches_the_naming_rules(tmp_path):
    references = tmp_path / "refs"
    (references / "sub").mkdir(parents=True)
    for name in ("a_reference.mp4", "a.mp4", "sub/b.MOV", "c.txt", "d_reference.webm"):
        (references / name).write_bytes(b"x")
    assert find_reference("a.mp4", references) == references / "a_reference.mp4"  # ours wins
    assert find_reference("sub/b.mkv", references) == references / "sub" / "b.MOV"
    assert find_reference(Path("d.mov"), references) == references / "d_reference.webm"
    assert find_reference("c.mp4", references) is None  # not a video
    assert find_reference("b.mp4", references) is None  # wrong sub-folder
    assert find_reference("x/a.mp4", references) is None


def run_script(*arguments: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "compute_reference.py"), *arguments],
        capture_output=True, text=True, encoding="utf-8", env={**os.environ, **(env or {})}, timeout=120,
    )


def test_command_line_reports_progress_and_exit_codes(tmp_path):
    clips_dir = tmp_path / "my clips 片段"
    make_clip(clips_dir / "a.mp4", width=64, height=64, frames_per_scene=(9,))
    output = tmp_path / "参考 refs"

    stopped = run_script(str(clips_dir), "--kind", "canny", "--output-dir", str(output),
                         env={"LTXT_STOP_FILE": str(clips_dir / "a.mp4")})  # the stop file exists already
    assert stopped.returncode == 130 and not (output / "a_reference.mp4").exists()

    done = run_script(str(clips_dir), "--kind", "canny", "--output-dir", str(output))
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["done"] for e in events if e["event"] == "progress"] == [0, 1]
    summary = events[-1]
    assert (summary["event"], summary["stage"], summary["written"]) == ("summary", "reference", 1)
    assert (output / "a_reference.mp4").is_file()

    assert run_script(str(tmp_path / "missing"), "--kind", "gray", "--output-dir", str(output)).returncode == 2
    (tmp_path / "empty").mkdir()
    assert run_script(str(tmp_path / "empty"), "--kind", "gray", "--output-dir", str(output)).returncode == 2
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.mp4").write_bytes(b"not a video" * 40)
    failed = run_script(str(tmp_path / "bad"), "--kind", "gray", "--output-dir", str(output))
    assert failed.returncode == 1 and "x.mp4" in failed.stderr
    refused = run_script(str(clips_dir), "--kind", "sketch", "--output-dir", str(output))
    assert refused.returncode == 2 and "canny" in refused.stderr
