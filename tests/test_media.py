"""Video I/O: probing, bounded decoding, resize + centre crop, clip normalisation, writing."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from ltxtrainer import media
from ltxtrainer.media import MediaError
from ltxtrainer.synthetic import make_clip, scene_frames, write_unusable_files


@pytest.fixture
def clip(tmp_path) -> Path:
    """160x96, 24 fps, 30 + 20 frames with a hard cut."""
    return make_clip(tmp_path / "clip.mp4", 160, 96, (30, 20))


def test_probe_reports_size_frame_count_and_rate(clip):
    info = media.probe_video(clip)
    assert (info.width, info.height, info.num_frames) == (160, 96, 50)
    assert info.fps == pytest.approx(24.0)
    assert info.duration_s == pytest.approx(50 / 24)
    assert info.path == clip


def test_find_videos_matches_extensions_in_any_case_and_skips_hidden_and_precomputed(tmp_path):
    for name in ["b.mp4", "a.MOV", "sub/c.mkv", "sub/d.webm", "e.avi", "f.m4v"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    for name in ["notes.txt", ".hidden.mp4", ".cache/g.mp4", ".precomputed/latents/h.mp4"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = [path.relative_to(tmp_path).as_posix() for path in media.find_videos(tmp_path)]
    assert found == ["a.MOV", "b.mp4", "e.avi", "f.m4v", "sub/c.mkv", "sub/d.webm"]
    top_level = [path.name for path in media.find_videos(tmp_path, recursive=False)]
    assert top_level == ["a.MOV", "b.mp4", "e.avi", "f.m4v"]


def test_read_frames_start_count_and_stride_pick_the_same_frames_as_a_full_decode(clip):
    everything = media.read_frames(clip)
    assert everything.shape == (50, 96, 160, 3) and everything.dtype == np.uint8
    picked = media.read_frames(clip, start=5, count=4, stride=3)
    np.testing.assert_array_equal(picked, everything[5:17:3])
    assert media.read_frames(clip, start=45).shape[0] == 5
    with pytest.raises(MediaError, match="no frame at index 60"):
        media.read_frames(clip, start=60)


def test_decoding_stops_at_the_frames_asked_for(tmp_path):
    """A file whose second half is gone still gives its first frames, because nothing past them is read."""
    source = tmp_path / "streamable.mp4"
    with av.open(str(source), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        for frame in scene_frames(160, 96, 60):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(source.read_bytes()[: source.stat().st_size * 6 // 10])

    np.testing.assert_array_equal(media.read_frames(cut, count=5), media.read_frames(source, count=5))
    clip, _ = media.load_clip(cut, 64, 32, 9)
    assert clip.shape == (9, 32, 64, 3)
    with pytest.raises(MediaError, match="needs 57"):
        media.load_clip(cut, 64, 32, 57)


@pytest.mark.parametrize(
    ("source_size", "target_size"),
    [
        ((200, 100), (64, 64)),
        ((100, 200), (64, 96)),
        ((80, 80), (96, 64)),
        ((161, 97), (64, 32)),
        ((97, 161), (32, 64)),
    ],
    ids=["landscape-to-square", "portrait", "square-upscaled", "odd-landscape", "odd-portrait"],
)
def test_resize_and_crop_gives_exactly_the_target_size(source_size, target_size):
    (source_width, source_height), (width, height) = source_size, target_size
    frames = np.random.default_rng(0).integers(0, 255, (3, source_height, source_width, 3), dtype=np.uint8)
    resized = media.resize_and_crop(frames, width, height)
    assert resized.shape == (3, height, width, 3) and resized.dtype == np.uint8
    assert media.resize_and_crop(frames[0], width, height).shape == (height, width, 3)


def test_resize_and_crop_keeps_the_centre_and_the_proportions():
    frame = np.zeros((100, 300, 3), dtype=np.uint8)
    frame[40:60, 140:160] = 255  # a white square in the middle of a wide frame
    cropped = media.resize_and_crop(frame, 64, 64)  # scaled to 192x64, 64 columns from the middle
    white = np.argwhere(cropped[..., 0] > 128)
    assert white.mean(axis=0) == pytest.approx([31.5, 31.5], abs=1.0)
    height, width = np.ptp(white, axis=0) + 1
    assert abs(int(height) - int(width)) <= 1  # still a square: nothing was stretched


def test_largest_valid_frame_count():
    assert [media.largest_valid_frame_count(n) for n in (-3, 0, 1, 8, 9, 16, 17, 100, 121)] == [
        0,
        0,
        1,
        1,
        9,
        9,
        17,
        97,
        121,
    ]


@pytest.mark.parametrize(
    ("source_width", "source_height"),
    [(161, 97), (97, 161), (128, 128), (300, 170)],
    ids=["landscape", "portrait", "square", "wide"],
)
def test_load_clip_gives_exactly_width_height_and_frames(tmp_path, source_width, source_height):
    source = make_clip(tmp_path / "source.mp4", source_width, source_height, (30,))
    frames, fps = media.load_clip(source, 96, 64, 25)
    assert frames.shape == (25, 64, 96, 3) and frames.dtype == np.uint8
    assert fps == pytest.approx(24.0)


def test_load_clip_at_a_lower_fps_takes_every_other_frame(clip):
    frames, fps = media.load_clip(clip, 64, 32, 17, fps=12)
    assert fps == pytest.approx(12.0)
    expected = media.resize_and_crop(media.read_frames(clip, count=17, stride=2), 64, 32)
    np.testing.assert_array_equal(frames, expected)


def test_load_clip_at_a_non_whole_fps_ratio_samples_the_frame_shown_at_each_time(clip):
    frames, fps = media.load_clip(clip, 64, 32, 9, fps=16)  # 24 -> 16: step 1.5
    assert fps == pytest.approx(16.0)
    source_indices = [0, 1, 3, 4, 6, 7, 9, 10, 12]
    expected = media.resize_and_crop(media.read_frames(clip, count=13)[source_indices], 64, 32)
    np.testing.assert_array_equal(frames, expected)


def test_load_clip_never_invents_frames_for_a_higher_fps(clip):
    frames, fps = media.load_clip(clip, 64, 32, 9, fps=60)
    assert fps == pytest.approx(24.0) and frames.shape[0] == 9


def test_load_clip_short_video_is_skipped_or_shrunk(clip):
    with pytest.raises(MediaError, match=r"has 50 frames at 24 fps, needs 57"):
        media.load_clip(clip, 64, 32, 57)
    frames, _ = media.load_clip(clip, 64, 32, 57, on_short="shrink")
    assert frames.shape == (49, 32, 64, 3)
    with pytest.raises(MediaError, match=r"has 25 frames at 12 fps, needs 33"):
        media.load_clip(clip, 64, 32, 33, fps=12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 100, "height": 64, "num_frames": 9}, "multiples of 32"),
        ({"width": 64, "height": 0, "num_frames": 9}, "multiples of 32"),
        ({"width": 64, "height": 64, "num_frames": 10}, "8k\\+1"),
        ({"width": 64, "height": 64, "num_frames": 9, "on_short": "pad"}, "on_short"),
    ],
)
def test_load_clip_refuses_sizes_the_vae_cannot_take(clip, kwargs, message):
    with pytest.raises(ValueError, match=message):
        media.load_clip(clip, **kwargs)


def test_sample_frames_spreads_over_the_whole_video(clip):
    frames = media.sample_frames(clip, 4)
    assert len(frames) == 4 and all(frame.shape == (96, 160, 3) for frame in frames)
    everything = media.read_frames(clip)
    for frame, index in zip(frames, (6, 18, 31, 43), strict=True):  # centres of four equal spans of 50
        np.testing.assert_array_equal(frame, everything[index])
    assert len(media.sample_frames(clip, 500)) == 50


def test_write_video_round_trips_frames_and_leaves_no_partial_file(tmp_path):
    frames = scene_frames(161, 97, 13)  # odd sizes lose their last column and row
    written = media.write_video(tmp_path / "out" / "round trip.mp4", frames, fps=30000 / 1001)
    assert written == tmp_path / "out" / "round trip.mp4"
    assert sorted(path.name for path in written.parent.iterdir()) == ["round trip.mp4"]
    info = media.probe_video(written)
    assert (info.width, info.height, info.num_frames) == (160, 96, 13)
    assert Fraction(info.fps).limit_denominator(1001) == Fraction(30000, 1001)
    decoded = media.read_frames(written).astype(np.int16)
    assert np.abs(decoded - frames[:, :96, :160]).mean() < 3


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError), media.VideoWriter(target, fps=24) as writer:
        writer.write(scene_frames(64, 64, 1)[0])
        raise RuntimeError("the stage was interrupted")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        media.write_video(target, np.zeros((0, 64, 64, 3), np.uint8), fps=24)


@pytest.mark.parametrize("kind", ["truncated", "text", "empty", "audio"])
def test_unusable_files_raise_media_error_naming_the_file(tmp_path, kind):
    path = write_unusable_files(tmp_path)[kind]
    expected_reason = {
        "truncated": "cannot be read",
        "text": "cannot be read",
        "empty": "empty",
        "audio": "audio only",
    }
    for read in (media.probe_video, media.read_frames, lambda p: media.load_clip(p, 64, 64, 9)):
        with pytest.raises(MediaError, match=expected_reason[kind]) as raised:
            read(path)
        assert str(path) in str(raised.value)


def test_missing_file_is_a_media_error(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        media.probe_video(tmp_path / "nowhere.mp4")


def test_paths_with_spaces_and_chinese_characters(tmp_path):
    source = make_clip(tmp_path / "我的 视频" / "片段 1.mp4", 160, 96, (20,))
    assert media.find_videos(tmp_path) == [source]
    assert media.probe_video(source).num_frames == 20
    frames, _ = media.load_clip(source, 64, 64, 17)
    copy = media.write_video(tmp_path / "输出 文件夹" / "片段 1 副本.mp4", frames, 24)
    assert media.probe_video(copy).num_frames == 17


def test_opencv_fallback_reader_decodes_the_same_video(clip):
    """The OpenCV path only runs for files PyAV cannot open; check it reads the same frames."""
    with media._opencv_frames(clip, pyav_reason="not used") as source:
        frames = np.stack([to_rgb() for to_rgb in source])
    assert frames.shape == (50, 96, 160, 3)
    assert np.abs(frames.astype(np.int16) - media.read_frames(clip)).mean() < 3
