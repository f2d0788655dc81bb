"""The precomputed dataset and its resolution buckets.

Files follow the reference LTX-Video-Trainer layout (FIELD_NOTES §2), so data preprocessed there
trains here unchanged: `.precomputed/latents/<media>.pt` holds packed latents [T, C] with their
latent frame/height/width and fps, `.precomputed/conditions/<media>.pt` the T5 embeddings and mask.
Its releases before late May 2025 named them flat, `latents/latent_00000000.pt` beside
`conditions/condition_00000000.pt`, and the earliest wrote no fps; both are read too.

An IC-LoRA run (`conditioning.mode: reference_video`) also reads `.precomputed/<reference dir>/<media>.pt`,
the reference video's latents in the latents layout (the reference trainer's `reference_latents/`).

Batches are drawn from one bucket at a time (the reference trainer handles a single bucket), and
the order is a pure function of (seed, epoch): resuming at step k replays exactly the batches an
uninterrupted run would have seen, and every rank of a multi-GPU run gets its own share.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ltxtrainer.progress import say

Bucket = tuple  # latent (frames, height, width), and the fps where a family batches by it (LTX-2)

# What a 0.9 conditions file holds, and the dtype each is trained in.
T5_CONDITIONS: dict[str, torch.dtype] = {"prompt_embeds": torch.float32, "prompt_attention_mask": torch.bool}
AUDIO_LATENTS_DIR = "audio_latents"


# A file without fps gets the frame rate LTXPipeline generates at by default; only the temporal
# RoPE scale (8 / fps) depends on it.
DEFAULT_FPS = 25.0
# The reference trainer's flat naming before late May 2025: latent_N.pt pairs with condition_N.pt.
_LEGACY_LATENT_PREFIX, _LEGACY_CONDITION_PREFIX = "latent_", "condition_"


class DatasetError(ValueError):
    """The precomputed data cannot be used; the message says which file and why."""


def find_precomputed_root(root: str | Path) -> Path:
    """Accept the dataset folder or its `.precomputed` folder (both are used in the wild)."""
    root = Path(root)
    for candidate in (root, root / ".precomputed"):
        if (candidate / "latents").is_dir() and (candidate / "conditions").is_dir():
            return candidate
    raise DatasetError(
        f"No precomputed data under {root}: expected {root / '.precomputed' / 'latents'} and "
        f"{root / '.precomputed' / 'conditions'}. Run scripts/preprocess_dataset.py on the dataset first."
    )


def load_precomputed(path: Path, mmap: bool = False) -> dict:
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError:
            if not mmap:
                raise
            # Files in torch's legacy (non-zip) format cannot be mapped; read them whole.
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a torn or foreign file: name it instead of a pickle traceback
        raise DatasetError(f"Cannot read precomputed file {path}: {error}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"Precomputed file {path} does not hold a dictionary")
    return data


@dataclass(frozen=True)
class Sample:
    latents_path: Path
    conditions_path: Path
    bucket: Bucket
    audio_latents_path: Path | None = None
    fps: float = DEFAULT_FPS  # as the file records it; DEFAULT_FPS for files written without one
    reference_latents_path: Path | None = None  # IC-LoRA: the reference video's latents, same size as the clip's


class PrecomputedDataset(torch.utils.data.Dataset):
    """Precomputed latents and text embeddings, indexed once at start-up.

    Shapes are checked up front against each other (a mismatched file names itself here, not as a
    reshape error an hour into training). The family says what a conditions file holds
    (`conditions`: key -> training dtype; 0.9's T5 embeddings by default), whether each sample has
    audio latents of `audio_channels` features in `audio_latents/` (LTX-2 joint training) and
    whether batches keep one frame rate (`bucket_by_fps`: LTX-2's transformer takes one fps a call)
    and, for an IC-LoRA run, the folder beside `latents/` that holds each sample's reference latents
    (`reference_dir_name`; LTX-Video 0.9 references have the clip's own latent size).
    """

    def __init__(
        self,
        root: str | Path,
        expected_channels: int | None = None,
        conditions: dict[str, torch.dtype] = T5_CONDITIONS,
        audio_channels: int | None = None,
        bucket_by_fps: bool = False,
        reference_dir_name: str | None = None,
    ):
        self.root = find_precomputed_root(root)
        self.conditions = conditions
        latents_dir, conditions_dir = self.root / "latents", self.root / "conditions"
        samples: list[Sample] = []
        without_fps = 0
        for latents_path in sorted(latents_dir.rglob("*.pt")):
            conditions_path = _conditions_path(latents_path, latents_dir, conditions_dir)
            bucket, fps = self._bucket_of(latents_path, expected_channels)
            without_fps += fps is None
            if bucket_by_fps:
                bucket = (*bucket, DEFAULT_FPS if fps is None else fps)
            audio_path = None
            if audio_channels is not None:
                audio_path = self.root / AUDIO_LATENTS_DIR / latents_path.relative_to(latents_dir)
                _check_audio_latents(audio_path, audio_channels)
            samples.append(Sample(latents_path, conditions_path, bucket, audio_path, DEFAULT_FPS if fps is None else fps))
        if not samples:
            raise DatasetError(f"No precomputed samples (*.pt) in {latents_dir}")
        if without_fps:
            say(
                f"{without_fps} of {len(samples)} precomputed latent files record no fps (written by an early "
                f"reference trainer); training them as {DEFAULT_FPS:g} fps clips, the pipeline's default frame rate."
            )
        if reference_dir_name is not None:
            samples = _with_references(samples, latents_dir, self.root / reference_dir_name, expected_channels)
        self.samples = samples

    @staticmethod
    def _bucket_of(path: Path, expected_channels: int | None) -> tuple[Bucket, float | None]:
        """The sample's latent (frames, height, width), and the fps the file records (None: none)."""
        # Memory-mapped: indexing needs shapes and sizes only, not every latent read from disk twice.
        data = load_precomputed(path, mmap=True)
        missing = {"latents", "num_frames", "height", "width"} - set(data)
        if missing:
            raise DatasetError(f"{path} lacks {sorted(missing)}; was it written by a preprocessing step?")
        latents = data["latents"]
        frames, height, width = int(data["num_frames"]), int(data["height"]), int(data["width"])
        if latents.ndim != 2 or latents.shape[0] != frames * height * width:
            raise DatasetError(
                f"{path}: latents of shape {tuple(latents.shape)} do not match "
                f"{frames}x{height}x{width} latent frames/height/width (expected [{frames * height * width}, C])"
            )
        if expected_channels is not None and latents.shape[1] != expected_channels:
            raise DatasetError(
                f"{path}: latents have {latents.shape[1]} channels but the model expects {expected_channels}; "
                "was the dataset preprocessed with another model?"
            )
        return (frames, height, width), (float(data["fps"]) if "fps" in data else None)

    @property
    def buckets(self) -> dict[Bucket, list[int]]:
        grouped: dict[Bucket, list[int]] = {}
        for index, sample in enumerate(self.samples):
            grouped.setdefault(sample.bucket, []).append(index)
        return grouped

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        latents = load_precomputed(sample.latents_path)
        conditions = load_precomputed(sample.conditions_path)
        if any(key not in conditions for key in self.conditions):
            raise DatasetError(f"{sample.conditions_path} lacks {'/'.join(self.conditions)}")
        item = {
            "latents": latents["latents"].float(),
            "num_frames": int(latents["num_frames"]),
            "height": int(latents["height"]),
            "width": int(latents["width"]),
            "fps": float(latents.get("fps", DEFAULT_FPS)),
        }
        item.update({key: conditions[key].to(dtype) for key, dtype in self.conditions.items()})
        if sample.audio_latents_path is not None:
            item["audio_latents"] = load_precomputed(sample.audio_latents_path)["latents"].float()
        if sample.reference_latents_path is not None:
            item["reference_latents"] = load_precomputed(sample.reference_latents_path)["latents"].float()
        return item


def _with_references(
    samples: list[Sample], latents_dir: Path, reference_dir: Path, expected_channels: int | None
) -> list[Sample]:
    """Each sample paired with `reference_dir/<its relative name>`, checked at start: a clip without a
    reference, or a reference of another size, names itself before the model loads."""
    paths = [reference_dir / sample.latents_path.relative_to(latents_dir) for sample in samples]
    missing = [str(path.relative_to(reference_dir)) for path in paths if not path.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetError(
            f"conditioning.mode is reference_video, but {len(missing)} of {len(samples)} samples have no reference "
            f"latents in {reference_dir}: {shown}. Run scripts/preprocess_dataset.py with --reference-dir (the "
            "folder of the reference videos), or remove those clips."
        )
    for sample, path in zip(samples, paths, strict=True):
        bucket, _ = PrecomputedDataset._bucket_of(path, expected_channels)
        if bucket != sample.bucket[:3]:
            raise DatasetError(
                f"{path}: reference latents of {'x'.join(map(str, bucket))} latent frames/height/width, but its clip "
                f"{sample.latents_path.name} has {'x'.join(map(str, sample.bucket[:3]))}; an LTX-Video 0.9 reference "
                "must have its clip's size and length. Preprocess the clip and its reference together again."
            )
    return [replace(sample, reference_latents_path=path) for sample, path in zip(samples, paths, strict=True)]


def _check_audio_latents(path: Path, channels: int) -> None:
    """An audio run needs every clip's audio latents [L, channels]; a missing file names the clip."""
    if not path.is_file():
        raise DatasetError(
            f"{path} is missing: this run trains audio (model.with_audio: true) but the clip has no audio "
            "latents. Preprocess the clips with sound, remove the clip, or set model.with_audio: false."
        )
    latents = load_precomputed(path, mmap=True).get("latents")
    if latents is None or latents.ndim != 2 or latents.shape[1] != channels:
        shape = None if latents is None else tuple(latents.shape)
        raise DatasetError(
            f"{path}: audio latents of shape {shape}, expected [frames, {channels}]; "
            "was the dataset preprocessed with another model?"
        )


def _conditions_path(latents_path: Path, latents_dir: Path, conditions_dir: Path) -> Path:
    """The text embedding file of a latent file: the same relative path, or the legacy flat name."""
    relative = latents_path.relative_to(latents_dir)
    candidates = [conditions_dir / relative]
    if latents_path.name.startswith(_LEGACY_LATENT_PREFIX):
        legacy_name = _LEGACY_CONDITION_PREFIX + latents_path.name.removeprefix(_LEGACY_LATENT_PREFIX)
        candidates.append(conditions_dir / relative.with_name(legacy_name))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"{latents_path} has no text embedding file ({' or '.join(str(c) for c in candidates)})"
    )


def collate(items: list[dict]) -> dict:
    """Stack one bucket's samples; text embeddings of different lengths are padded with a False mask.

    A bucket fixes the latent size but not the frame rate, so `fps` stays one value per sample.
    Reference latents (IC-LoRA) have their clip's size, so they stack like the latents.
    """
    length = max(item["prompt_embeds"].shape[0] for item in items)
    embeds, masks = [], []
    for item in items:
        pad = length - item["prompt_embeds"].shape[0]
        embeds.append(torch.nn.functional.pad(item["prompt_embeds"], (0, 0, 0, pad)))
        masks.append(torch.nn.functional.pad(item["prompt_attention_mask"], (0, pad), value=False))
    first = items[0]
    batch = {
        "latents": torch.stack([item["latents"] for item in items]),
        "prompt_embeds": torch.stack(embeds),
        "prompt_attention_mask": torch.stack(masks),
        "num_frames": first["num_frames"],
        "height": first["height"],
        "width": first["width"],
        "fps": torch.tensor([item["fps"] for item in items], dtype=torch.float64),
    }
    if "reference_latents" in first:
        batch["reference_latents"] = torch.stack([item["reference_latents"] for item in items])
    return batch


class BucketBatchOrder:
    """Deterministic batches of one bucket each, shuffled fairly across buckets, split over ranks.

    Each epoch shuffles every bucket's samples, cuts them into full batches and shuffles the batch
    list. A bucket's remainder is left out of that epoch (the reference trainer's drop_last; a
    smaller batch would give each of its samples up to batch_size times the weight of the others);
    the next epoch's shuffle leaves out others. Only a bucket smaller than the batch size makes one
    smaller batch, so tiny datasets still train. Rank r takes every world-th batch; lists are padded
    by wrapping so all ranks step together.
    """

    def __init__(self, buckets: dict[Bucket, list[int]], batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.buckets = {key: list(value) for key, value in sorted(buckets.items())}
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.batches_per_epoch = len(self._epoch_batches(0))

    def _all_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(f"{self.seed}-{epoch}")
        batches: list[list[int]] = []
        for indices in self.buckets.values():
            shuffled = indices[:]
            rng.shuffle(shuffled)
            if len(shuffled) < self.batch_size:
                batches.append(shuffled)
                continue
            whole = len(shuffled) - len(shuffled) % self.batch_size
            batches += [shuffled[i : i + self.batch_size] for i in range(0, whole, self.batch_size)]
        rng.shuffle(batches)
        return batches

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        batches = self._all_batches(epoch)
        per_rank = -(-len(batches) // self.world)
        padded = [batches[i % len(batches)] for i in range(per_rank * self.world)]
        return padded[self.rank :: self.world]

    def batch(self, micro_step: int) -> list[int]:
        """The sample indices of this rank's `micro_step`-th batch (0-based, counts every micro-batch)."""
        epoch, position = divmod(micro_step, self.batches_per_epoch)
        return self._epoch_batches(epoch)[position]
