"""Train a LoRA (or the full model) for LTX-Video from precomputed latents and text embeddings.

    python scripts/train.py configs/NAME.yaml [--resume]
    accelerate launch [--multi_gpu --num_processes N] scripts/train.py configs/NAME.yaml

Exit code 0 only when training finished; 130 when stopped by Ctrl+C / the GUI (a checkpoint was
saved, continue with --resume); 1 with a one-paragraph reason otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="training config (YAML)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")
    args = parser.parse_args(argv)

    from ltxtrainer.training.run import train_from_file

    return train_from_file(args.config, resume=args.resume)


if __name__ == "__main__":
    sys.exit(main())
