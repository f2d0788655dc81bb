"""Caption every clip and still image in a folder: captions.json plus a .txt beside each one.

    python scripts/caption_videos.py CLIPS_DIR --backend {llava,qwen,api,files,demo} [options]

Exit status 0 when every clip has a caption; otherwise 1 with the reason on stderr (a re-run
captions only the clips still missing).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402

from ltxtrainer.captioning import (  # noqa: E402
    BACKENDS,
    DEFAULT_API_KEY_ENV,
    DEFAULT_INSTRUCTION,
    CaptionError,
    caption_clips,
    open_captioner,
)
from ltxtrainer.progress import say  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Caption video clips and still images for LTX-Video LoRA training.")
    parser.add_argument("clips_dir", type=Path, help="folder of clips and images (searched recursively)")
    parser.add_argument("--backend", choices=BACKENDS, required=True, help="who writes the captions")
    parser.add_argument("--api-base-url", help="OpenAI-compatible server, e.g. https://api.moonshot.cn/v1")
    parser.add_argument("--api-model", help="model name on that server, e.g. moonshot-v1-8k-vision-preview")
    parser.add_argument(
        "--api-key-env",
        default=DEFAULT_API_KEY_ENV,
        help=f"environment variable holding the API key (default {DEFAULT_API_KEY_ENV}); never pass the key itself",
    )
    parser.add_argument("--model-path", type=Path, help="local model folder for llava/qwen (default: the HF cache)")
    parser.add_argument("--quantization", choices=("8bit", "4bit"), help="load llava/qwen with bitsandbytes (CUDA)")
    parser.add_argument("--instruction", default=DEFAULT_INSTRUCTION, help="what to ask the model (default: a video instruction; images get a picture one)")
    parser.add_argument("--trigger-word", help="put this word at the front of every caption that lacks it")
    parser.add_argument("--overwrite", action="store_true", help="caption again clips that already have captions")
    parser.add_argument("--captions-from", type=Path, help="files backend: a .csv/.json/.jsonl table or a .txt folder")
    parser.add_argument("--frames", type=int, default=8, help="frames sampled evenly from each clip (default 8)")
    parser.add_argument("--concurrency", type=int, default=4, help="api backend: requests in flight (default 4)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.frames < 1:
        say("caption: --frames must be at least 1")
        return 2
    if not args.clips_dir.is_dir():
        say(f"caption: {args.clips_dir} is not a folder of clips")
        return 2
    try:
        with open_captioner(
            args.backend,
            api_base_url=args.api_base_url,
            api_model=args.api_model,
            api_key_env=args.api_key_env,
            concurrency=args.concurrency,
            model_path=args.model_path,
            quantization=args.quantization,
            captions_from=args.captions_from,
        ) as captioner:
            report = caption_clips(
                args.clips_dir,
                captioner,
                instruction=args.instruction,
                trigger_word=args.trigger_word,
                overwrite=args.overwrite,
                frames_per_clip=args.frames,
            )
    except (CaptionError, ValueError, OSError, ImportError) as error:
        say(f"caption: {error}")
        return 1
    total = len(report.captioned) + len(report.skipped) + len(report.failed)
    if total == 0:
        say(f"caption: no video clips or images found in {args.clips_dir}")
        return 1
    say(f"caption: {report.summary()}")
    for media_path, reason in report.failed:
        say(f"  {media_path}: {reason}")
    return 0 if report.complete else 1


if __name__ == "__main__":
    sys.exit(main())
