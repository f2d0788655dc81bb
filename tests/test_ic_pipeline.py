"""IC-LoRA through the one-click pipeline: the request's reference options, the reference stage
between caption and preprocess, data keys that keep IC and plain data apart, the run config that
trains and validates on references, and both demos end to end on the tiny models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ltxtrainer.dataset_key import data_key
from ltxtrainer.pipeline import EXIT_OK, EXIT_USAGE, PipelineError, PipelineOptions, run_pipeline
from ltxtrainer.pipeline.project import project_paths
from ltxtrainer.pipeline.request import check_conditioning_family, check_request, requested_stages
from ltxtrainer.pipeline.run_choice import current_data_key
from ltxtrainer.pipeline.run_config import build_training_config, model_family
from ltxtrainer.pipeline.stages import preprocess_plan
from ltxtrainer.synthetic import make_clip

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUTF8": "1"}
# captions.json's order, which the validation prompts (and so their references) follow
CAPTIONS = [("子 sub/clip_b.mp4", "APT a square on green"), ("clip_a.mp4", "APT a square on red"),
            ("clip_c.mp4", "APT a square on blue")]


def options_for(root: Path, model: Path, **changes) -> PipelineOptions:
    """The demo project's request on the tiny 0.9 model, folders under `root`."""
    values = dict(project="APT", width=64, height=64, frames=9, config_template="tiny", captioner="demo",
                  model_path=model, train_date_dir=root / "train_date", work_dir=root / "datasets",
                  outputs_dir=root / "outputs")
    values.update(changes)
    return PipelineOptions(**values)


def write_scenes(root: Path) -> Path:
    """Three captioned scene clips (one in a sub-folder with a Chinese name), as split and caption leave them."""
    scenes = root / "datasets" / "APT" / "scenes"
    for relative, caption in CAPTIONS:
        make_clip(scenes / relative, 64, 64, (10,), fps=24.0)
        (scenes / relative).with_suffix(".txt").write_text(caption, encoding="utf-8")
    entries = [{"media_path": relative, "caption": caption} for relative, caption in CAPTIONS]
    (scenes / "captions.json").write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    return scenes


def write_own_references(folder: Path, skip: str | None = None) -> Path:
    """The user's references: one named `<stem>_reference.mp4`, the others named exactly like their clip."""
    for relative, _ in CAPTIONS:
        if relative == skip:
            continue
        path = Path(relative)
        name = path.with_name(f"{path.stem}_reference.mp4") if path.stem == "clip_a" else path
        make_clip(folder / name, 64, 64, (10,), fps=24.0)
    return folder


def pipeline_events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.parametrize(("changes", "expected"), [
    ({"conditioning": "ic"}, ["--conditioning 'ic'", "none or reference_video"]),
    ({"conditioning": "reference_video", "reference_kind": "depth"},
     ["--reference-kind 'depth'", "canny, blur, gray, downscale, folder"]),
    ({"conditioning": "reference_video", "reference_kind": "folder"}, ["--reference-kind folder needs --reference-dir"]),
    ({"conditioning": "reference_video", "reference_dir": Path("refs")}, ["--reference-dir is refused with --reference-kind canny"]),
    ({"conditioning": "reference_video", "reference_downscale": 3}, ["--reference-downscale 3", "1, 2, 4"]),
    ({"conditioning": "reference_video", "reference_downscale": 2, "width": 704, "height": 480},
     ["--resolution 704x480 with --reference-downscale 2", "352x240", "multiples of 64"]),
    ({"reference_kind": "canny"}, ["--reference-kind is refused without --conditioning reference_video"]),
    ({"reference_dir": Path("refs"), "reference_downscale": 2},
     ["--reference-dir, --reference-downscale is refused without --conditioning reference_video"]),
    ({"conditioning": "reference_video", "run_name": "APT_run", "resume": True}, ["--resume continues a run with its own"]),
])
def test_reference_options_that_cannot_mean_what_the_user_wants_are_refused_naming_flag_and_choices(
        tmp_path, changes, expected):
    with pytest.raises(PipelineError) as refused:
        check_request(options_for(tmp_path, tmp_path / "model", **changes))
    for text in expected:
        assert text in str(refused.value)


def test_the_reference_stage_runs_between_caption_and_preprocess_only_for_reference_video(tmp_path):
    plain = options_for(tmp_path, tmp_path / "model")
    assert requested_stages(plain) == ("split", "caption", "preprocess", "train", "export")
    ic = options_for(tmp_path, tmp_path / "model", conditioning="reference_video")
    assert requested_stages(ic) == ("split", "caption", "reference", "preprocess", "train", "export")
    ic.steps = ("train",)  # training on data made before needs no references again
    assert requested_stages(ic) == ("train", "export")
    plain.steps = ("reference",)
    with pytest.raises(PipelineError, match="needs --conditioning reference_video"):
        requested_stages(plain)


def test_cli_refuses_downscaled_references_for_an_ltx_video_09_model(tmp_path, tiny_model_dir):
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "run_pipeline.py"), "APT", "--resolution", "64x64", "--frames", "9",
         "--config-template", "tiny", "--model-path", str(tiny_model_dir), "--work-dir", str(tmp_path / "d"),
         "--outputs-dir", str(tmp_path / "o"), "--train-date-dir", str(tmp_path / "t"),
         "--conditioning", "reference_video", "--reference-downscale", "2"],
        env=ENV, capture_output=True, text=True, encoding="utf-8", timeout=120,
    )
    assert done.returncode == EXIT_USAGE
    end = pipeline_events(done.stdout)[-1]
    assert end["event"] == "pipeline_end" and end["status"] == "refused"
    assert "--reference-downscale 2 is refused for this LTX-Video 0.9 model" in end["message"]
    assert not (tmp_path / "o").exists() and not (tmp_path / "d").exists()


def test_own_references_name_each_clip_without_one_then_pass_and_are_skipped_when_unchanged(
        tmp_path, tiny_model_dir, capsys):
    write_scenes(tmp_path)
    own = tmp_path / "我的 references"
    write_own_references(own, skip="子 sub/clip_b.mp4")
    options = options_for(tmp_path, tiny_model_dir, steps=("reference",), conditioning="reference_video",
                          reference_kind="folder", reference_dir=own)
    status_file = project_paths(options).dataset_status_file

    assert run_pipeline(options) == EXIT_USAGE
    end = pipeline_events(capsys.readouterr().out)[-1]
    assert end["event"] == "pipeline_end" and end["status"] == "refused"
    assert "1 of 3 clips have no reference video" in end["message"] and "子 sub/clip_b.mp4" in end["message"]

    write_own_references(own)
    assert run_pipeline(options) == EXIT_OK
    stage = json.loads(status_file.read_text(encoding="utf-8"))["stages"]["reference"]
    assert stage["status"] == "done" and stage["artefacts"]["references"] == 3
    running = [event for event in pipeline_events(capsys.readouterr().out) if event.get("stage") == "reference"]
    assert [event["status"] for event in running if event["event"] == "pipeline"] == ["done"]

    assert run_pipeline(options) == EXIT_OK
    assert json.loads(status_file.read_text(encoding="utf-8"))["stages"]["reference"]["status"] == "skipped"


def test_ic_data_never_shares_a_folder_with_plain_data_whose_keys_stay_as_they_were(tmp_path, tiny_model_dir):
    scenes = write_scenes(tmp_path)
    own = write_own_references(tmp_path / "own")
    plain = options_for(tmp_path, tiny_model_dir)
    paths = project_paths(plain)
    model = str(tiny_model_dir)
    key = current_data_key(plain, paths, model)
    assert key == data_key(scenes, "64x64x9", 256, "shrink", tiny_model_dir)  # what older versions named it

    keys = {key}
    for changes in ({"reference_kind": "canny"}, {"reference_kind": "blur"},
                    {"reference_kind": "folder", "reference_dir": own}):
        ic = options_for(tmp_path, tiny_model_dir, conditioning="reference_video", **changes)
        ic_key = current_data_key(ic, paths, model)
        assert ic_key.startswith("64x64x9_t256_") and ic_key.endswith(f"_ref-{ic.kind}")
        keys.add(ic_key)
    assert len(keys) == 4
    edited = own / "clip_c.mp4"
    make_clip(edited, 64, 64, (12,), fps=24.0)  # the user replaces one of their references
    assert current_data_key(ic, paths, model) not in keys
    assert current_data_key(plain, paths, model) == key


def test_preprocess_reads_the_computed_or_the_users_references(tmp_path, tiny_model_dir):
    write_scenes(tmp_path)
    own = write_own_references(tmp_path / "own")
    for changes, folder in (({}, tmp_path / "datasets" / "APT" / "references_canny"),
                            ({"reference_kind": "folder", "reference_dir": own}, own)):
        options = options_for(tmp_path, tiny_model_dir, conditioning="reference_video", **changes)
        arguments = preprocess_plan(options, project_paths(options), str(tiny_model_dir), "KEY").arguments
        assert arguments[arguments.index("--reference-dir") + 1] == str(folder)
        assert "--reference-downscale" not in arguments  # 0.9: references at the target's size
    plain = options_for(tmp_path, tiny_model_dir)
    assert "--reference-dir" not in preprocess_plan(plain, project_paths(plain), str(tiny_model_dir), "KEY").arguments


def test_ltx2_references_at_a_downscale_reach_preprocess_and_the_run_config(tmp_path):
    """LTX-2 only: the references are encoded at 1/N of the clips' size; preprocess and the trainer
    (which records N in the LoRA file) must agree on N."""
    write_scenes(tmp_path)
    model = tmp_path / "LTX-2 model"  # only its family is read here: the LTX-2 pipeline class
    model.mkdir()
    (model / "model_index.json").write_text(json.dumps({"_class_name": "LTX2Pipeline"}), encoding="utf-8")
    options = options_for(tmp_path, model, config_template="ltx2", conditioning="reference_video",
                          reference_downscale=2)
    check_request(options)
    check_conditioning_family(options, model_family(str(model)))
    arguments = preprocess_plan(options, project_paths(options), str(model), "KEY").arguments
    assert arguments[arguments.index("--reference-downscale") + 1] == "2"
    config = build_training_config(options, project_paths(options), tmp_path / "data")
    assert config.conditioning.reference_downscale_factor == 2
    with pytest.raises(PipelineError, match="--reference-downscale 2 is refused for this LTX-Video 0.9 model"):
        check_conditioning_family(options, "ltx_video")


def test_ic_run_config_trains_on_reference_latents_and_validates_the_first_captions_on_their_references(
        tmp_path, tiny_model_dir):
    write_scenes(tmp_path)
    own = write_own_references(tmp_path / "own")
    scenes_parent = tmp_path / "datasets" / "APT"
    expected = {
        "canny": [scenes_parent / "references_canny" / "子 sub" / "clip_b_reference.mp4",
                  scenes_parent / "references_canny" / "clip_a_reference.mp4"],
        "folder": [own / "子 sub" / "clip_b.mp4", own / "clip_a_reference.mp4"],
    }
    for kind, references in expected.items():
        options = options_for(tmp_path, tiny_model_dir, conditioning="reference_video", reference_kind=kind,
                              reference_dir=own if kind == "folder" else None,
                              overrides={"optimization.first_frame_conditioning_p": 0.3})
        config = build_training_config(options, project_paths(options), tmp_path / "data")
        assert config.conditioning.mode == "reference_video"
        assert config.conditioning.reference_dir_name == "reference_latents"
        assert config.conditioning.reference_downscale_factor == 1
        assert config.first_frame_conditioning_p == 0.3  # the template's field, carried into the section
        assert config.validation.prompts == ["APT a square on green", "APT a square on red"]
        assert config.validation.reference_videos == [str(path.resolve()) for path in references]

    plain = options_for(tmp_path, tiny_model_dir)
    config = build_training_config(plain, project_paths(plain), tmp_path / "data")
    assert config.conditioning is None and config.validation.reference_videos is None
    assert config.validation.prompts == ["APT a bright square moves across a red background"]  # the template's
    refused = options_for(tmp_path, tiny_model_dir, overrides={"conditioning.mode": "reference_video"})
    with pytest.raises(PipelineError, match="--set conditioning.mode=... is refused: the pipeline sets"):
        build_training_config(refused, project_paths(refused), tmp_path / "data")


def test_more_validation_prompts_than_clips_to_take_references_from_is_refused(tmp_path, tiny_model_dir):
    options = options_for(tmp_path, tiny_model_dir, conditioning="reference_video",
                          overrides={"validation.prompts": ["APT one", "APT two", "APT three", "APT four"]})
    # a new project: nothing is split or captioned yet, so the request goes on (train builds the config again)
    assert build_training_config(options, project_paths(options), tmp_path / "data").validation.reference_videos is None
    write_scenes(tmp_path)
    with pytest.raises(PipelineError, match="gives 4 prompts but the dataset has 3 captioned clips"):
        build_training_config(options, project_paths(options), tmp_path / "data")


IC_STAGES = ["split", "caption", "reference", "preprocess", "train", "export"]


def run_ic_demo(root: Path, family: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "run_pipeline.py"), "--demo", "--family", family,
         "--conditioning", "reference_video", "--output-dir", str(root)],
        env=ENV, cwd=REPO, capture_output=True, text=True, encoding="utf-8", timeout=600,
    )


@pytest.mark.parametrize("family", [
    "ltx_video",
    "ltx2",
])
def test_ic_demo_goes_from_raw_videos_to_an_ic_lora_with_side_by_side_samples(tmp_path, tiny_model_dir, family):
    """`run_pipeline.py --demo --conditioning reference_video`: Canny references of every scene, their
    latents beside the clips', an IC run (the shipped template's bf16 and step-0 validation) whose
    samples show reference | result, and a ComfyUI file; run again, every stage is found done."""
    import torch
    from safetensors import safe_open

    from ltxtrainer.config import load_config
    from ltxtrainer.media import find_videos, probe_video
    from ltxtrainer.reference import find_reference

    root = tmp_path / "演示 IC demo"
    if family == "ltx_video":
        shutil.copytree(tiny_model_dir, root / "models" / "tiny-ltxv")  # the demo keeps a complete folder
    done = run_ic_demo(root, family)
    assert done.returncode == EXIT_OK, done.stderr[-3000:]
    events = pipeline_events(done.stdout)
    assert next(e for e in events if e["event"] == "pipeline_start")["stages"] == IC_STAGES
    end = events[-1]
    assert end["event"] == "pipeline_end" and end["status"] == "finished"
    run_dir = Path(end["run_dir"])
    status = json.loads((run_dir / "pipeline_status.json").read_text(encoding="utf-8"))
    assert [status["stages"][stage]["status"] for stage in IC_STAGES] == ["done"] * 6

    scenes = root / "datasets" / "APT" / "scenes"
    references = root / "datasets" / "APT" / "references_canny"
    data_dir = Path(status["precomputed_dir"])
    assert data_dir.name.endswith("_ref-canny") and data_dir.parent == scenes / ".precomputed"
    clips = find_videos(scenes)
    assert len(clips) >= 4
    for clip in clips:
        relative = clip.relative_to(scenes)
        reference = find_reference(relative, references)
        assert reference is not None and probe_video(reference).num_frames == probe_video(clip).num_frames
        target = torch.load(data_dir / "latents" / relative.with_suffix(".pt"), weights_only=True)
        reference_latents = torch.load(data_dir / "reference_latents" / relative.with_suffix(".pt"), weights_only=True)
        assert set(target) <= set(reference_latents)  # the latents layout (LTX-2 adds its downscale factor)
        assert reference_latents["latents"].shape == target["latents"].shape  # full size: factor 1
        assert not torch.equal(reference_latents["latents"], target["latents"])

    config = load_config(run_dir / "training_config.yaml")
    assert config.acceleration.mixed_precision_mode == "bf16" and not config.validation.skip_initial_validation
    assert config.conditioning.mode == "reference_video"
    assert len(config.validation.reference_videos) == len(config.validation.prompts) == 2
    assert all(Path(path).is_file() and Path(path).parent == references for path in config.validation.reference_videos)
    sample = sorted((run_dir / "samples" / "step_000000").glob("*.mp4"))[0]  # before the first step
    info = probe_video(sample)
    assert (info.width, info.height, info.num_frames) == (2 * 64, 64, 9)  # reference | result
    with safe_open(str(end["comfyui_lora"]), framework="pt") as comfy:
        assert all(key.startswith("diffusion_model.transformer_blocks.") for key in comfy.keys())

    again = run_ic_demo(root, family)
    assert again.returncode == EXIT_OK, again.stderr[-3000:]
    states = {e["stage"]: e["status"] for e in pipeline_events(again.stdout) if e["event"] == "pipeline"}
    assert states == dict.fromkeys(IC_STAGES, "skipped")
