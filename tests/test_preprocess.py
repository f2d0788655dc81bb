"""Preprocessing on the tiny model: reference-layout files, exact pipeline latents, idempotent re-runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import LTXPipeline
from PIL import Image

from ltxtrainer.dataset_key import PRECOMPUTED
from ltxtrainer.media import load_clip, probe_video
from ltxtrainer.models.folder import ModelFolderError
from ltxtrainer.models.ltx_video import load_vae
from ltxtrainer.models.tiny import TINY_LATENT_CHANNELS, TINY_TEXT_HIDDEN
from ltxtrainer.preprocess import (
    PreprocessError,
    encode_frames,
    precomputed_paths,
    preprocess_dataset,
    reference_latents_path,
)
from ltxtrainer.reference import compute_references
from ltxtrainer.synthetic import make_clip, scene_frames

BUCKETS = "96x64x17;64x96x17;64x64x17"


def write_dataset(folder: Path) -> Path:
    """A landscape and a portrait clip, an image, a corrupt clip and an uncaptioned clip."""
    make_clip(folder / "land.mp4", width=96, height=64, frames_per_scene=(17,))
    (folder / "land.txt").write_text("a red square moves right", encoding="utf-8")
    make_clip(folder / "sub" / "port.mp4", width=64, height=96, frames_per_scene=(20,))
    Image.fromarray(scene_frames(64, 64, 1, scene_index=2)[0]).save(folder / "still.png")
    (folder / "bad.mp4").write_bytes(b"this is not a video" * 50)
    make_clip(folder / "nocap.mp4", width=64, height=64, frames_per_scene=(17,))
    captions = [
        {"media_path": "sub/port.mp4", "caption": "a green square moves up"},
        {"media_path": "still.png", "caption": "a blue background"},
        {"media_path": "bad.mp4", "caption": "broken"},
        {"media_path": "../elsewhere.mp4", "caption": "outside the dataset"},
    ]
    (folder / "captions.json").write_text(json.dumps(captions), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory, tiny_model_dir):
    dataset = write_dataset(tmp_path_factory.mktemp("data") / "my clips 数据集")
    report = preprocess_dataset(dataset, BUCKETS, tiny_model_dir, decode_check=1, device="cpu")
    return dataset, report


def test_files_follow_the_reference_layout_and_each_shape_gets_its_bucket(preprocessed):
    dataset, report = preprocessed
    assert report.computed == ["land.mp4", "still.png", "sub/port.mp4"]
    assert set(report.failed) == {"bad.mp4", "nocap.mp4", "../elsewhere.mp4"}
    assert "no caption" in report.failed["nocap.mp4"]
    # (latent frames, height, width) for 96x64x17, a one-frame 64x64 image, and 64x96x17
    expected = {"land.mp4": (3, 2, 3), "still.png": (1, 2, 2), "sub/port.mp4": (3, 3, 2)}
    for relative, (frames, height, width) in expected.items():
        latents_path, conditions_path = precomputed_paths(dataset / PRECOMPUTED, relative)
        latents = torch.load(latents_path, weights_only=True)
        assert set(latents) == {"latents", "num_frames", "height", "width", "fps"}
        assert (latents["num_frames"], latents["height"], latents["width"]) == (frames, height, width)
        assert latents["latents"].shape == (frames * height * width, TINY_LATENT_CHANNELS)
        assert latents["latents"].dtype == torch.float32 and isinstance(latents["fps"], float)
        conditions = torch.load(conditions_path, weights_only=True)
        # 256 T5 tokens by default, as the reference trainer and LTXConditionPipeline encode
        assert conditions["prompt_embeds"].shape == (256, TINY_TEXT_HIDDEN)
        assert conditions["prompt_attention_mask"].dtype == torch.bool
        assert conditions["prompt_attention_mask"].shape == (256,)
        assert 0 < conditions["prompt_attention_mask"].sum() < 256
    assert latents_path.relative_to(dataset).as_posix() == ".precomputed/latents/sub/port.pt"
    assert not precomputed_paths(dataset / PRECOMPUTED, "bad.mp4")[0].exists()
    manifest = json.loads((dataset / ".precomputed" / "manifest.json").read_text(encoding="utf-8"))
    buckets = {key: entry["latents"]["bucket"] for key, entry in manifest["samples"].items()}
    assert buckets == {"land.mp4": "96x64x17", "still.png": "64x64x1", "sub/port.mp4": "64x96x17"}
    assert manifest["samples"]["land.mp4"]["conditions"]["max_sequence_length"] == 256


def test_stored_latents_are_the_pipelines_own_encoding_and_decode_back(preprocessed, tiny_model_dir):
    dataset, _ = preprocessed
    vae = load_vae(tiny_model_dir)
    frames, _ = load_clip(dataset / "land.mp4", 96, 64, 17)
    video = (torch.from_numpy(frames).float() / 127.5 - 1).permute(3, 0, 1, 2)[None]
    with torch.no_grad():
        encoded = vae.encode(video).latent_dist.mode()
    normalised = LTXPipeline._normalize_latents(encoded, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    expected = LTXPipeline._pack_latents(normalised, 1, 1)[0]
    stored = torch.load(precomputed_paths(dataset / PRECOMPUTED, "land.mp4")[0], weights_only=True)
    torch.testing.assert_close(stored["latents"], expected, rtol=1e-5, atol=1e-5)

    unpacked = LTXPipeline._unpack_latents(stored["latents"][None], 3, 2, 3, 1, 1)
    torch.testing.assert_close(unpacked, normalised, rtol=1e-5, atol=1e-5)
    latents = LTXPipeline._denormalize_latents(unpacked, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    with torch.no_grad():
        decoded = vae.decode(latents, return_dict=False)[0]
    assert decoded.shape == (1, 3, 17, 64, 96)
    check = probe_video(dataset / ".precomputed" / "decoded" / "land.mp4")
    assert (check.width, check.height, check.num_frames) == (96, 64, 17)


def test_output_loads_in_the_trainers_dataset(preprocessed):
    from ltxtrainer.data import PrecomputedDataset

    dataset, _ = preprocessed
    data = PrecomputedDataset(dataset, expected_channels=TINY_LATENT_CHANNELS)
    assert len(data) == 3
    assert sorted(data.buckets) == [(1, 2, 2), (3, 2, 3), (3, 3, 2)]
    item = data[0]
    assert {"latents", "prompt_embeds", "prompt_attention_mask", "num_frames", "height", "width", "fps"} <= set(item)
    assert PrecomputedDataset(dataset / ".precomputed").samples == data.samples


def test_rerun_does_only_what_changed(tmp_path, tiny_model_dir):
    dataset = tmp_path / "set"
    make_clip(dataset / "a.mp4", width=96, height=64, frames_per_scene=(17,))
    make_clip(dataset / "b.mp4", width=64, height=96, frames_per_scene=(17,))
    (dataset / "a.txt").write_text("a red square", encoding="utf-8")
    (dataset / "b.txt").write_text("a green square", encoding="utf-8")
    assert preprocess_dataset(dataset, BUCKETS, tiny_model_dir).computed == ["a.mp4", "b.mp4"]

    again = preprocess_dataset(dataset, BUCKETS, tiny_model_dir)
    assert (again.computed, again.skipped, again.failed) == ([], ["a.mp4", "b.mp4"], {})

    latents_b, conditions_b = precomputed_paths(dataset / PRECOMPUTED, "b.mp4")
    latents_stamp, old_embeds = latents_b.stat().st_mtime_ns, torch.load(conditions_b)["prompt_embeds"]
    (dataset / "b.txt").write_text("a dog walks in the city", encoding="utf-8")
    edited = preprocess_dataset(dataset, BUCKETS, tiny_model_dir)
    assert (edited.computed, edited.skipped) == (["b.mp4"], ["a.mp4"])
    assert latents_b.stat().st_mtime_ns == latents_stamp  # a caption edit leaves the latents alone
    assert not torch.equal(torch.load(conditions_b)["prompt_embeds"], old_embeds)

    # A longer text budget or another bucket list changes every sample it touches.
    assert preprocess_dataset(dataset, BUCKETS, tiny_model_dir, max_sequence_length=64).computed == ["a.mp4", "b.mp4"]
    rebucketed = preprocess_dataset(dataset, "64x64x17;64x96x17", tiny_model_dir, max_sequence_length=64)
    assert (rebucketed.computed, rebucketed.skipped) == (["a.mp4"], ["b.mp4"])
    assert torch.load(precomputed_paths(dataset / PRECOMPUTED, "a.mp4")[0])["width"] == 2

    # A deleted clip's files go, so it no longer trains.
    os.remove(dataset / "a.mp4")
    pruned = preprocess_dataset(dataset, "64x64x17;64x96x17", tiny_model_dir, max_sequence_length=64)
    assert pruned.removed == ["a.mp4"] and not precomputed_paths(dataset / PRECOMPUTED, "a.mp4")[0].exists()


def test_another_model_recomputes_everything(tmp_path, tiny_model_dir):
    from ltxtrainer.models.tiny import save_tiny_model

    dataset = tmp_path / "set"
    make_clip(dataset / "a.mp4", width=64, height=64, frames_per_scene=(17,))
    (dataset / "a.txt").write_text("a red square", encoding="utf-8")
    preprocess_dataset(dataset, BUCKETS, tiny_model_dir)
    moved = shutil.copytree(tiny_model_dir, tmp_path / "moved model")
    assert preprocess_dataset(dataset, BUCKETS, moved).skipped == ["a.mp4"]  # same weights elsewhere
    other = save_tiny_model(tmp_path / "other", seed=1)
    assert preprocess_dataset(dataset, BUCKETS, other).computed == ["a.mp4"]


def test_short_clips_are_skipped_or_shrunk(tmp_path, tiny_model_dir):
    dataset = tmp_path / "set"
    make_clip(dataset / "short.mp4", width=64, height=64, frames_per_scene=(12,))
    (dataset / "short.txt").write_text("a red square", encoding="utf-8")
    skipped = preprocess_dataset(dataset, "64x64x17", tiny_model_dir)
    assert "12 frames" in skipped.failed["short.mp4"] and not skipped.computed
    shrunk = preprocess_dataset(dataset, "64x64x17", tiny_model_dir, on_short="shrink")
    assert shrunk.computed == ["short.mp4"]
    assert torch.load(precomputed_paths(dataset / PRECOMPUTED, "short.mp4")[0])["num_frames"] == 2  # 9 frames -> 2 latent


def test_missing_shard_stops_before_any_work(tmp_path, tiny_model_dir):
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    shard = sorted((model / "transformer").glob("*-of-*.safetensors"))[1]
    shard.unlink()
    dataset = tmp_path / "set"
    make_clip(dataset / "a.mp4", width=64, height=64, frames_per_scene=(17,))
    (dataset / "a.txt").write_text("a red square", encoding="utf-8")
    with pytest.raises(ModelFolderError, match=shard.name):
        preprocess_dataset(dataset, BUCKETS, model)
    assert not (dataset / ".precomputed").exists()


def run_cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    script = Path(__file__).resolve().parents[1] / "scripts" / "preprocess_dataset.py"
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True, text=True, encoding="utf-8", cwd=cwd, timeout=300,
    )


def test_command_line_runs_and_explains_errors(tmp_path, tiny_model_dir):
    dataset = tmp_path / "训练 数据"
    make_clip(dataset / "片段 1.mp4", width=64, height=96, frames_per_scene=(17,))
    (dataset / "片段 1.txt").write_text("一只猫 a cat", encoding="utf-8")
    done = run_cli(dataset, "--resolution-buckets", "64x96x17", "--model-path", tiny_model_dir, "--device", "cpu",
                   "--dtype", "fp32", "--decode-check", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[-1]["event"] == "summary" and events[-1]["computed"] == 1
    assert precomputed_paths(dataset / PRECOMPUTED, "片段 1.mp4")[0].is_file()
    assert (dataset / ".precomputed" / "decoded" / "片段 1.mp4").is_file()

    bad = run_cli(dataset, "--resolution-buckets", "64x90x17", "--model-path", tiny_model_dir, cwd=tmp_path)
    assert bad.returncode != 0
    assert "64x90x17" in bad.stderr and "multiples of 32" in bad.stderr and "Traceback" not in bad.stderr


def summary_of(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()][-1]


def test_vae_tiling_encodes_large_frames_tile_by_tile(tmp_path, tiny_model_dir):
    """Frames larger than one VAE tile (512 px) are encoded in tiles: the same latent grid, other numbers."""
    dataset = tmp_path / "set"
    make_clip(dataset / "big.mp4", width=544, height=544, frames_per_scene=(9,))
    (dataset / "big.txt").write_text("a red square", encoding="utf-8")
    common = ("--resolution-buckets", "544x544x9", "--model-path", tiny_model_dir, "--max-sequence-length", "16")
    assert summary_of(run_cli(dataset, *common, "--vae-tiling", "--output-dir", tmp_path / "tiled", cwd=tmp_path))[
        "computed"] == 1
    preprocess_dataset(dataset, "544x544x9", tiny_model_dir, max_sequence_length=16, output_dir=tmp_path / "whole")
    tiled = torch.load(precomputed_paths(tmp_path / "tiled", "big.mp4")[0], weights_only=True)
    whole = torch.load(precomputed_paths(tmp_path / "whole", "big.mp4")[0], weights_only=True)
    assert (tiled["num_frames"], tiled["height"], tiled["width"]) == (whole["num_frames"], whole["height"], whole["width"])
    assert tiled["latents"].shape == whole["latents"].shape == (2 * 17 * 17, TINY_LATENT_CHANNELS)
    assert not torch.equal(tiled["latents"], whole["latents"])  # the flag reached the VAE
    assert not (dataset / PRECOMPUTED).exists()  # --output-dir took everything


def test_overwrite_recomputes_what_is_up_to_date(tmp_path, tiny_model_dir):
    dataset = tmp_path / "set"
    make_clip(dataset / "a.mp4", width=64, height=64, frames_per_scene=(9,))
    (dataset / "a.txt").write_text("a red square", encoding="utf-8")
    common = ("--resolution-buckets", "64x64x9", "--model-path", tiny_model_dir, "--max-sequence-length", "16")
    assert preprocess_dataset(dataset, "64x64x9", tiny_model_dir, max_sequence_length=16).computed == ["a.mp4"]
    latents_path, conditions_path = precomputed_paths(dataset / PRECOMPUTED, "a.mp4")
    stamps = latents_path.stat().st_mtime_ns, conditions_path.stat().st_mtime_ns
    first = torch.load(latents_path, weights_only=True)["latents"]
    again = preprocess_dataset(dataset, "64x64x9", tiny_model_dir, max_sequence_length=16)
    assert (again.computed, again.skipped) == ([], ["a.mp4"])
    assert (latents_path.stat().st_mtime_ns, conditions_path.stat().st_mtime_ns) == stamps
    forced = summary_of(run_cli(dataset, *common, "--overwrite", cwd=tmp_path))
    assert (forced["computed"], forced["skipped"]) == (1, 0)
    assert latents_path.stat().st_mtime_ns != stamps[0] and conditions_path.stat().st_mtime_ns != stamps[1]
    torch.testing.assert_close(torch.load(latents_path, weights_only=True)["latents"], first)  # the mode: deterministic


def test_a_dataset_nothing_of_which_can_be_used_says_why_each_file_failed(tmp_path, tiny_model_dir):
    dataset = tmp_path / "set"
    make_clip(dataset / "short.mp4", width=64, height=64, frames_per_scene=(12,))
    (dataset / "short.txt").write_text("a red square", encoding="utf-8")
    make_clip(dataset / "nocap.mp4", width=64, height=64, frames_per_scene=(20,))
    result = run_cli(dataset, "--resolution-buckets", "64x64x17", "--model-path", tiny_model_dir, cwd=tmp_path)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Preprocessing stopped: none of the 2 media file(s)")
    assert "short.mp4 (has 12 frames, fewer than its bucket" in last and "--on-short shrink" in last
    assert "nocap.mp4 (no caption" in last


# --- IC-LoRA reference latents -------------------------------------------------------------------


def write_reference_dataset(folder: Path) -> Path:
    """Two clips of other sizes and lengths (one in a sub-folder) and their canny references."""
    make_clip(folder / "clips" / "a.mp4", width=96, height=64, frames_per_scene=(17,))
    make_clip(folder / "clips" / "sub" / "b 片段.mp4", width=64, height=96, frames_per_scene=(20,))
    (folder / "clips" / "a.txt").write_text("a red square", encoding="utf-8")
    (folder / "clips" / "sub" / "b 片段.txt").write_text("a green square", encoding="utf-8")
    compute_references(folder / "clips", folder / "refs", "canny")
    return folder / "clips"


def test_reference_latents_are_their_clips_cut_and_rerun_only_what_changed(tmp_path, tiny_model_dir):
    dataset = write_reference_dataset(tmp_path)
    make_clip(dataset / "c.mp4", width=64, height=64, frames_per_scene=(17,))  # made after the references
    (dataset / "c.txt").write_text("a blue square", encoding="utf-8")
    references, output = tmp_path / "refs", dataset / PRECOMPUTED
    report = preprocess_dataset(dataset, BUCKETS, tiny_model_dir, max_sequence_length=16, reference_dir=references)
    assert report.computed == ["a.mp4", "sub/b 片段.mp4"]
    assert set(report.failed) == {"c.mp4"} and "no reference video" in report.failed["c.mp4"]

    vae = load_vae(tiny_model_dir, dtype=torch.float32, device="cpu")
    for relative, (width, height) in {"a.mp4": (96, 64), "sub/b 片段.mp4": (64, 96)}.items():
        clip = torch.load(precomputed_paths(output, relative)[0], weights_only=True)
        reference = torch.load(reference_latents_path(output, relative), weights_only=True)
        assert set(reference) == set(clip)  # the latents layout, as the reference trainer's IC datasets
        assert reference["latents"].shape == clip["latents"].shape
        assert [reference[k] for k in ("num_frames", "height", "width", "fps")] == [
            clip[k] for k in ("num_frames", "height", "width", "fps")]
        # The reference's own first 17 frames, resized and cropped to the clip's bucket (b has 20).
        frames, _ = load_clip(references / f"{Path(relative).with_suffix('')}_reference.mp4", width, height, 17)
        torch.testing.assert_close(reference["latents"], encode_frames(vae, frames).float())
        assert not torch.allclose(reference["latents"], clip["latents"], atol=0.1)

    a_clip, a_reference = precomputed_paths(output, "a.mp4")[0], reference_latents_path(output, "a.mp4")
    stamps = a_clip.stat().st_mtime_ns, a_reference.stat().st_mtime_ns
    again = preprocess_dataset(dataset, BUCKETS, tiny_model_dir, max_sequence_length=16, reference_dir=references)
    assert (again.computed, again.skipped) == ([], ["a.mp4", "sub/b 片段.mp4"])
    assert (a_clip.stat().st_mtime_ns, a_reference.stat().st_mtime_ns) == stamps

    compute_references(dataset, tmp_path / "blurred", "blur")
    shutil.copyfile(tmp_path / "blurred" / "a_reference.mp4", references / "a_reference.mp4")  # another reference
    changed = preprocess_dataset(dataset, BUCKETS, tiny_model_dir, max_sequence_length=16, reference_dir=references)
    assert (changed.computed, changed.skipped) == (["a.mp4"], ["sub/b 片段.mp4"])
    assert a_clip.stat().st_mtime_ns == stamps[0]  # the clip's own latents stay
    frames, _ = load_clip(references / "a_reference.mp4", 96, 64, 17)
    torch.testing.assert_close(torch.load(a_reference, weights_only=True)["latents"], encode_frames(vae, frames).float())

    (references / "sub" / "b 片段_reference.mp4").unlink()  # a clip that lost its reference no longer trains
    lost = preprocess_dataset(dataset, BUCKETS, tiny_model_dir, max_sequence_length=16, reference_dir=references)
    assert "no reference video" in lost.failed["sub/b 片段.mp4"]
    assert not reference_latents_path(output, "sub/b 片段.mp4").exists()
    assert not precomputed_paths(output, "sub/b 片段.mp4")[0].exists()


def test_references_named_in_captions_json_and_beside_the_clips(tmp_path, tiny_model_dir):
    dataset = tmp_path / "set"
    make_clip(dataset / "x.mp4", width=64, height=64, frames_per_scene=(9,))
    make_clip(dataset / "y.mp4", width=64, height=64, frames_per_scene=(9,), fps=30.0)
    compute_references(dataset, dataset / "controls", "gray")
    (dataset / "controls" / "x_reference.mp4").rename(dataset / "controls" / "edges of x.mp4")
    compute_references(dataset, dataset, "canny")  # y_reference.mp4 beside y.mp4 (and x_reference.mp4)
    captions = [
        {"media_path": "x.mp4", "caption": "a red square", "reference_path": "controls/edges of x.mp4"},
        {"media_path": "y.mp4", "caption": "a red square, faster"},
    ]
    (dataset / "captions.json").write_text(json.dumps(captions), encoding="utf-8")
    report = preprocess_dataset(dataset, "64x64x9", tiny_model_dir, max_sequence_length=16, reference_dir=dataset)
    # The references are no training clips, wherever they lie in the dataset folder.
    assert (report.computed, report.failed) == (["x.mp4", "y.mp4"], {})
    vae = load_vae(tiny_model_dir, dtype=torch.float32, device="cpu")
    for relative, reference in {"x.mp4": "controls/edges of x.mp4", "y.mp4": "y_reference.mp4"}.items():
        frames, fps = load_clip(dataset / reference, 64, 64, 9)
        stored = torch.load(reference_latents_path(dataset / PRECOMPUTED, relative), weights_only=True)
        torch.testing.assert_close(stored["latents"], encode_frames(vae, frames).float())
        assert stored["fps"] == pytest.approx(fps)


def test_references_that_cannot_guide_their_clip_are_refused_with_the_reason(tmp_path, tiny_model_dir):
    dataset = tmp_path / "set"
    make_clip(dataset / "a.mp4", width=64, height=64, frames_per_scene=(17,))
    make_clip(dataset / "b.mp4", width=64, height=64, frames_per_scene=(17,))
    make_clip(dataset / "c.mp4", width=64, height=64, frames_per_scene=(17,))
    for name in "abc":
        (dataset / f"{name}.txt").write_text("a red square", encoding="utf-8")
    references = tmp_path / "refs"
    with pytest.raises(PreprocessError, match="reference folder not found"):
        preprocess_dataset(dataset, "64x64x17", tiny_model_dir, reference_dir=references)
    references.mkdir()
    with pytest.raises(PreprocessError, match="not one of the 3 clip"):
        preprocess_dataset(dataset, "64x64x17", tiny_model_dir, reference_dir=references)
    make_clip(references / "a.mp4", width=64, height=64, frames_per_scene=(17,), fps=12.0)
    make_clip(references / "b.mp4", width=64, height=64, frames_per_scene=(9,))
    (references / "c.mp4").write_bytes(b"not a video" * 40)
    report = preprocess_dataset(dataset, "64x64x17", tiny_model_dir, reference_dir=references)
    assert "12 fps" in report.failed["a.mp4"] and "24 fps" in report.failed["a.mp4"]
    assert "9 frames" in report.failed["b.mp4"] and "17" in report.failed["b.mp4"]
    assert "c.mp4" in report.failed["c.mp4"] and "reference" in report.failed["c.mp4"]
    with pytest.raises(PreprocessError, match="LTX-2"):
        preprocess_dataset(dataset, "64x64x17", tiny_model_dir, reference_dir=references, reference_downscale=2)
    refused = run_cli(dataset, "--resolution-buckets", "64x64x17", "--model-path", tiny_model_dir,
                      "--reference-dir", references, "--reference-downscale", "3", cwd=tmp_path)
    assert refused.returncode == 2 and "--reference-downscale" in refused.stderr


@pytest.fixture(scope="module")
def tiny_ltx2_dir(tmp_path_factory) -> Path:
    from ltxtrainer.models.tiny_ltx2 import save_tiny_ltx2_model

    return save_tiny_ltx2_model(tmp_path_factory.mktemp("models") / "tiny-ltx2")


def test_ltx2_references_are_encoded_at_the_downscaled_size_and_the_factor_is_recorded(tmp_path, tiny_ltx2_dir):
    from ltxtrainer.models import ltx2

    dataset = tmp_path / "数据 set"
    for name in ("a", "b"):
        make_clip(dataset / f"{name}.mp4", width=64, height=64, frames_per_scene=(17,), fps=16.0)
        (dataset / f"{name}.txt").write_text(f"a square {name}", encoding="utf-8")
    references, output = tmp_path / "refs", dataset / PRECOMPUTED
    compute_references(dataset, references, "canny")
    run = dict(device="cpu", reference_dir=references)
    assert preprocess_dataset(dataset, "64x64x17", tiny_ltx2_dir, reference_downscale=2, **run).computed == ["a.mp4", "b.mp4"]

    vae = ltx2.load_component(tiny_ltx2_dir, "vae", torch.float32, torch.device("cpu"))
    clip = torch.load(precomputed_paths(output, "a.mp4")[0], weights_only=True)
    reference = torch.load(reference_latents_path(output, "a.mp4"), weights_only=True)
    assert set(reference) == set(clip) | {"downscale_factor"} and reference["downscale_factor"] == 2
    assert (reference["num_frames"], reference["height"], reference["width"]) == (3, 1, 1)  # the clip: 3, 2, 2
    assert (clip["num_frames"], clip["height"], clip["width"]) == (3, 2, 2) and reference["fps"] == clip["fps"]
    frames, _ = load_clip(references / "a_reference.mp4", 32, 32, 17)
    pixels = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0
    torch.testing.assert_close(reference["latents"], ltx2.encode_video(vae, pixels)[0].float())

    latents_stamp = precomputed_paths(output, "a.mp4")[0].stat().st_mtime_ns
    again = preprocess_dataset(dataset, "64x64x17", tiny_ltx2_dir, reference_downscale=2, **run)
    assert (again.computed, again.skipped) == ([], ["a.mp4", "b.mp4"])
    full_size = preprocess_dataset(dataset, "64x64x17", tiny_ltx2_dir, reference_downscale=1, **run)
    assert full_size.computed == ["a.mp4", "b.mp4"]
    assert precomputed_paths(output, "a.mp4")[0].stat().st_mtime_ns == latents_stamp  # only the references
    reference = torch.load(reference_latents_path(output, "a.mp4"), weights_only=True)
    assert (reference["height"], reference["width"], reference["downscale_factor"]) == (2, 2, 1)

    with pytest.raises(PreprocessError, match=r"1/4 of the width 64 .* 16 pixels"):
        preprocess_dataset(dataset, "64x64x17", tiny_ltx2_dir, reference_downscale=4, **run)
    with pytest.raises(PreprocessError, match="96"):
        preprocess_dataset(dataset, "96x64x17", tiny_ltx2_dir, reference_downscale=2, **run)
