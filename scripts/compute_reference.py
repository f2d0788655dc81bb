"""Make IC-LoRA reference videos from training clips:
`python scripts/compute_reference.py CLIPS_DIR --kind canny --output-dir DIR`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402

from ltxtrainer.media import MediaError  # noqa: E402
from ltxtrainer.progress import say  # noqa: E402
from ltxtrainer.reference import REFERENCE_KINDS, compute_references  # noqa: E402

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_STOPPED = 0, 1, 2, 130

EPILOG = """\
Each clip CLIPS_DIR/<sub>/<name>.<ext> gets DIR/<sub>/<name>_reference.mp4: the same size, frame
count and frame rate, every frame turned into
  canny      white edges on black (OpenCV Canny, thresholds 100/200, as Lightricks' IC-LoRA trainers)
  blur       a strong Gaussian blur (sigma 1/20 of the shorter side)
  gray       the clip in black and white
  downscale  the clip at 1/4 of its width and height, scaled back up (a low-resolution version)
Then preprocess with `scripts/preprocess_dataset.py ... --reference-dir DIR`. A re-run skips clips
whose reference is already made (same clip, same kind; recorded in DIR/.references.json).

Exit status: 0 when every readable clip has its reference (unreadable clips are listed on stderr
and in the JSON summary on stdout); 1 when clips were found but not one could be read; 2 when
CLIPS_DIR is missing or holds no video; 130 when stopped (Ctrl+C or the job's stop file).
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Make IC-LoRA reference videos (edges, blur, grey, low resolution) from training clips.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("clips_dir", type=Path, help="folder of training clips, searched recursively")
    parser.add_argument("--kind", choices=REFERENCE_KINDS, required=True, help="what each reference shows")
    parser.add_argument("--output-dir", type=Path, required=True, help="folder for the reference videos")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = compute_references(args.clips_dir, args.output_dir, args.kind)
    except MediaError as error:
        say(f"compute_reference: {error}")
        return EXIT_REFUSED
    except KeyboardInterrupt:
        say("compute_reference: stopped; the references made so far are kept, a re-run makes the rest.")
        return EXIT_STOPPED
    for path, reason in report.failed:
        say(f"  could not make a reference of {path}: {reason}")
    say(
        f"compute_reference: {len(report.written)} references written, {len(report.up_to_date)} already made, "
        f"{len(report.failed)} clips could not be read."
    )
    if report.stopped:
        say("compute_reference: stopped; the references made so far are kept, a re-run makes the rest.")
        return EXIT_STOPPED
    if not (report.written or report.up_to_date or report.failed):
        say(f"compute_reference: no video files found in {args.clips_dir}.")
        return EXIT_REFUSED
    if not (report.written or report.up_to_date):
        say("compute_reference: not one clip could be read; check the files listed above.")
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
