"""Run the whole pipeline for one project, or the end-to-end demo on tiny models.

    python scripts/run_pipeline.py PROJECT --resolution 768x512 --frames 49 \
        --steps split,caption,preprocess,train --config-template 13b --captioner api \
        --api-base-url https://api.moonshot.cn/v1 --api-model moonshot-v1-8k-vision-preview \
        --api-key-env MOONSHOT_API_KEY --set optimization.steps=1500
    python scripts/run_pipeline.py PROJECT --run-name NAME --resume   # continue run NAME
    python scripts/run_pipeline.py --demo [--family ltx2] [--conditioning reference_video] [--output-dir outputs/demo]
    python scripts/run_pipeline.py PROJECT --conditioning reference_video --reference-kind canny ...  # IC-LoRA
    python scripts/run_pipeline.py PROJECT --config-template ltx2 --model-path models/LTX-2-diffusers ...

PROJECT is the trigger word and the folder name under train_date/. Folders: train_date/PROJECT/
(your videos) -> datasets/PROJECT/scenes/ (clips, captions.json, .txt, and .precomputed/KEY/, one
data folder per resolution, text length and caption set) -> outputs/RUN/ (training_config.yaml,
pipeline_status.json, metrics.jsonl, checkpoints/, samples/, lora_weights.safetensors,
RUN_comfy.safetensors). Asking for train also exports the ComfyUI file.

IC-LoRA (--conditioning reference_video): a reference stage runs between caption and preprocess.
It computes each clip's reference (--reference-kind canny|blur|gray|downscale) into
datasets/PROJECT/references_KIND/, or checks that --reference-dir holds one for every clip
(--reference-kind folder). Preprocess then also writes reference_latents/, the run trains with
conditioning.mode reference_video, and each validation sample shows reference | result.

RUN is --run-name, or the run of an identical earlier request, or a new
PROJECT_WxHxF_YYYYMMDD-HHMMSS. Run the same request again at any time: finished stages are
skipped, a stopped run continues from its latest checkpoint. Change anything (a caption, the
resolution, a setting) and a new run folder is trained; earlier runs and their data stay as they
were. --run-name NAME --resume continues run NAME with its own settings and data.

Clips shorter than --frames are trained with the most 8k+1 frames they have (--on-short shrink,
the default; a note names them) or left out (--on-short skip).

Exit status: 0 done; 1 a stage failed (its reason is the last line on stderr, in
pipeline_status.json and in the last JSON line); 2 the request was refused; 130 stopped by the
user (the last JSON line says how to continue).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402

from ltxtrainer.captioning.backends import DEFAULT_API_KEY_ENV  # noqa: E402
from ltxtrainer.dataset_key import DEFAULT_TEXT_LENGTH  # noqa: E402
from ltxtrainer.pipeline import (  # noqa: E402
    CAPTIONERS,
    CONDITIONING_MODES,
    DEFAULT_REFERENCE_KIND,
    ON_SHORT,
    REPO_ROOT,
    TEMPLATES,
    PipelineError,
    PipelineOptions,
    options_from_overrides,
    parse_resolution,
    parse_steps,
    refuse,
    run_pipeline,
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is refused like every other request: the GUI reads the reason
    from the last JSON line (pipeline_end), not only from the usage text on stderr."""

    def error(self, message: str) -> None:
        self.print_usage(sys.stderr)
        sys.exit(refuse(f"{self.prog}: {message}"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", nargs="?", help="trigger word = folder name under train_date/ (A-Z a-z 0-9 _ -)")
    parser.add_argument("--resolution", default="768x512", help="WIDTHxHEIGHT, multiples of 32 (default 768x512)")
    parser.add_argument("--frames", type=int, default=49, help="frames per clip, 8k+1 (default 49)")
    parser.add_argument("--steps", default="split,caption,preprocess,train",
                        help="comma-separated stages: split,caption,preprocess,train,export (train implies export)")
    parser.add_argument("--config-template", choices=sorted(TEMPLATES), default="13b",
                        help="training config template in configs/ (default 13b)")
    parser.add_argument("--captioner", choices=CAPTIONERS, default="api", help="caption backend (default api)")
    parser.add_argument("--api-base-url", help="OpenAI-compatible server, e.g. https://api.moonshot.cn/v1")
    parser.add_argument("--api-model", help="vision model name on that server")
    parser.add_argument("--api-key-env", default=DEFAULT_API_KEY_ENV,
                        help=f"environment variable holding the API key (default {DEFAULT_API_KEY_ENV}); never the key itself")
    parser.add_argument("--caption-model-path", type=Path, help="llava/qwen: local captioning model folder")
    parser.add_argument("--captions-from", type=Path, help="files captioner: a .csv/.json/.jsonl table or .txt folder")
    parser.add_argument("--model-path", type=Path, help="LTX-Video diffusers folder (default: the template's model_source)")
    parser.add_argument("--train-date-dir", type=Path, default=REPO_ROOT / "train_date", help="folder of projects")
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / "datasets",
                        help="folder for scene clips, captions and latents (default datasets/)")
    parser.add_argument("--outputs-dir", type=Path, default=REPO_ROOT / "outputs", help="folder for runs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a training config field, e.g. --set lora.rank=32 (repeatable)")
    parser.add_argument("--detector", choices=("content", "adaptive"), help="split: scene detector")
    parser.add_argument("--threshold", type=float, help="split: cut sensitivity (lower cuts more)")
    parser.add_argument("--min-scene-len", type=int, help="split: shortest scene in frames")
    parser.add_argument("--max-scene-len", type=float, help="split: cut longer scenes into pieces of this many seconds")
    parser.add_argument("--run-name", help="run folder under --outputs-dir (default: the run of an identical earlier "
                        "request, else PROJECT_WxHxF_YYYYMMDD-HHMMSS)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run named by --run-name with its own settings and data (train + export)")
    parser.add_argument("--on-short", choices=ON_SHORT, default="shrink",
                        help="clips shorter than --frames: train them with fewer frames (shrink, default) or leave them out")
    parser.add_argument("--max-sequence-length", type=int, default=DEFAULT_TEXT_LENGTH,
                        help=f"T5 tokens per caption (default {DEFAULT_TEXT_LENGTH}, as the reference trainer)")
    parser.add_argument("--conditioning", choices=CONDITIONING_MODES, default="none",
                        help="reference_video: train an IC-LoRA, each clip guided by a reference video (default none)")
    parser.add_argument("--reference-kind",
                        help="with --conditioning reference_video: canny, blur, gray or downscale (computed from the "
                        "clips into datasets/PROJECT/references_KIND/), or folder (your own, see --reference-dir); "
                        f"default {DEFAULT_REFERENCE_KIND}")
    parser.add_argument("--reference-dir", type=Path,
                        help="with --reference-kind folder: your reference videos, each named like its clip "
                        "(clip.mp4 -> clip_reference.mp4 or clip.mp4, in the same sub-folder)")
    parser.add_argument("--reference-downscale", type=int, default=1,
                        help="LTX-2 only: references at 1/N of the clips' width and height, N = 1, 2 or 4 (default 1)")
    parser.add_argument("--demo", action="store_true", help="run the end-to-end demo on tiny models (CPU is fine)")
    parser.add_argument("--family", choices=("ltx_video", "ltx2"), default="ltx_video",
                        help="with --demo: tiny LTX-Video 0.9 models (default) or tiny LTX-2 with sound")
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "outputs" / "demo",
                        help="with --demo: where everything is written (default outputs/demo)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.demo:
        from ltxtrainer.demo import run_demo

        return run_demo(args.output_dir, family=args.family, conditioning=args.conditioning)
    try:
        if not args.project:
            raise PipelineError("Name the project (its trigger word) first, e.g. run_pipeline.py mystyle --resolution 768x512.")
        width, height = parse_resolution(args.resolution)
        options = PipelineOptions(
            project=args.project, width=width, height=height, frames=args.frames, steps=parse_steps(args.steps),
            config_template=args.config_template, captioner=args.captioner, api_base_url=args.api_base_url,
            api_model=args.api_model, api_key_env=args.api_key_env, caption_model_path=args.caption_model_path,
            captions_from=args.captions_from, model_path=args.model_path, train_date_dir=args.train_date_dir,
            work_dir=args.work_dir, outputs_dir=args.outputs_dir, overrides=options_from_overrides(args.overrides),
            detector=args.detector, threshold=args.threshold, min_scene_len=args.min_scene_len,
            max_scene_len=args.max_scene_len, run_name=args.run_name, resume=args.resume, on_short=args.on_short,
            text_length=args.max_sequence_length, conditioning=args.conditioning, reference_kind=args.reference_kind,
            reference_dir=args.reference_dir, reference_downscale=args.reference_downscale,
        )
    except PipelineError as error:
        return refuse(str(error))
    return run_pipeline(options)


if __name__ == "__main__":
    sys.exit(main())
