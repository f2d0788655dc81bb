"""The end-to-end demo: every real stage on synthetic clips and random tiny models, on any CPU.

It lets a new user (and the tests) see the whole path from raw videos to a ComfyUI LoRA in a
minute or two before they download 30 GB of weights: the clips have real motion and hard cuts
so scene detection finds real scenes, the demo captioner describes real pixels, and the tiny
models load through exactly the code that loads LTX-Video 13B. Everything lands under one
folder:

    DIR/train_date/APT/           the synthetic source videos
    DIR/datasets/APT/scenes/      scene clips, captions, .precomputed/<data key>/
    DIR/outputs/APT_64x64x9_<date-time>/  the run (config, status, metrics, checkpoints, samples, LoRAs)
    DIR/models/tiny-ltxv/         the tiny models (built once); tiny-ltx2/ with `--family ltx2`

`--family ltx2` runs the same stages on tiny LTX-2 models with the 24 GB template, from sources
with a sound track; its validation videos carry sound.

`--conditioning reference_video` trains an IC-LoRA instead: a reference stage computes each clip's
Canny edges into DIR/datasets/APT/references_canny/, preprocess adds their latents
(reference_latents/), and each validation sample shows the reference beside the result.
"""

from __future__ import annotations

import json
from pathlib import Path

from ltxtrainer.pipeline import (
    EXIT_OK,
    PipelineOptions,
    ProjectPaths,
    project_paths,
    project_runs,
    run_pipeline,
)
from ltxtrainer.progress import say

DEMO_TRIGGER = "APT"  # the tiny tokenizer knows this word, and tiny_demo.yaml's prompt starts with it
DEMO_SIZE = (64, 64, 9)  # W, H, F: the smallest bucket the VAE accepts with a real latent grid
# (frames per scene) of each source video; every scene is longer than the split's minimum (15)
# and than the 9 frames one sample needs, and a hard cut separates scenes of different colours.
DEMO_SOURCES = {"demo_walk.mp4": (20, 20), "demo_dance.mp4": (18, 22, 18)}
FAMILIES = ("ltx_video", "ltx2")
DEMO_REFERENCE_KIND = "canny"  # the reference trainer's own IC-LoRA example: edges to video
# The LTX-2 demo trains the shipped 24 GB template (int8, bf16, step-0 validation with sound),
# shrunk to the tiny model: two steps, two denoising steps, Gemma in full precision on the CPU
# (8-bit loading needs a CUDA GPU).
LTX2_DEMO_OVERRIDES = {
    "optimization.steps": 2,
    "validation.inference_steps": 2,
    "validation.interval": 2,
    "checkpoints.interval": 2,
    "acceleration.load_text_encoder_in_8bit": False,
}


def make_demo_sources(folder: Path, with_sound: bool = False) -> list[Path]:
    """Write the synthetic source videos (kept when already there, so a re-run splits nothing);
    `with_sound` gives each scene its own tone, for LTX-2."""
    from ltxtrainer.synthetic import make_clip, make_clip_with_sound

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, scenes in DEMO_SOURCES.items():
        path = folder / name
        if not path.is_file():
            write = make_clip_with_sound if with_sound else make_clip
            write(path, width=160, height=96, frames_per_scene=scenes, fps=24.0)
        written.append(path)
    return written


def ensure_tiny_model(folder: Path, family: str = "ltx_video") -> Path:
    """Build the tiny models of `family` unless a complete folder is already there."""
    from ltxtrainer.models.folder import check_model_folder

    if check_model_folder(folder).ok:
        return folder
    say(f"Building the tiny demo models in {folder} (a few seconds)")
    if family == "ltx2":
        from ltxtrainer.models.tiny_ltx2 import save_tiny_ltx2_model

        return save_tiny_ltx2_model(folder, overwrite=True)
    from ltxtrainer.models.tiny import save_tiny_model

    return save_tiny_model(folder, overwrite=True)


def demo_options(output_dir: Path, model_path: Path, family: str = "ltx_video",
                 conditioning: str = "none") -> PipelineOptions:
    width, height, frames = DEMO_SIZE
    ltx2 = family == "ltx2"
    reference_video = conditioning == "reference_video"
    return PipelineOptions(
        project=DEMO_TRIGGER,
        width=width,
        height=height,
        frames=frames,
        steps=("split", "caption", "preprocess", "train", "export"),
        config_template="ltx2" if ltx2 else "tiny",
        overrides=dict(LTX2_DEMO_OVERRIDES) if ltx2 else {},
        captioner="demo",
        model_path=model_path,
        train_date_dir=output_dir / "train_date",
        work_dir=output_dir / "datasets",
        outputs_dir=output_dir / "outputs",
        conditioning=conditioning,
        reference_kind=DEMO_REFERENCE_KIND if reference_video else None,
    )


def run_demo(output_dir: str | Path, model_path: str | Path | None = None, family: str = "ltx_video",
             conditioning: str = "none") -> int:
    """Run split -> caption -> preprocess -> train (with a validation sample) -> export under `output_dir`,
    on tiny LTX-Video 0.9 models or (`family="ltx2"`) tiny LTX-2 ones with sources that have sound;
    `conditioning="reference_video"` adds the reference stage and trains an IC-LoRA."""
    if family not in FAMILIES:
        raise ValueError(f"demo family {family!r} is not one of {', '.join(FAMILIES)}")
    output_dir = Path(output_dir).resolve()
    default_model = output_dir / "models" / ("tiny-ltx2" if family == "ltx2" else "tiny-ltxv")
    model = ensure_tiny_model(Path(model_path) if model_path else default_model, family)
    options = demo_options(output_dir, model.resolve(), family, conditioning)
    make_demo_sources(options.train_date_dir / DEMO_TRIGGER, with_sound=family == "ltx2")
    code = run_pipeline(options)
    if code == EXIT_OK:
        print_results(demo_run_paths(options))
    return code


def demo_run_paths(options: PipelineOptions) -> ProjectPaths:
    """The folders of the run the demo's pipeline used last (the one `run_demo` trained or found done)."""
    return project_paths(options, project_runs(options)[0].name)


def print_results(paths: ProjectPaths) -> None:
    """Tell the user where each result is (stderr, like every human line)."""
    status = json.loads(paths.status_file.read_text(encoding="utf-8"))
    train = status["stages"]["train"]["artefacts"]
    rows = [
        ("source videos", paths.raw_dir),
        ("scene clips", paths.scenes_dir),
        ("captions", paths.scenes_dir / "captions.json"),
        ("latents + embeddings", status["precomputed_dir"]),
        ("training config", paths.config_file),
        ("loss log", paths.run_dir / "metrics.jsonl"),
        ("latest checkpoint", train.get("checkpoint")),
        ("validation sample", (train.get("samples") or [None])[-1]),
        ("LoRA (diffusers)", paths.lora_file),
        ("LoRA (ComfyUI)", paths.comfy_file),
        ("pipeline status", paths.status_file),
    ]
    say("\nDemo finished. Results:")
    for label, location in rows:
        say(f"  {label:22} {location}")
    say("The tiny models are random, so the sample video is noise; the same steps train LTX-Video for real.")
