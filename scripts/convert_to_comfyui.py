"""Convert an LTX-Video or LTX-2 LoRA between ComfyUI and diffusers formats, or merge it (0.9) into the base model.

    python scripts/convert_to_comfyui.py LORA.safetensors [--output PATH] [--to diffusers]
    python scripts/convert_to_comfyui.py LORA.safetensors --merge --model-path DIR --strength S --output-dir DIR

The input format (diffusers, ComfyUI, kohya, peft) is detected from the file, and so is the family:
an LTX-2 LoRA says so in our metadata or adapts audio modules (`export.is_ltx2_lora`). The ComfyUI file
it writes loads at the trained strength in ComfyUI and in diffusers alike; the diffusers file has
alpha/rank folded in too, so diffusers releases before 0.35 (which ignore the stored alpha) load it right.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ltxtrainer.export import LoraFormatError, merge_lora, to_comfyui, to_diffusers  # noqa: E402
from ltxtrainer.progress import emit, say  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("lora", type=Path, help="the LoRA .safetensors file (any supported format)")
    parser.add_argument(
        "--output", type=Path, help="output file (default: beside the input, _comfy / _diffusers)"
    )
    parser.add_argument(
        "--to", choices=("comfyui", "diffusers"), default="comfyui", help="target format (default: comfyui)"
    )
    parser.add_argument(
        "--merge", action="store_true", help="fuse the LoRA into the base transformer instead"
    )
    parser.add_argument(
        "--model-path", type=Path, help="with --merge: the diffusers model (or transformer) folder"
    )
    parser.add_argument(
        "--strength", type=float, default=1.0, help="with --merge: LoRA strength (default 1.0)"
    )
    parser.add_argument("--output-dir", type=Path, help="with --merge: folder for the merged transformer")
    parser.add_argument(
        "--overwrite", action="store_true", help="with --merge: replace an existing output folder"
    )
    args = parser.parse_args(argv)
    if args.merge and (args.model_path is None or args.output_dir is None):
        parser.error("--merge needs --model-path and --output-dir")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.merge:
            output = merge_lora(
                args.model_path, args.lora, args.strength, args.output_dir, overwrite=args.overwrite
            )
            what = "merged transformer"
        elif args.to == "diffusers":
            output = to_diffusers(args.lora, args.output)
            what = "diffusers LoRA"
        else:
            output = to_comfyui(args.lora, args.output)
            what = "ComfyUI LoRA"
    except (LoraFormatError, OSError) as error:
        say(f"Error: {error}")
        return 2
    say(f"Wrote {what}: {output}")
    emit("export", kind="merge" if args.merge else args.to, output=str(output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
