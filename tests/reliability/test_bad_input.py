"""Bad input gets a clear message naming what is wrong, and nothing else is lost."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from ltxtrainer.buckets import BucketError, parse_buckets
from ltxtrainer.captioning.base import check_trigger_word
from ltxtrainer.config import ConfigError, config_from_dict, load_config
from ltxtrainer.data import DatasetError
from ltxtrainer.export import LoraFormatError, to_comfyui
from ltxtrainer.media import load_clip, probe_video
from ltxtrainer.models.folder import ModelFolderError, require_model_folder
from ltxtrainer.pipeline import PipelineError, check_project_name
from ltxtrainer.preprocess import PreprocessError, preprocess_dataset
from ltxtrainer.scenes import split_scenes
from ltxtrainer.synthetic import make_clip, write_frames, write_unusable_files
from ltxtrainer.training.trainer import run_training
from tests.precomputed import write_sample
from tests.reliability.conftest import REPO
from tests.test_training import make_config

BUCKET = "64x64x9"
UNUSABLE = ("truncated", "text", "empty", "audio")  # "text": a wrong extension, a text file named .mp4


@pytest.fixture(scope="module")
def messy_dataset(tmp_path_factory, tiny_model_dir) -> dict:
    """A captioned folder, under a path with spaces and Chinese, of good clips among every kind of bad file.

    Split and preprocessed once for the whole module (tiny VAE, one 64x64x9 bucket); the tests
    read what each file became.
    """
    root = tmp_path_factory.mktemp("bad input") / "我的 数据 (set)"
    files = {kind: path for kind, path in write_unusable_files(root).items()}
    files["good"] = make_clip(root / "好 片段 one.mp4", 96, 64, (12,))
    files["good 2"] = make_clip(root / "clip two & more.mp4", 64, 96, (12,))
    files["three frames"] = make_clip(root / "three frames.mp4", 96, 64, (3,))
    flat = np.full((9, 4096, 4096, 3), 90, dtype=np.uint8)  # flat frames: a 4096x4096 video that encodes fast
    files["4096x4096"] = write_frames(root / "huge 4096.mp4", flat)
    for path in files.values():
        path.with_suffix(".txt").write_text("APT a square moves", encoding="utf-8")
    split = split_scenes(root, root.parent / "场景 scenes")
    first = preprocess_dataset(root, BUCKET, tiny_model_dir, device="cpu", dtype="fp32")
    second = preprocess_dataset(root, BUCKET, tiny_model_dir, device="cpu", dtype="fp32")
    return {"root": root, "files": files, "split": split, "first": first, "second": second}


def relative(dataset: dict, kind: str) -> str:
    return dataset["files"][kind].relative_to(dataset["root"]).as_posix()


@pytest.mark.parametrize("kind", UNUSABLE)
def test_unusable_video_is_named_and_the_good_clips_go_on(messy_dataset, kind, outcome):
    path = messy_dataset["files"][kind]
    reason = messy_dataset["first"].failed[relative(messy_dataset, kind)]
    split_reason = dict(messy_dataset["split"].failed)[path]
    assert path.name in reason and path.name in split_reason
    assert relative(messy_dataset, "good") in messy_dataset["first"].computed
    outcome(
        fault=f"Unusable video: {kind} ({path.name})",
        tried="split_scenes and preprocess_dataset over a folder holding it among good clips",
        happened=f"split: {split_reason} / preprocess: {reason}",
        kept="the good clips were split and preprocessed in the same run",
    )


def test_three_frame_video_is_refused_for_its_bucket_with_the_fix(messy_dataset, outcome):
    reason = messy_dataset["first"].failed[relative(messy_dataset, "three frames")]
    assert "has 3 frames" in reason and "--on-short shrink" in reason
    outcome(
        fault="A 3-frame video",
        tried=f"preprocess_dataset with bucket {BUCKET}",
        happened=reason,
        kept="the other clips; no precomputed file for it",
    )


def test_huge_resolution_is_scaled_down_frame_by_frame(messy_dataset, outcome):
    path = messy_dataset["files"]["4096x4096"]
    info = probe_video(path)
    frames, _ = load_clip(path, 64, 64, 9)
    assert (info.width, info.height) == (4096, 4096)
    assert frames.shape == (9, 64, 64, 3)
    assert relative(messy_dataset, "4096x4096") in messy_dataset["first"].computed
    outcome(
        fault="A 4096x4096 video",
        tried=f"probe_video, load_clip and preprocess_dataset with bucket {BUCKET}",
        happened=f"probed as {info.width}x{info.height}; each frame resized as decoded to {frames.shape[2]}x"
        f"{frames.shape[1]}",
        kept="preprocessed like any other clip",
    )


def test_paths_with_spaces_chinese_and_shell_characters_work_and_a_rerun_skips(messy_dataset, outcome):
    first, second = messy_dataset["first"], messy_dataset["second"]
    good = {relative(messy_dataset, "good"), relative(messy_dataset, "good 2")}
    assert good <= set(first.computed)
    assert good <= set(second.skipped) and not second.computed
    written = [clip.name for clip in messy_dataset["split"].written]
    assert any(name.startswith("好 片段 one") for name in written)
    outcome(
        fault="Non-ASCII and space-filled paths",
        tried=f"a dataset folder '{messy_dataset['root'].name}' with clips '好 片段 one.mp4' and 'clip two & more.mp4'",
        happened=f"split wrote {len(written)} clips; preprocess computed {len(first.computed)}; the re-run skipped "
        f"{len(second.skipped)} and computed {len(second.computed)}",
        kept="every good clip, under its own name",
    )


def test_folder_without_videos_says_so(tmp_path, tiny_model_dir, outcome):
    empty = tmp_path / "no videos here"
    empty.mkdir()
    (empty / "notes.txt").write_text("just text", encoding="utf-8")
    split = split_scenes(empty, tmp_path / "scenes")
    with pytest.raises(PreprocessError, match="no clips or images found") as raised:
        preprocess_dataset(empty, BUCKET, tiny_model_dir, device="cpu")
    assert not split.written and not split.failed
    assert (empty / "notes.txt").read_text(encoding="utf-8") == "just text"
    outcome(
        fault="A folder with no videos",
        tried="split_scenes and preprocess_dataset on a folder holding one .txt",
        happened=f"split: nothing to do; preprocess: {raised.value}",
        kept="the folder untouched",
    )


BAD_TRIGGER_WORDS = ["风格", "my style", "a;rm -rf ~", "$(reboot)", "x`id`", "a|b", "o'neil", "-rf"]


@pytest.mark.parametrize("word", BAD_TRIGGER_WORDS)
def test_trigger_words_with_chinese_or_shell_characters_are_refused(word, outcome):
    with pytest.raises(PipelineError) as as_project:
        check_project_name(word)
    if not word.startswith("-"):
        with pytest.raises(ValueError, match="only ASCII letters"):
            check_trigger_word(word)
    outcome(
        fault=f"Trigger word {word!r}",
        tried="pipeline.check_project_name and captioning's check_trigger_word",
        happened=str(as_project.value),
        kept="nothing created",
    )


YAML_PROBLEMS = {
    "wrong type": ("optimization", "steps", "many", "optimization.steps"),
    "unknown field": ("optimization", "learning_rat", 0.001, "optimization.learning_rat: unknown field"),
    "out of range": ("lora", "rank", 0, "lora.rank"),
    "negative learning rate": ("optimization", "learning_rate", -1.0, "optimization.learning_rate"),
    "bad frame count": ("validation", "video_dims", [64, 64, 10], "validation.video_dims"),
}


@pytest.mark.parametrize("problem", YAML_PROBLEMS)
def test_yaml_with_a_bad_value_names_the_field(tmp_path, problem, outcome):
    section, field, value, expected = YAML_PROBLEMS[problem]
    data = yaml.safe_load((REPO / "configs" / "tiny_demo.yaml").read_text(encoding="utf-8"))
    data[section][field] = value
    path = tmp_path / "配置 config.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert expected in str(raised.value)
    outcome(
        fault=f"YAML config: {problem}",
        tried=f"{section}.{field}: {value!r} in configs/tiny_demo.yaml, loaded with load_config",
        happened=str(raised.value),
        kept="the file unchanged; nothing started",
    )


def test_precomputed_files_of_mismatched_shapes_are_named(tiny_model_dir, tmp_path, outcome):
    data = tmp_path / "data"
    write_sample(data, "good", frames=2, height=2, width=2, seed=0)
    bad = data / ".precomputed" / "latents" / "short.pt"
    torch.save({"latents": torch.zeros(5, 16), "num_frames": 2, "height": 2, "width": 2, "fps": 24.0}, bad)
    output = tmp_path / "run"
    with pytest.raises(DatasetError) as raised:
        run_training(config_from_dict(make_config(tiny_model_dir, data, output, **{"optimization.steps": 2})))
    assert "short.pt" in str(raised.value)
    assert not (output / "checkpoints").exists()
    outcome(
        fault="Precomputed latents of a mismatched shape",
        tried="a latents file holding 5 tokens for a 2x2x2 latent grid, then run_training",
        happened=str(raised.value),
        kept="the precomputed files untouched; no checkpoint written",
    )


def test_lora_of_another_model_is_refused_by_the_converter(tmp_path, outcome):
    foreign = tmp_path / "flux lora.safetensors"
    save_file({
        "transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 3072),
        "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight": torch.zeros(3072, 4),
    }, str(foreign))
    with pytest.raises(LoraFormatError) as raised:
        to_comfyui(foreign)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["flux lora.safetensors"]
    outcome(
        fault="A LoRA of another model (Flux) given to the ComfyUI converter",
        tried="export.to_comfyui on a Flux single_transformer_blocks LoRA",
        happened=str(raised.value),
        kept="the input file; no output written",
    )


def test_model_folder_with_a_missing_shard_names_it(tiny_model_dir, tmp_path, outcome):
    broken = tmp_path / "模型 broken"
    shutil.copytree(tiny_model_dir, broken)
    shard = sorted((broken / "transformer").glob("*-00002-of-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(ModelFolderError) as raised:
        require_model_folder(broken)
    assert shard.name in str(raised.value)
    outcome(
        fault="Model folder with a missing weight shard",
        tried="require_model_folder (what train, preprocess and the GUI header call) after deleting one shard",
        happened=" ".join(str(raised.value).split()),
        kept="nothing loaded, no training started",
    )


@settings(max_examples=80, deadline=None)
@given(
    dims=st.lists(st.tuples(st.integers(-40, 2100), st.integers(-40, 2100), st.integers(-9, 260)), min_size=1,
                  max_size=3),
    junk=st.sampled_from(["", "768x512", "axbxc", "768x512x49x1", " 64 X 64 × 9 "]),
)
def test_property_buckets_parse_or_name_the_bad_entry(dims, junk):
    entries = [f"{w}x{h}x{f}" for w, h, f in dims] + ([junk] if junk else [])
    text = ";".join(entries)
    try:
        buckets = parse_buckets(text)
    except BucketError as error:
        bad = [entry for entry in entries if not _valid_entry(entry)]
        assert bad and repr(bad[0]) in str(error)
        return
    assert all(_valid_entry(entry) for entry in entries)
    assert all(b.width % 32 == 0 and b.height % 32 == 0 and (b.num_frames - 1) % 8 == 0 for b in buckets)


def _valid_entry(entry: str) -> bool:
    parts = entry.strip().lower().replace("×", "x").replace(" ", "").split("x")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        return False
    width, height, frames = map(int, parts)
    return width > 0 and height > 0 and width % 32 == 0 and height % 32 == 0 and frames >= 1 and (frames - 1) % 8 == 0


ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-10**7, 10**7), st.floats(allow_nan=True),
                      st.text(max_size=8), st.lists(st.integers(-5, 5), max_size=3))
FIELDS = ["lora.rank", "lora.dropout", "optimization.steps", "optimization.batch_size",
          "optimization.learning_rate", "checkpoints.keep_last_n", "validation.video_dims", "seed"]


@settings(max_examples=80, deadline=None)
@given(field=st.sampled_from(FIELDS), value=ANY_VALUE)
@example(field="lora.rank", value=True)
@example(field="optimization.steps", value=False)
@example(field="seed", value=True)
@example(field="lora.dropout", value=True)
@example(field="lora.rank", value="1")
@example(field="optimization.learning_rate", value="1e-4")
def test_property_any_config_value_is_kept_as_given_or_the_field_is_named(field, value):
    """An accepted value is the value the user wrote (never `true` read as rank 1); a refused one names its field."""
    data = yaml.safe_load((REPO / "configs" / "tiny_demo.yaml").read_text(encoding="utf-8"))
    section, _, name = field.rpartition(".")
    (data[section] if section else data)[name] = value
    try:
        config = config_from_dict(data)
    except ConfigError as error:
        assert field in str(error)
        return
    assert not isinstance(value, bool), f"{field}: {value!r} was accepted"
    stored = getattr(getattr(config, section) if section else config, name)
    if isinstance(value, str):  # only float fields take text (PyYAML reads `1e-4` as a string)
        assert isinstance(stored, float) and stored == float(value)
        return
    assert stored == (tuple(value) if isinstance(value, list) else value)
    assert type(stored) is (float if name in ("dropout", "learning_rate") else tuple if name == "video_dims" else int)


def test_a_refusal_across_sections_names_the_field_not_the_whole_config():
    data = yaml.safe_load((REPO / "configs" / "tiny_demo.yaml").read_text(encoding="utf-8"))
    data["model"]["training_mode"] = "full"
    data["acceleration"]["quantization"] = "int8-quanto"
    with pytest.raises(ConfigError) as refused:
        config_from_dict(data)
    message = str(refused.value)
    assert "quantization" in message and "lora" in message
    assert "model_source" not in message and "{" not in message and "(top level)" not in message
