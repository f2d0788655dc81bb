"""Save the random tiny LTX-Video or LTX-2 models (real diffusers layout) for the demo and for trying the GUI.

They load through exactly the code that loads the real models, so the whole pipeline can be tried
on any machine in seconds; their output is noise, not video (nor sound).
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
        "--family",
        choices=("ltx_video", "ltx2"),
        default="ltx_video",
        help="model family: ltx_video (0.9, default) or ltx2 (LTX-2 with audio)",
    )
    parser.add_argument(
        "--version",
        "--ltx2-version",
        dest="ltx2_version",
        choices=("2.0", "2.3", "2.5"),
        default="2.0",
        help="LTX-2 layout to build: 2.0; 2.3 with gated attention; 2.5 with a Gemma 4 text encoder and "
        "a duration head (only with --family ltx2)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="folder to write (default models/tiny-ltxv, or models/tiny-ltx2 for --family ltx2)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is already complete")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights")
    args = parser.parse_args()
    if args.output is None:
        args.output = REPO_ROOT / "models" / ("tiny-ltx2" if args.family == "ltx2" else "tiny-ltxv")

    from ltxtrainer.models.folder import check_model_folder

    if (args.output / "model_index.json").is_file() and not args.force and check_model_folder(args.output).ok:
        print(f"Tiny models already in {args.output.resolve()} (kept; --force rebuilds them).")
        return 0
    # These import torch and diffusers: only when building.
    from ltxtrainer.models.tiny import save_tiny_model
    from ltxtrainer.models.tiny_ltx2 import save_tiny_ltx2_model

    try:
        if args.family == "ltx2":
            path = save_tiny_ltx2_model(args.output, version=args.ltx2_version, seed=args.seed, overwrite=True)
        else:
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
