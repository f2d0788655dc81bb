"""IC-LoRA validation references, the same for both families.

An IC-LoRA run (`conditioning.mode: reference_video`) renders each validation prompt guided by its
`validation.reference_videos` entry. The videos are read before the text encoder loads, so a wrong
count or a missing, unreadable or short file stops the run in seconds, naming the field and index;
they are cut as preprocess cuts the training references, and each rendered sample is saved with its
reference on the left (reference | result).
"""

from __future__ import annotations

import numpy as np

from ltxtrainer.config import ConfigError
from ltxtrainer.media import MediaError, load_clip


def load_reference_videos(
    paths: list[str] | None, prompts: list[str], width: int, height: int, frames: int, fps: float | None = None
) -> list[np.ndarray]:
    """Each prompt's reference video (one per prompt) as [frames, height, width, 3] uint8.

    `load_clip` cuts it as preprocess cuts a training reference: its first `frames` frames at `fps`
    (None keeps the source rate, as LTX-Video 0.9's preprocess does; LTX-2 passes the validation
    frame rate), resized and centre-cropped. A reference shorter than the render is refused rather
    than stretched or held, as preprocess refuses a short training reference."""
    if not paths or len(paths) != len(prompts):
        raise ConfigError(
            f"conditioning.mode is reference_video: validation.reference_videos needs one video per validation "
            f"prompt ({len(prompts)}), got {len(paths or [])}. Give each prompt the reference (edges, depth, "
            "pose...) its IC-LoRA result should follow, or turn validation off (validation.interval: null)."
        )
    videos = []
    for index, path in enumerate(paths):
        try:
            videos.append(load_clip(path, width, height, frames, fps)[0])
        except MediaError as error:  # the message names the file and the reason (missing, unreadable, short)
            raise ConfigError(f"validation.reference_videos[{index}]: {error}") from None
    return videos


def side_by_side(reference: np.ndarray, result: np.ndarray) -> np.ndarray:
    """[F, H, 2W, 3]: the reference on the left, the result on the right (both [F, H, W, 3])."""
    return np.concatenate([reference[: len(result)], result], axis=2)
