"""Scene splitting: exact clips per scene, idempotent re-runs, bad files reported, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from ltxtrainer import media, scenes
from ltxtrainer.models import ltx2
from ltxtrainer.precompute_ltx2 import has_sound
from ltxtrainer.synthetic import (
    SCENE_COLOURS,
    make_clip,
    make_clip_with_sound,
    scene_frames,
    write_unusable_files,
)

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "split_scenes.py"


def frame_counts(paths: list[Path]) -> list[int]:
    return [media.probe_video(path).num_frames for path in paths]


@pytest.mark.parametrize("detector", ["content", "adaptive"])
def test_three_hard_cuts_give_three_clips_of_exactly_those_lengths(tmp_path, detector):
    source = make_clip(tmp_path / "in" / "three.mp4", 160, 96, (20, 30, 25))
    report = scenes.split_scenes(tmp_path / "in", tmp_path / "out", detector=detector, min_scene_len=8)
    assert [clip.name for clip in report.written] == [f"three-Scene-00{n}.mp4" for n in (1, 2, 3)]
    assert frame_counts(report.written) == [20, 30, 25]
    assert report.skipped == [] and report.failed == []
    for scene_index, clip in enumerate(report.written):  # each clip holds its own scene, first to last frame
        frames = media.read_frames(clip)
        for frame in (frames[0], frames[-1]):
            corner = frame[2, 2].astype(int)
            expected = np.array(SCENE_COLOURS[scene_index]) * 0.6
            assert np.abs(corner - expected).max() < 20, (clip.name, corner, expected)
    assert (tmp_path / "out").is_dir() and source.is_file()


def test_running_twice_writes_nothing_the_second_time(tmp_path, capsys):
    source = make_clip(tmp_path / "in" / "two.mp4", 160, 96, (20, 20))
    first = scenes.split_scenes(tmp_path / "in", tmp_path / "out", min_scene_len=8)
    assert len(first.written) == 2
    stamps = [clip.stat().st_mtime_ns for clip in first.written]
    capsys.readouterr()

    second = scenes.split_scenes(tmp_path / "in", tmp_path / "out", min_scene_len=8)
    assert second.written == [] and second.skipped == [source] and second.failed == []
    assert [clip.stat().st_mtime_ns for clip in first.written] == stamps
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    summary = events[-1]
    assert (
        summary["event"],
        summary["stage"],
        summary["written"],
        summary["skipped"],
        summary["failed"],
    ) == (
        "summary",
        "split",
        0,
        1,
        0,
    )
    assert any(event["event"] == "progress" and event["done"] == 1 for event in events)


def test_a_video_without_cuts_is_one_clip_and_max_length_cuts_it_into_pieces(tmp_path):
    make_clip(tmp_path / "in" / "long.mp4", 160, 96, (60,))
    whole = scenes.split_scenes(tmp_path / "in" / "long.mp4", tmp_path / "whole")
    assert frame_counts(whole.written) == [60]
    pieces = scenes.split_scenes(
        tmp_path / "in" / "long.mp4", tmp_path / "pieces", max_scene_len=1.0, min_scene_len=8
    )
    assert frame_counts(pieces.written) == [24, 24, 12]
    source_frames = media.read_frames(tmp_path / "in" / "long.mp4").astype(int)
    first_of_second_piece = media.read_frames(pieces.written[1])[0].astype(int)
    differences = [np.abs(first_of_second_piece - source_frames[index]).mean() for index in (23, 24, 25)]
    assert np.argmin(differences) == 1  # frame-exact: it is source frame 24, not a neighbour


def test_limit_scene_length_keeps_full_pieces_and_drops_a_sliver():
    assert scenes.limit_scene_length([(0, 20), (20, 75)], None) == [(0, 20), (20, 75)]
    assert scenes.limit_scene_length([(0, 20), (20, 75)], 25, min_scene_len=4) == [
        (0, 20),
        (20, 45),
        (45, 70),
        (70, 75),
    ]
    assert scenes.limit_scene_length([(0, 20), (20, 75)], 25, min_scene_len=8) == [
        (0, 20),
        (20, 45),
        (45, 70),
    ]
    assert scenes.limit_scene_length([(0, 3)], 25, min_scene_len=8) == [(0, 3)]  # a whole short scene stays


def test_unreadable_files_are_reported_and_the_rest_is_split(tmp_path):
    bad = write_unusable_files(tmp_path / "in")
    good = make_clip(tmp_path / "in" / "good.mp4", 160, 96, (20,))
    report = scenes.split_scenes(tmp_path / "in", tmp_path / "out")
    assert frame_counts(report.written) == [20]
    assert sorted(path for path, _ in report.failed) == sorted(bad.values())
    reasons = {path: reason for path, reason in report.failed}
    assert "audio only" in reasons[bad["audio"]] and "empty" in reasons[bad["empty"]]
    again = scenes.split_scenes(tmp_path / "in", tmp_path / "out")
    assert again.written == [] and again.skipped == [good] and len(again.failed) == 4


def test_a_source_truncated_after_its_index_fails_without_leaving_clips(tmp_path):
    """The index promises frames the file no longer has: no partial set of clips may remain."""
    source = make_clip(tmp_path / "whole.mp4", 160, 96, (20, 40))
    with pytest.raises(media.MediaError, match="truncated"):
        scenes.write_scene_clips(source, tmp_path / "out", [(0, 20), (20, 60), (60, 80)])
    assert list((tmp_path / "out").glob("*.mp4")) == []


def test_a_changed_source_is_split_again_and_its_old_clips_removed(tmp_path):
    source = make_clip(tmp_path / "in" / "edit.mp4", 160, 96, (20, 20, 20))
    first = scenes.split_scenes(tmp_path / "in", tmp_path / "out", min_scene_len=8)
    assert len(first.written) == 3
    make_clip(source, 160, 96, (30, 30))  # the user replaced the video
    second = scenes.split_scenes(tmp_path / "in", tmp_path / "out", min_scene_len=8)
    assert frame_counts(second.written) == [30, 30]
    assert sorted(path.name for path in (tmp_path / "out").glob("*.mp4")) == [
        "edit-Scene-001.mp4",
        "edit-Scene-002.mp4",
    ]


def test_an_interrupted_split_is_redone(tmp_path):
    make_clip(tmp_path / "in" / "cut.mp4", 160, 96, (20, 20))
    first = scenes.split_scenes(tmp_path / "in", tmp_path / "out", min_scene_len=8)
    manifest_path = tmp_path / "out" / ".split" / "cut.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest_path.write_text(json.dumps({**manifest, "complete": False}), encoding="utf-8")  # killed mid-way
    first.written[1].unlink()
    again = scenes.split_scenes(tmp_path / "in", tmp_path / "out", min_scene_len=8)
    assert frame_counts(again.written) == [20, 20]


def test_clips_split_earlier_by_pyscenedetect_naming_are_skipped(tmp_path):
    source = make_clip(tmp_path / "in" / "old.mp4", 160, 96, (20,))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old-Scene-001.mp4").write_bytes(source.read_bytes())
    report = scenes.split_scenes(tmp_path / "in", tmp_path / "out")
    assert report.written == [] and report.skipped == [source]


def test_same_name_with_another_extension_is_reported_not_overwritten(tmp_path):
    make_clip(tmp_path / "in" / "same.mov", 160, 96, (20,))
    make_clip(tmp_path / "in" / "same.mp4", 160, 96, (30,))
    report = scenes.split_scenes(tmp_path / "in", tmp_path / "out")
    assert frame_counts(report.written) == [20]
    assert [path.name for path, _ in report.failed] == ["same.mp4"]
    assert "same.mov" in report.failed[0][1]


def test_subfolders_are_mirrored_and_an_output_inside_the_input_is_not_read_back(tmp_path):
    make_clip(tmp_path / "in" / "a" / "x.mp4", 160, 96, (20,))
    make_clip(tmp_path / "in" / "b" / "x.mp4", 160, 96, (24,))
    output = tmp_path / "in" / "scenes"
    report = scenes.split_scenes(tmp_path / "in", output)
    assert [clip.relative_to(output).as_posix() for clip in report.written] == [
        "a/x-Scene-001.mp4",
        "b/x-Scene-001.mp4",
    ]
    again = scenes.split_scenes(tmp_path / "in", output)
    assert again.written == [] and len(again.skipped) == 2


def run_cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )


def test_cli_splits_a_folder_with_spaces_and_chinese_names(tmp_path):
    make_clip(tmp_path / "我的 视频" / "片段 1.mp4", 160, 96, (20, 30))
    write_unusable_files(tmp_path / "我的 视频")
    result = run_cli(tmp_path / "我的 视频", "--output-dir", tmp_path / "场景 输出", "--detector", "adaptive",
                     "--min-scene-len", "8", "--max-scene-len", "1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert frame_counts(sorted((tmp_path / "场景 输出").glob("*.mp4"))) == [20, 24]
    summary = json.loads(result.stdout.splitlines()[-1])
    assert (summary["event"], summary["written"], summary["failed"]) == ("summary", 2, 4)
    assert "could not split" in result.stderr and "Traceback" not in result.stderr


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(samples))) * rate / len(samples))


def test_cli_split_of_a_source_with_sound_gives_each_clip_its_own_scenes_sound(tmp_path):
    fps, rate = 24.0, 24000
    make_clip_with_sound(tmp_path / "有声 in" / "带声音 a.mp4", 64, 64, (20, 30, 25), fps, rate)  # tones 220, 440, 660 Hz
    make_clip(tmp_path / "有声 in" / "silent.mp4", 64, 64, (20,))
    result = run_cli(tmp_path / "有声 in", "--output-dir", tmp_path / "out", "--min-scene-len", "8")
    assert result.returncode == 0, result.stderr
    clips = sorted((tmp_path / "out").glob("带声音 a-Scene-*.mp4"))
    assert frame_counts(clips) == [20, 30, 25]
    for scene_index, (clip, num_frames) in enumerate(zip(clips, (20, 30, 25), strict=True)):
        assert has_sound(clip)
        with av.open(str(clip)) as container:
            assert container.streams.audio[0].rate == rate and container.streams.audio[0].layout.name == "stereo"
            sound = np.concatenate([frame.to_ndarray() for frame in container.decode(audio=0)], axis=1)[0]
        assert abs(len(sound) / rate - num_frames / fps) <= 0.1, clip.name
        # The scene's own tone from its first to its last tenth of a second: the sound is cut where the picture is.
        tone = 220.0 * (scene_index + 1)
        for window in (sound[: rate // 10], sound[-rate // 10 - 1024 : -1024]):
            assert abs(dominant_hz(window, rate) - tone) < 20, (clip.name, dominant_hz(window, rate), tone)
    assert not has_sound(tmp_path / "out" / "silent-Scene-001.mp4")  # no sound in, no sound out


def write_source_with_sound(
    path: Path, layout: str, rate: int, codec: str, tone_hz: float, sound_s: float | None = None
) -> Path:
    """Raw footage: two hard-cut scenes of 24 frames at 16 fps (64x64) with, on every channel, a sweep
    rising from `tone_hz` by 200 Hz a second, so any shift in time changes the sound (`codec` aac, or
    pcm_s16le in a .mkv for layouts AAC refuses, such as AC-3's "5.1(side)"); `sound_s` ends the sound
    earlier than the picture."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.concatenate([scene_frames(64, 64, 24, scene) for scene in (0, 1)])
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=16)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        audio = container.add_stream(codec, rate=rate, layout=layout)
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode(None))
        samples = int((len(frames) / 16 if sound_s is None else sound_s) * rate)
        channels = len(av.AudioLayout(layout).channels)
        size = audio.codec_context.frame_size or 1024  # PCM has no frame size of its own
        times = np.arange(samples) / rate
        wave = np.tile(0.25 * np.sin(2 * np.pi * (tone_hz + 100.0 * times) * times), (channels, 1))
        wave = np.pad(wave, ((0, 0), (0, -samples % size))).astype(np.float32)
        sample_format = audio.codec_context.format.name
        for start in range(0, wave.shape[1], size):
            piece = wave[:, start : start + size]
            if sample_format == "s16":  # PCM: interleaved 16-bit
                piece = (piece.T.reshape(1, -1) * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece), format=sample_format, layout=layout)
            frame.sample_rate, frame.pts = rate, start
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    return path


def test_a_split_5_1_side_track_reads_back_in_sync_as_the_same_stereo_mix_ltx2_trains_on(tmp_path) -> None:
    """The second scene's clip, its 5.1(side) sound re-encoded as AAC 5.1, reads back as the same stereo mix
    LTX-2 takes from the source over that scene's seconds: the sound starts at the scene's first frame."""
    source = write_source_with_sound(tmp_path / "src.mkv", "5.1(side)", 48000, "pcm_s16le", 660.0)
    split = run_cli(source, "--output-dir", tmp_path / "out", "--min-scene-len", "8")
    assert split.returncode == 0, split.stderr[-2000:]
    clip = tmp_path / "out" / "src-Scene-002.mp4"
    duration = 24 / 16
    from_source = ltx2.read_audio(source, 16000, 2, duration, duration)
    from_clip = ltx2.read_audio(clip, 16000, 2, 0.0, duration)
    middle = slice(1600, -1600)  # AAC's edges (priming, the last frame) aside
    torch.testing.assert_close(from_clip[:, middle], from_source[:, middle], atol=0.02, rtol=0)


def test_sound_that_ends_before_the_picture_leaves_the_later_scenes_silent_not_shorter(tmp_path) -> None:
    source = write_source_with_sound(tmp_path / "short sound.mp4", "mono", 16000, "aac", 300.0, sound_s=1.0)
    clips = scenes.split_scenes(source, tmp_path / "out", min_scene_len=8).written
    assert frame_counts(clips) == [24, 24]
    sounds = []
    for clip in clips:
        with av.open(str(clip)) as container:
            sounds.append(np.concatenate([frame.to_ndarray() for frame in container.decode(audio=0)], axis=1)[0])
    assert all(abs(len(sound) / 16000 - 1.5) <= 0.1 for sound in sounds)  # each as long as its scene
    assert np.abs(sounds[0][1600:14400]).max() > 0.2 and np.abs(sounds[0][17600:24000]).max() < 0.02
    assert np.abs(sounds[1]).max() < 0.02


def test_cli_exit_codes_for_missing_and_wholly_unreadable_inputs(tmp_path):
    missing = run_cli(tmp_path / "nowhere", "--output-dir", tmp_path / "out")
    assert missing.returncode == 1 and "nowhere" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "empty folder").mkdir()
    empty = run_cli(tmp_path / "empty folder", "--output-dir", tmp_path / "out")
    assert empty.returncode == 1 and "no video or image files" in empty.stderr
    write_unusable_files(tmp_path / "bad")
    unreadable = run_cli(tmp_path / "bad", "--output-dir", tmp_path / "out")
    assert unreadable.returncode == 2 and "not one file could be read" in unreadable.stderr
    assert "SECONDS" in run_cli("--help").stdout


def test_images_are_copied_unchanged_once_and_a_corrupt_one_is_named(tmp_path, capsys):
    """Stills train as single frames: they go to the scenes folder as they are, beside the clips."""
    from PIL import Image

    pixels = np.zeros((48, 64, 3), dtype=np.uint8)
    pixels[:, :32] = (220, 40, 40)
    still = tmp_path / "in" / "sub" / "照片 1.png"
    still.parent.mkdir(parents=True)
    Image.fromarray(pixels).save(still)
    Image.fromarray(pixels).save(tmp_path / "in" / "photo.jpg", quality=90)
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    make_clip(tmp_path / "in" / "clip.mp4", 160, 96, (20,))
    first = scenes.split_scenes(tmp_path / "in", tmp_path / "out")
    copies = [tmp_path / "out" / "photo.jpg", tmp_path / "out" / "sub" / "照片 1.png"]
    assert first.copied == copies and frame_counts(first.written) == [20]
    assert [path.read_bytes() for path in copies] == [(tmp_path / "in" / "photo.jpg").read_bytes(), still.read_bytes()]
    assert [path for path, _ in first.failed] == [broken] and "broken.png: is not a readable image" in first.failed[0][1]
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["copied"] == 2

    stamp = copies[1].stat().st_mtime_ns
    second = scenes.split_scenes(tmp_path / "in", tmp_path / "out")
    assert second.copied == [] and still in second.skipped and copies[1].stat().st_mtime_ns == stamp
    Image.fromarray(255 - pixels).save(still)  # the user replaced the picture: the copy follows it
    third = scenes.split_scenes(tmp_path / "in", tmp_path / "out")
    assert third.copied == [copies[1]] and copies[1].read_bytes() == still.read_bytes()
    assert scenes.split_scenes(still, tmp_path / "one").copied == [tmp_path / "one" / still.name]
