"""Local VLM captioners on tiny random models built offline from their configs.

Real LLaVA-NeXT-Video and Qwen2.5-VL/Qwen2-VL weights cannot be downloaded here, so each test
builds a random model of the real architecture with a tokenizer trained by `tokenizers` in a
fraction of a second, saves it in the layout of the published repos (config, weights,
tokenizer, preprocessor_config.json) and loads it back with local_files_only=True. A random
model's caption is gibberish: the tests check the path (pixels, prompt, generate, decode).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ltxtrainer.captioning import caption_clips
from ltxtrainer.captioning.base import FatalCaptionError
from ltxtrainer.captioning.local import LocalVLMCaptioner, qwen_video_patches
from ltxtrainer.synthetic import make_clip, scene_frames

FRAMES = 8
TRAINING_TEXT = ["a red square moves across a blue background", "the camera is static and the light is even"]
LLAVA_SPECIALS = ["<unk>", "<s>", "</s>", "<video>", "<image>"]
QWEN_SPECIALS = [
    "<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|image_pad|>",
]  # fmt: skip
LLAVA_TEMPLATE = (  # the shape of llava-hf's processor template: role, videos first, then text
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% for part in message['content'] %}{% if part['type'] == 'video' %}{{ '<video>\n' }}{% endif %}{% endfor %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{{ ' ' }}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def train_tokenizer(specials: list[str], bos: str | None, eos: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(TRAINING_TEXT * 10, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=bos, eos_token=eos, unk_token="<unk>", pad_token=eos)


def save_tiny_llava(folder: Path) -> Path:
    from transformers import LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration

    tokenizer = train_tokenizer(LLAVA_SPECIALS, "<s>", "</s>")
    text = dict(
        model_type="llama", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    vision = dict(
        model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, image_size=56, patch_size=14,
    )  # fmt: skip
    config = LlavaNextVideoConfig(
        vision_config=vision, text_config=text, image_grid_pinpoints=[[56, 56]],
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )  # fmt: skip
    torch.manual_seed(0)
    LlavaNextVideoForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(LLAVA_TEMPLATE, encoding="utf-8")
    processor = {"size": {"shortest_edge": 56}, "crop_size": {"height": 56, "width": 56},
                 "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}  # fmt: skip
    (folder / "preprocessor_config.json").write_text(json.dumps(processor), encoding="utf-8")
    return folder


def save_tiny_qwen(folder: Path, model_type: str = "qwen2_5_vl") -> Path:
    from transformers import AutoConfig, AutoModelForImageTextToText

    tokenizer = train_tokenizer(QWEN_SPECIALS, None, "<|im_end|>")
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    if model_type == "qwen2_5_vl":
        vision.update(out_hidden_size=32, fullatt_block_indexes=[1], window_size=56)
    else:
        vision.update(embed_dim=32, mlp_ratio=2)
    text = dict(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, rope_parameters={"rope_type": "default", "mrope_section": [4, 2, 2], "rope_theta": 10000.0},
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in [
        ("video_token_id", "<|video_pad|>"), ("image_token_id", "<|image_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}  # fmt: skip
    config = AutoConfig.for_model(model_type, vision_config=vision, text_config=text, **ids)
    torch.manual_seed(0)
    AutoModelForImageTextToText.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor = {"min_pixels": 56 * 56, "max_pixels": 56 * 84, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    return save_tiny_llava(tmp_path_factory.mktemp("vlm") / "tiny-llava-next-video")


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory) -> Path:
    return save_tiny_qwen(tmp_path_factory.mktemp("vlm") / "tiny-qwen2.5-vl")


def test_qwen_video_patches_match_the_transformers_image_processor_layout():
    """A still frame twice is what Qwen's image processor feeds the same vision tower: equal bytes."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    frame = scene_frames(150, 90, 1)[0]
    reference = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 168)(images=[frame], return_tensors="np")
    mean, std = Qwen2VLImageProcessorPil.image_mean, Qwen2VLImageProcessorPil.image_std
    patches, grid = qwen_video_patches([frame, frame], 14, 2, 2, 56 * 56, 112 * 168, mean, std)
    assert list(grid) == reference["image_grid_thw"][0].tolist()
    np.testing.assert_allclose(patches, reference["pixel_values"], atol=1e-5)
    odd, _ = qwen_video_patches([frame], 14, 2, 2, 56 * 56, 112 * 168, mean, std)  # padded by repeating
    np.testing.assert_allclose(odd, patches, atol=1e-6)


def test_llava_pixels_match_the_clip_image_processor_frame_by_frame():
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from ltxtrainer.captioning.local import CLIP_MEAN, CLIP_STD, llava_pixel_values

    frames = list(scene_frames(150, 90, 3))
    processor = CLIPImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    reference = processor(images=frames, return_tensors="np")["pixel_values"]
    pixels = llava_pixel_values(frames, 56, CLIP_MEAN, CLIP_STD)
    assert pixels.shape == (1, 3, 3, 56, 56)
    np.testing.assert_allclose(pixels[0], reference, atol=1e-5)


@pytest.mark.parametrize("backend", ["llava", "qwen"])
def test_local_model_captions_clips_through_the_stage(backend, tiny_llava, tiny_qwen, tmp_path, capsys):
    from ltxtrainer.captioning import open_captioner

    folder = tiny_llava if backend == "llava" else tiny_qwen
    clips = tmp_path / "片段 clips"
    make_clip(clips / "walk.mp4", 80, 48, (12,), 12)
    Image.fromarray(scene_frames(80, 48, 1)[0]).save(clips / "still.png")  # a one-frame clip
    with open_captioner(backend, model_path=folder, max_new_tokens=6) as captioner:
        assert captioner.name == backend
        report = caption_clips(clips, captioner, trigger_word="sks", frames_per_clip=FRAMES)
    assert report.captioned == ["still.png", "walk.mp4"] and not report.failed
    saved = json.loads((clips / "captions.json").read_text(encoding="utf-8"))
    for entry in saved:
        caption = entry["caption"]
        assert caption.startswith("sks, ") and len(caption) > len("sks, ")
        assert (clips / entry["media_path"]).with_suffix(".txt").read_text(encoding="utf-8").strip() == caption


def test_qwen2_vl_generates_from_eight_frames(tmp_path):
    folder = save_tiny_qwen(tmp_path / "tiny-qwen2-vl", model_type="qwen2_vl")
    captioner = LocalVLMCaptioner("qwen", folder, max_new_tokens=6)
    assert captioner.config.model_type == "qwen2_vl"
    text = captioner.caption(list(scene_frames(80, 48, FRAMES)), "Describe the video.")
    assert isinstance(text, str) and text.strip()


def test_model_of_the_wrong_family_is_refused_with_a_reason(tiny_qwen):
    with pytest.raises(FatalCaptionError, match="qwen2_5_vl model, but the llava backend"):
        LocalVLMCaptioner("llava", tiny_qwen)


def test_missing_model_names_the_fix(tmp_path):
    with pytest.raises(FatalCaptionError, match="--model-path"):
        LocalVLMCaptioner("qwen", tmp_path / "no such model")


def test_quantization_without_a_gpu_is_refused_with_a_reason(tiny_llava):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: 8-bit loading is allowed here")
    with pytest.raises(FatalCaptionError, match="CUDA GPU"):
        LocalVLMCaptioner("llava", tiny_llava, quantization="8bit")
