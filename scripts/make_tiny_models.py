"""Save the random tiny LTX-Video models (real diffusers layout) for the demo and for trying the GUI.

They load through exactly the code that loads the 13B model, so the whole pipeline can be tried
on any machine in seconds; their output is noise, not video.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output", type=Path, default=REPO_ROOT / "models" / "tiny-ltxv", help="folder to write"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is already complete")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights")
    args = parser.parse_args()

    from ltxtrainer.models.folder import check_model_folder

    if (args.output / "model_index.json").is_file() and not args.force and check_model_folder(args.output).ok:
        print(f"Tiny models already in {args.output.resolve()} (kept; --force rebuilds them).")
        return 0
    from ltxtrainer.models.tiny import save_tiny_model  # imports torch and diffusers: only when building

    try:
        path = save_tiny_model(args.output, seed=args.seed, overwrite=True)
    except OSError as error:
        print(f"Could not write the tiny models to {args.output}: {error}", file=sys.stderr)
        return 1
    report = check_model_folder(path)
    if not report.ok:
        print(report.message(), file=sys.stderr)
        return 1
    print(f"Tiny models written to {path.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
