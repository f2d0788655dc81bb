"""Time LoRA training steps of an LTX-Video or LTX-2 transformer (random weights): ours against the plain way.

A table for people; with --json the last stdout line is one JSON object for scripts and the GUI.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import json  # noqa: E402

from ltxtrainer.benchmark import (  # noqa: E402
    MODEL_SHAPES,
    BenchmarkRefused,
    options_from_args,
    report_table,
    run_benchmark,
)
from ltxtrainer.config import QUANTIZATION_CHOICES, ConfigError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=list(MODEL_SHAPES), default="tiny",
                        help="transformer shape: LTX-Video 0.9 (tiny, 2b, 13b) or LTX-2 (tiny-ltx2, ltx2, ltx2.3)")
    parser.add_argument("--resolution", default="256x256x25", help="WxHxF of the training clips, e.g. 768x512x49")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--rank", type=int, default=64, help="LoRA rank (alpha = rank)")
    parser.add_argument("--quantization", choices=["none", *QUANTIZATION_CHOICES], default="none")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="bf16")
    parser.add_argument("--compile", action="store_true", help="torch.compile the repeated blocks (ours only)")
    parser.add_argument("--attention-backend", default=None, help="diffusers attention backend name (ours only)")
    parser.add_argument("--block-offload", action="store_true", help="stream blocks from host memory (GPU only)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--skip-plain", action="store_true", help="time only our step")
    parser.add_argument("--video-only", action="store_true",
                        help="LTX-2: a video-only step (default: joint audio+video, as the LTX-2 templates train)")
    parser.add_argument("--allow-cpu-large", action="store_true", help="let the 13B or LTX-2 model run on a CPU anyway")
    parser.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda if available)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line on stdout")
    args = parser.parse_args()
    for stream in (sys.stdout, sys.stderr):  # a GBK console must not turn a symbol into a traceback
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    try:
        report = run_benchmark(options_from_args(args))
    except (BenchmarkRefused, ConfigError) as error:
        print(f"benchmark: {error}", file=sys.stderr)
        return 2
    from rich.console import Console

    Console(stderr=args.json).print(report_table(report))
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
