"""The `demo` backend: a deterministic caption from the pixels alone, for the one-click demo.

The demo must run on any machine in seconds without a model or a key, yet its captions should
differ between clips the way real ones do, so it names the background colour, the colour of
what moves and the direction it moves in.
"""

from __future__ import annotations

import colorsys

import numpy as np

from ltxtrainer.captioning.base import Captioner

HUE_NAMES = [  # (upper bound of the hue in degrees, name)
    (15, "red"), (45, "orange"), (70, "yellow"), (160, "green"), (200, "teal"),
    (255, "blue"), (290, "purple"), (335, "magenta"), (360, "red"),
]
MOVING_THRESHOLD = 40  # summed RGB difference from the clip's median frame that counts as motion


def colour_name(rgb: np.ndarray) -> str:
    """A plain colour word for an RGB triple (0-255)."""
    hue, saturation, value = colorsys.rgb_to_hsv(*(float(channel) / 255 for channel in rgb))
    if value < 0.2:
        return "black"
    if saturation < 0.2:
        return "white" if value > 0.8 else "grey"
    degrees = hue * 360
    return next(name for bound, name in HUE_NAMES if degrees <= bound)


def _direction(start: np.ndarray, end: np.ndarray, width: int, height: int) -> str:
    """'from left to right', 'upward'... from the centroid's travel, ignoring jitter under 5%."""
    dy, dx = (end - start) / np.array([height, width])
    parts = []
    if abs(dx) >= 0.05:
        parts.append("from left to right" if dx > 0 else "from right to left")
    if abs(dy) >= 0.05:
        parts.append("downward" if dy > 0 else "upward")
    return " and ".join(parts) or "in place"


def describe_frames(frames: list[np.ndarray]) -> str:
    """Background colour, moving object colour and direction, and overall brightness."""
    stack = np.stack(frames).astype(np.int16)
    background = np.median(stack, axis=0)
    moving = np.abs(stack - background).sum(axis=-1) > MOVING_THRESHOLD
    backdrop = colour_name(np.median(background.reshape(-1, 3), axis=0))
    brightness = stack.mean() / 255
    light = "brightly lit" if brightness > 0.6 else "dimly lit" if brightness < 0.25 else "evenly lit"
    moving_frames = [index for index in range(len(frames)) if moving[index].any()]
    if len(moving_frames) < 2:
        return f"A still, {light} shot of a plain {backdrop} background; the camera does not move."
    first, last = moving_frames[0], moving_frames[-1]
    centroids = [np.argwhere(moving[index]).mean(axis=0) for index in (first, last)]
    subject = colour_name(stack[moving].mean(axis=0))
    height, width = stack.shape[1:3]
    return (
        f"A {subject} square moves {_direction(*centroids, width, height)} across a {backdrop} "
        f"background; the scene is {light} and the camera is static."
    )


class DemoCaptioner(Captioner):
    """No model, no network: the same frames always give the same caption."""

    name = "demo"

    def caption(self, frames: list[np.ndarray], instruction: str) -> str:
        return describe_frames(frames)
