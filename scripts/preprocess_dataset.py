"""Precompute VAE latents and text embeddings for a captioned dataset folder (LTX-Video 0.9 or LTX-2).

    python scripts/preprocess_dataset.py DATASET --resolution-buckets "768x512x49;512x768x49" \
        --model-path models/LTX-Video-0.9.7-diffusers

Writes DATASET/.precomputed/ (the reference LTX-Video-Trainer layout), or --output-dir. Run it
again after adding clips or editing captions: only what changed is computed. Captions are
encoded to 256 T5 tokens by default, as the reference trainer and diffusers' LTXConditionPipeline
do; the validation prompts must then be encoded at the same length. For an LTX-2 folder the
clips' sound is encoded too when every clip has a sound track (--with-audio / --no-audio choose).
For IC-LoRA, --reference-dir DIR (references from scripts/compute_reference.py, or your own named
like the clips) also writes reference_latents/: each clip's reference cut and resized exactly as
the clip; a clip without a reference is skipped and named.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ltxtrainer.buckets import Bucket, BucketError, parse_buckets  # noqa: E402
from ltxtrainer.dataset_key import DEFAULT_TEXT_LENGTH  # noqa: E402
from ltxtrainer.models.folder import ModelFolderError  # noqa: E402


def resolution_buckets(text: str) -> list[Bucket]:
    """argparse shows only ArgumentTypeError messages, so the rule a bucket breaks is passed on as one."""
    try:
        return parse_buckets(text)
    except BucketError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="dataset folder with clips/images and captions.json or .txt captions")
    parser.add_argument(
        "--resolution-buckets", required=True, type=resolution_buckets,
        help='buckets "WxHxF;WxHxF" (W, H multiples of 32, F = 8k+1), e.g. "768x512x49;512x768x49"',
    )
    parser.add_argument("--model-path", required=True, help="LTX-Video diffusers model folder (or a repo id in the local Hugging Face cache)")
    parser.add_argument("--max-sequence-length", type=int, default=DEFAULT_TEXT_LENGTH,
                        help=f"T5 tokens per caption (default {DEFAULT_TEXT_LENGTH}, as the reference trainer)")
    parser.add_argument("--output-dir", type=Path, help="where latents/ and conditions/ go (default DATASET/.precomputed)")
    parser.add_argument("--vae-tiling", action="store_true", help="encode large frames in tiles (less GPU memory)")
    parser.add_argument(
        "--decode-check", type=int, default=0, metavar="N",
        help="decode the first N samples back to .precomputed/decoded/*.mp4 to check them by eye",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None, help="default: bf16 on GPU, fp32 on CPU")
    parser.add_argument("--overwrite", action="store_true", help="recompute every sample, even those up to date")
    parser.add_argument(
        "--on-short", choices=("skip", "shrink"), default="skip",
        help="clips shorter than their bucket: skip them (default) or train them with the largest 8k+1 frames they have",
    )
    audio = parser.add_mutually_exclusive_group()
    audio.add_argument(
        "--with-audio", dest="with_audio", action="store_const", const=True, default=None,
        help="LTX-2 only: encode each clip's sound too (every clip needs a sound track). "
        "Default: sound when every clip has a sound track, otherwise video only",
    )
    audio.add_argument("--no-audio", dest="with_audio", action="store_const", const=False, help="LTX-2 only: video only")
    parser.add_argument(
        "--reference-dir", type=Path, metavar="DIR",
        help="IC-LoRA: folder of reference videos, <clip name>_reference.mp4 or <clip name>.<ext> in each "
        "clip's sub-folder (captions.json's reference_path wins); writes reference_latents/",
    )
    parser.add_argument(
        "--reference-downscale", type=int, choices=(1, 2, 4), default=1, metavar="{1,2,4}",
        help="LTX-2 only: encode the references at 1/N of the clips' width and height (default 1)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Imported here, not at the top: torch and diffusers take seconds to import, and a typo in
    # an argument should be reported at once.
    from ltxtrainer.preprocess import PreprocessError, describe, preprocess_dataset

    try:
        report = preprocess_dataset(
            args.dataset,
            args.resolution_buckets,
            args.model_path,
            max_sequence_length=args.max_sequence_length,
            vae_tiling=args.vae_tiling,
            decode_check=args.decode_check,
            device=args.device,
            dtype=args.dtype,
            overwrite=args.overwrite,
            on_short=args.on_short,
            output_dir=args.output_dir,
            with_audio=args.with_audio,
            reference_dir=args.reference_dir,
            reference_downscale=args.reference_downscale,
        )
    except (PreprocessError, BucketError, ModelFolderError, OSError) as error:
        print(f"Preprocessing stopped: {error}", file=sys.stderr)
        return 2
    if not report.computed and not report.skipped:
        print(
            f"Preprocessing stopped: none of the {len(report.failed)} media file(s) in {args.dataset} could be used: "
            f"{describe(report.failed)}. Fix their captions or files and run again.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
