"""Still images in a project train as single frames, end to end through the one-click pipeline.

A project folder as the GUI's "new project" leaves it: one video with two scenes, a PNG, a JPEG
and a corrupt PNG. run_pipeline.py splits (images copied, the corrupt one named and skipped),
captions every clip and image with the demo captioner, precomputes them and trains two steps;
the run's train_start event must list a one-latent-frame bucket, which only the images make.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ltxtrainer.pipeline import EXIT_OK, PipelineOptions, project_paths
from ltxtrainer.synthetic import make_clip
from tests.test_pipeline import cli_args, events_of, run_cli


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (80, 64)) -> Path:
    """A plain picture with a white square in one corner, so it is not a flat colour."""
    pixels = np.full((size[1], size[0], 3), colour, dtype=np.uint8)
    pixels[8:24, 8:24] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def test_images_in_a_project_are_split_captioned_precomputed_and_trained_as_single_frames(tmp_path, tiny_model_dir):
    raw = tmp_path / "train_date" / "stills"
    make_clip(raw / "source clip.mp4", width=96, height=64, frames_per_scene=(18, 18))
    write_image(raw / "red photo.png", (200, 30, 30))
    write_image(raw / "蓝色.jpg", (30, 30, 200))
    (raw / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image at all")
    options = PipelineOptions(
        project="stills", width=64, height=64, frames=9, config_template="tiny", captioner="demo",
        train_date_dir=tmp_path / "train_date", work_dir=tmp_path / "datasets", outputs_dir=tmp_path / "outputs",
    )
    result = run_cli(cli_args(options, "split,caption,preprocess,train", "--set", "optimization.steps=2",
                              model=tiny_model_dir))
    assert result.returncode == EXIT_OK, result.stderr[-3000:]
    assert "broken.png: is not a readable image" in result.stdout + result.stderr

    scenes = project_paths(options).scenes_dir
    assert sorted(path.name for path in scenes.iterdir() if path.suffix != ".txt" and path.is_file()) == [
        "captions.json", "red photo.png", "source clip-Scene-001.mp4", "source clip-Scene-002.mp4", "蓝色.jpg"]
    assert (scenes / "red photo.png").read_bytes() == (raw / "red photo.png").read_bytes()
    captions = {entry["media_path"]: entry["caption"]
                for entry in json.loads((scenes / "captions.json").read_text(encoding="utf-8"))}
    assert captions["red photo.png"].startswith("stills, A still") and "red background" in captions["red photo.png"]
    assert "blue background" in captions["蓝色.jpg"]

    run_dir = Path(events_of(result.stdout)[0]["run_dir"])
    status = json.loads((run_dir / "pipeline_status.json").read_text(encoding="utf-8"))
    latents = Path(status["precomputed_dir"]) / "latents"
    assert {path.name for path in latents.glob("*.pt")} >= {"red photo.pt", "蓝色.pt"}
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    start = next(event for event in metrics if event["event"] == "train_start")
    assert start["samples"] == 4
    assert sorted(bucket[0] for bucket in start["buckets"]) == [1, 2]  # latent frames: the images 1, the clips 2

    # An image added later is a change of the project: split copies it and the caption stage captions it
    # (their fingerprints count images, not only videos), and the next run trains on it.
    write_image(raw / "green photo.png", (30, 200, 30))
    again = run_cli(cli_args(options, "split,caption,preprocess", model=tiny_model_dir))
    assert again.returncode == EXIT_OK, again.stderr[-3000:]
    stages = {e["stage"]: e["status"] for e in events_of(again.stdout) if e["event"] == "pipeline"}
    assert stages == {"split": "done", "caption": "done", "preprocess": "done"}, stages
    assert (scenes / "green photo.png").is_file() and (scenes / "green photo.txt").is_file()
