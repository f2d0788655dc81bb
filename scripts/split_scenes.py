"""Split videos into one clip per scene (images are copied as they are):
`python scripts/split_scenes.py INPUT --output-dir DIR`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402

from ltxtrainer.media import MediaError  # noqa: E402
from ltxtrainer.progress import say  # noqa: E402
from ltxtrainer.scenes import DEFAULT_MIN_SCENE_LEN, DETECTORS, split_scenes  # noqa: E402

EPILOG = """\
Clips are named <source name>-Scene-001.mp4, -002, ... (H.264, frame-exact, the source's frame
rate; a source with sound gives each clip the sound of its own scene as AAC at the source's sample
rate, which LTX-2 trains on; 5.1 stays 5.1, unusual layouts become stereo). Videos in subfolders of INPUT keep their subfolder under --output-dir. A video already
split (a finished record in DIR/.split/, or its -Scene-001.mp4 already there) is skipped, so a
re-run only does what is missing. Still images (.png, .jpg, .jpeg, .webp, .bmp) are copied to
the same place unchanged, unless an identical copy is already there; they train as single frames.

Exit status: 0 when every readable video or image was split, copied or already done (unreadable files are listed
on stderr and in the JSON summary on stdout, but do not fail the run); 1 when INPUT is missing,
holds no video or image, or an option is invalid; 2 when files were found but not one could be read.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Split videos into one clip per scene with PySceneDetect; copy images unchanged.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", type=Path, help="a video or image file, or a folder searched recursively for them")
    parser.add_argument("--output-dir", type=Path, required=True, help="folder for the scene clips")
    parser.add_argument(
        "--detector",
        choices=DETECTORS,
        default="content",
        help="content: cuts where the picture changes a lot between frames (default); "
        "adaptive: compares with a rolling average, fewer false cuts on fast camera motion",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="cut sensitivity in the detector's own scale, lower cuts more "
        "(defaults: content 27, adaptive 3.0)",
    )
    parser.add_argument(
        "--min-scene-len",
        type=int,
        default=DEFAULT_MIN_SCENE_LEN,
        metavar="FRAMES",
        help=f"shortest scene in frames; closer cuts are ignored (default {DEFAULT_MIN_SCENE_LEN})",
    )
    parser.add_argument(
        "--max-scene-len",
        type=float,
        default=None,
        metavar="SECONDS",
        help="cut longer scenes into consecutive pieces of this many SECONDS (not frames); "
        "a last piece shorter than --min-scene-len is dropped (default: no limit)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = split_scenes(
            args.input,
            args.output_dir,
            detector=args.detector,
            threshold=args.threshold,
            min_scene_len=args.min_scene_len,
            max_scene_len=args.max_scene_len,
        )
    except (MediaError, ValueError) as error:
        say(f"split_scenes: {error}")
        return 1
    any_split = bool(report.written or report.copied or report.skipped)
    for path, reason in report.failed:
        say(f"  could not split {path}: {reason}")
    say(
        f"split_scenes: {len(report.written)} clips written, {len(report.copied)} images copied, "
        f"{len(report.skipped)} files already done, {len(report.failed)} could not be read."
    )
    if not any_split and not report.failed:
        say(f"split_scenes: no video or image files found in {args.input}.")
        return 1
    if report.failed and not any_split:
        say("split_scenes: not one file could be read; check the files listed above.")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
