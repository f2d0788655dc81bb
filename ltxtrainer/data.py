"""The precomputed dataset and its resolution buckets.

Files follow the reference LTX-Video-Trainer layout (FIELD_NOTES §2), so data preprocessed there
trains here unchanged: `.precomputed/latents/<media>.pt` holds packed latents [T, C] with their
latent frame/height/width and fps, `.precomputed/conditions/<media>.pt` the T5 embeddings and mask.

Batches are drawn from one bucket at a time (the reference trainer handles a single bucket), and
the order is a pure function of (seed, epoch): resuming at step k replays exactly the batches an
uninterrupted run would have seen, and every rank of a multi-GPU run gets its own share.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

Bucket = tuple[int, int, int]  # latent (frames, height, width)


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


def _load(path: Path, mmap: bool = False) -> dict:
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


class PrecomputedDataset(torch.utils.data.Dataset):
    """Precomputed latents and text embeddings, indexed once at start-up.

    Shapes are checked up front against each other (a mismatched file names itself here, not as a
    reshape error an hour into training).
    """

    def __init__(self, root: str | Path, expected_channels: int | None = None):
        self.root = find_precomputed_root(root)
        latents_dir, conditions_dir = self.root / "latents", self.root / "conditions"
        samples: list[Sample] = []
        for latents_path in sorted(latents_dir.rglob("*.pt")):
            relative = latents_path.relative_to(latents_dir)
            conditions_path = conditions_dir / relative
            if not conditions_path.is_file():
                raise DatasetError(f"{latents_path} has no text embedding file {conditions_path}")
            samples.append(Sample(latents_path, conditions_path, self._bucket_of(latents_path, expected_channels)))
        if not samples:
            raise DatasetError(f"No precomputed samples (*.pt) in {latents_dir}")
        self.samples = samples

    @staticmethod
    def _bucket_of(path: Path, expected_channels: int | None) -> Bucket:
        # Memory-mapped: indexing needs shapes and sizes only, not every latent read from disk twice.
        data = _load(path, mmap=True)
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
        return (frames, height, width)

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
        latents = _load(sample.latents_path)
        conditions = _load(sample.conditions_path)
        if "prompt_embeds" not in conditions or "prompt_attention_mask" not in conditions:
            raise DatasetError(f"{sample.conditions_path} lacks prompt_embeds/prompt_attention_mask")
        return {
            "latents": latents["latents"].float(),
            "num_frames": int(latents["num_frames"]),
            "height": int(latents["height"]),
            "width": int(latents["width"]),
            "fps": float(latents.get("fps", 24.0)),
            "prompt_embeds": conditions["prompt_embeds"].float(),
            "prompt_attention_mask": conditions["prompt_attention_mask"].bool(),
        }


def collate(items: list[dict]) -> dict:
    """Stack one bucket's samples; text embeddings of different lengths are padded with a False mask."""
    length = max(item["prompt_embeds"].shape[0] for item in items)
    embeds, masks = [], []
    for item in items:
        pad = length - item["prompt_embeds"].shape[0]
        embeds.append(torch.nn.functional.pad(item["prompt_embeds"], (0, 0, 0, pad)))
        masks.append(torch.nn.functional.pad(item["prompt_attention_mask"], (0, pad), value=False))
    first = items[0]
    return {
        "latents": torch.stack([item["latents"] for item in items]),
        "prompt_embeds": torch.stack(embeds),
        "prompt_attention_mask": torch.stack(masks),
        "num_frames": first["num_frames"],
        "height": first["height"],
        "width": first["width"],
        "fps": first["fps"],
    }


class BucketBatchOrder:
    """Deterministic batches of one bucket each, shuffled fairly across buckets, split over ranks.

    Each epoch shuffles every bucket's samples, cuts them into batches (a bucket smaller than the
    batch size still makes one smaller batch, so tiny datasets train), and shuffles the batch list.
    Rank r takes every world-th batch; lists are padded by wrapping so all ranks step together.
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
            batches += [shuffled[i : i + self.batch_size] for i in range(0, len(shuffled), self.batch_size)]
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
