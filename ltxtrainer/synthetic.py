"""Synthetic video clips with real motion and hard cuts, for the demo and the tests.

Each scene has its own background colour and a bright square moving across it, so scene
detection sees a hard cut at every scene boundary and the VAE sees genuine motion.
"""

from __future__ import annotations

from pathlib import Path

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
