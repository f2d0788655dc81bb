"""Synthetic video clips with real motion and hard cuts, for the demo and the tests.

Each scene has its own background colour and a bright square moving across it, so scene
detection sees a hard cut at every scene boundary and the VAE sees genuine motion.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from ltxtrainer.media import write_video

SCENE_COLOURS = [(200, 40, 40), (40, 160, 60), (40, 70, 200), (220, 200, 40), (150, 50, 170), (30, 170, 170)]


def scene_frames(width: int, height: int, num_frames: int, scene_index: int = 0) -> np.ndarray:
    """[F, H, W, 3] uint8 frames of one scene: a square sliding over a coloured gradient."""
    colour = np.array(SCENE_COLOURS[scene_index % len(SCENE_COLOURS)], dtype=np.float32)
    ramp = np.linspace(0.6, 1.0, width, dtype=np.float32)[None, :, None]
    background = np.broadcast_to(colour * ramp, (height, width, 3))
    side = max(4, min(width, height) // 4)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for index in range(num_frames):
        frame = background.copy()
        progress = index / max(1, num_frames - 1)
        left = int(progress * (width - side))
        top = int((0.5 + 0.3 * np.sin(2 * np.pi * progress + scene_index)) * (height - side))
        frame[top : top + side, left : left + side] = 255
        frames[index] = frame.astype(np.uint8)
    return frames


def write_frames(path: str | Path, frames: np.ndarray, fps: float = 24.0) -> Path:
    """Encode [F, H, W, 3] uint8 frames as H.264 mp4 through the one writer in `media`."""
    return write_video(path, frames, fps)


def make_clip(
    path: str | Path,
    width: int = 160,
    height: int = 96,
    frames_per_scene: tuple[int, ...] = (30,),
    fps: float = 24.0,
) -> Path:
    """Write a clip with one scene per entry of `frames_per_scene`, hard cuts between them."""
    scenes = [scene_frames(width, height, count, index) for index, count in enumerate(frames_per_scene)]
    return write_frames(path, np.concatenate(scenes, axis=0), fps)


def write_audio_only(path: str | Path) -> Path:
    """An mp4 holding only an AAC track: a file with a video extension and no picture."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        for index in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, index * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_unusable_files(folder: str | Path) -> dict[str, Path]:
    """One of each file users drop among their clips that is no usable video, keyed by kind.

    truncated: an mp4 cut in half (its index, written last, is gone); text: a text file named
    .mp4; empty: zero bytes; audio: audio only.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    whole = make_clip(folder / ".whole.mp4", 160, 96, (30,))
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    text = folder / "notes.mp4"
    text.write_text("this is a text file with a video extension", encoding="utf-8")
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    return {
        "truncated": truncated,
        "text": text,
        "empty": empty,
        "audio": write_audio_only(folder / "audio.mp4"),
    }


def make_clip_with_sound(
    path: str | Path,
    width: int = 160,
    height: int = 96,
    frames_per_scene: tuple[int, ...] = (30,),
    fps: float = 24.0,
    sample_rate: int = 24000,
) -> Path:
    """`make_clip` with a stereo AAC track: each scene its own sine tone, so the sound cuts with the
    picture, as a phone or camera records them (LTX-2 trains both streams)."""
    import torch

    from ltxtrainer.training.validation_ltx2 import write_video_with_audio

    scenes = [scene_frames(width, height, count, index) for index, count in enumerate(frames_per_scene)]
    tones = []
    for index, count in enumerate(frames_per_scene):
        times = np.arange(round(count / fps * sample_rate)) / sample_rate
        tones.append(0.3 * np.sin(2 * np.pi * 220.0 * (index + 1) * times))
    wave = torch.from_numpy(np.concatenate(tones)).float().repeat(2, 1)
    return write_video_with_audio(path, np.concatenate(scenes, axis=0), fps, wave, sample_rate)
