"""The `llava` and `qwen` backends: LLaVA-NeXT-Video and Qwen2.5-VL (or Qwen2-VL) run locally via transformers.

Pixel values without torchvision. Transformers' *video* processors for these models are built
on torchvision, and torchvision cannot be installed beside our CPU torch (its PyPI wheel is a
CUDA build: it fails on import, and an unpinned install replaces torch; FIELD_NOTES section 6).
The models themselves do not need it. So this module never instantiates the processor: it
loads only the tokenizer and the model, reads the processor's settings (mean, std, pixel
limits) from `preprocessor_config.json` / `video_preprocessor_config.json` when the folder has
them, takes the geometry (image size, patch sizes, pooling, merge size) from the model config,
and prepares the tensors itself with Pillow (bicubic, as the processors do) and numpy:

- LLaVA-NeXT-Video: each frame is resized so its short side equals the vision tower's image size,
  centre-cropped square, rescaled to [0, 1] and normalised -> `pixel_values_videos` [1, F, 3, S, S];
  the prompt gets one `<video>` token per pooled patch: F * ((S / patch) // pool stride)^2.
- Qwen2.5-VL / Qwen2-VL: frames are resized (aspect kept) to multiples of patch * merge within
  the pixel limits, the frame count is padded to a multiple of the temporal patch by repeating
  the last frame, and the video is cut into flattened (temporal x patch x patch) patches in the
  merge-window order the vision tower expects -> `pixel_values_videos` [N, 3 * t * p * p] plus
  `video_grid_thw`; the prompt gets N / merge^2 `<|video_pad|>` tokens, and
  `mm_token_type_ids` marks them for the 3-D rotary positions.

Model folders come from `--model-path` or the Hugging Face cache, always with
local_files_only=True: nothing is downloaded at run time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from ltxtrainer.captioning.base import Captioner, CaptionError, FatalCaptionError, clean_caption

MODEL_TYPES = {"llava": ("llava_next_video",), "qwen": ("qwen2_5_vl", "qwen2_vl")}
DEFAULT_REPOS = {"llava": "llava-hf/LLaVA-NeXT-Video-7B-hf", "qwen": "Qwen/Qwen2.5-VL-7B-Instruct"}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # the OpenAI CLIP statistics both families use
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Qwen's processor allows up to 768 tokens' worth of pixels per frame; for a caption of 8 frames
# a quarter of that sees enough and keeps the prompt near a thousand visual tokens.
QWEN_MAX_PIXELS_PER_FRAME = 448 * 448
QWEN_MIN_PIXELS_PER_FRAME = 128 * 28 * 28
FALLBACK_PROMPTS = {
    "llava": "USER: {video}\n{instruction} ASSISTANT:",
    "qwen": (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|>{video}<|vision_end|>{instruction}<|im_end|>\n<|im_start|>assistant\n"
    ),
}


def resolve_model_path(backend: str, model_path: str | Path | None) -> Path:
    """The model folder: `model_path` if it is one, else that repo id (or the default) in the HF cache."""
    if model_path is not None and Path(model_path).is_dir():
        folder = Path(model_path)
        if not (folder / "config.json").is_file():
            raise FatalCaptionError(f"{folder} has no config.json; point --model-path at the model folder itself")
        return folder
    repo_id = str(model_path) if model_path is not None else DEFAULT_REPOS[backend]
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, or not a repo id: both mean "we have no such model here"
        raise FatalCaptionError(
            f"no local model for the {backend} backend: {repo_id} is neither a folder nor in the Hugging Face "
            f"cache; download it first (huggingface-cli download {DEFAULT_REPOS[backend]}) or pass "
            "--model-path DIR"
        ) from None


def read_processor_settings(folder: Path) -> dict:
    """The processor's saved settings (the video processor's file wins over the image processor's)."""
    settings: dict = {}
    for name in ("preprocessor_config.json", "video_preprocessor_config.json"):
        path = folder / name
        if path.is_file():
            settings.update(json.loads(path.read_text(encoding="utf-8")))
    return settings


def _normalise(frames: list[np.ndarray], mean: tuple, std: tuple) -> np.ndarray:
    """uint8 [H, W, 3] frames -> float32 [F, 3, H, W], rescaled to [0, 1] and standardised."""
    stack = np.stack(frames).astype(np.float32) / 255.0
    stack = (stack - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return stack.transpose(0, 3, 1, 2)


def llava_pixel_values(frames: list[np.ndarray], image_size: int, mean: tuple, std: tuple) -> np.ndarray:
    """[1, F, 3, S, S]: short side resized to S (bicubic), centre crop S x S, normalised."""
    squares = []
    for frame in frames:
        image = Image.fromarray(frame)
        scale = image_size / min(image.size)
        width, height = max(image_size, round(image.width * scale)), max(image_size, round(image.height * scale))
        image = image.resize((width, height), Image.BICUBIC)
        left, top = (width - image_size) // 2, (height - image_size) // 2
        squares.append(np.asarray(image.crop((left, top, left + image_size, top + image_size))))
    return _normalise(squares, mean, std)[None]


def qwen_frame_size(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) as multiples of `factor`, aspect ratio kept, area within [min_pixels, max_pixels]."""
    target_height = max(factor, round(height / factor) * factor)
    target_width = max(factor, round(width / factor) * factor)
    area = target_height * target_width
    if area > max_pixels or area < min_pixels:
        scale = math.sqrt((height * width) / (max_pixels if area > max_pixels else min_pixels))
        rounding = math.floor if area > max_pixels else math.ceil
        target_height = max(factor, rounding(height / scale / factor) * factor)
        target_width = max(factor, rounding(width / scale / factor) * factor)
    return target_height, target_width


def qwen_video_patches(
    frames: list[np.ndarray],
    patch_size: int,
    temporal_patch_size: int,
    merge_size: int,
    min_pixels: int,
    max_pixels: int,
    mean: tuple,
    std: tuple,
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Flattened video patches [N, 3 * t * p * p] and the (t, h, w) patch grid, in Qwen's layout.

    Within a frame, patches are ordered merge window by merge window (each window's
    merge x merge patches adjacent), because the vision tower merges neighbouring rows of this
    sequence into one language token.
    """
    height, width = frames[0].shape[:2]
    target_height, target_width = qwen_frame_size(height, width, patch_size * merge_size, min_pixels, max_pixels)
    resized = [
        np.asarray(Image.fromarray(frame).resize((target_width, target_height), Image.BICUBIC)) for frame in frames
    ]
    resized += [resized[-1]] * (-len(resized) % temporal_patch_size)
    video = _normalise(resized, mean, std)  # [F, C, H, W]
    grid_t = len(resized) // temporal_patch_size
    grid_h, grid_w = target_height // patch_size, target_width // patch_size
    channels = video.shape[1]
    video = video.reshape(
        grid_t, temporal_patch_size, channels,
        grid_h // merge_size, merge_size, patch_size,
        grid_w // merge_size, merge_size, patch_size,
    )  # fmt: skip
    # -> t, window row, window col, row in window, col in window | channel, time, pixel row, pixel col
    video = video.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    patches = video.reshape(grid_t * grid_h * grid_w, channels * temporal_patch_size * patch_size * patch_size)
    return np.ascontiguousarray(patches), (grid_t, grid_h, grid_w)


def _find_chat_template(folder: Path, tokenizer: object) -> str | None:
    """The processor's chat template (multimodal) if the folder has one, else the tokenizer's."""
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if (folder / "chat_template.json").is_file():
        return json.loads((folder / "chat_template.json").read_text(encoding="utf-8")).get("chat_template")
    return getattr(tokenizer, "chat_template", None)


class LocalVLMCaptioner(Captioner):
    """A local LLaVA-NeXT-Video or Qwen-VL model; one clip at a time on one device."""

    def __init__(
        self,
        backend: str,
        model_path: str | Path | None = None,
        *,
        quantization: str | None = None,
        device: str | None = None,
        max_new_tokens: int = 256,
    ):
        import torch
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer

        if backend not in MODEL_TYPES:
            raise ValueError(f"local backends are {', '.join(MODEL_TYPES)}, not {backend!r}")
        self.name = backend
        self.max_new_tokens = max_new_tokens
        folder = resolve_model_path(backend, model_path)
        self.config = AutoConfig.from_pretrained(folder, local_files_only=True)
        if self.config.model_type not in MODEL_TYPES[backend]:
            raise FatalCaptionError(
                f"{folder} holds a {self.config.model_type} model, but the {backend} backend needs one of "
                f"{', '.join(MODEL_TYPES[backend])}"
            )
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        load_options: dict = {"local_files_only": True, "dtype": dtype}
        if quantization:
            load_options.update(quantization_config=_bitsandbytes_config(quantization, self.device, dtype))
            load_options.update(device_map={"": self.device.index or 0})
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModelForImageTextToText.from_pretrained(folder, **load_options).eval()
        if not quantization:
            self.model.to(self.device)
        self.settings = read_processor_settings(folder)
        self.chat_template = _find_chat_template(folder, self.tokenizer)
        video_token_id = getattr(self.config, "video_token_id", None) or self.config.video_token_index
        self.video_token_id = int(video_token_id)
        self.video_token = self.tokenizer.convert_ids_to_tokens(self.video_token_id)

    def caption(self, frames: list[np.ndarray], instruction: str) -> str:
        import torch

        if not frames:
            raise CaptionError("no frames to caption")
        mean = tuple(self.settings.get("image_mean", CLIP_MEAN))
        std = tuple(self.settings.get("image_std", CLIP_STD))
        vision = self.config.vision_config
        extra: dict = {}
        if self.name == "llava":
            size = int(vision.image_size)
            pixels = llava_pixel_values(frames, size, mean, std)
            pooled_side = (size // vision.patch_size) // self.config.spatial_pool_stride
            num_video_tokens = len(frames) * pooled_side**2
            extra["pixel_values_videos"] = torch.from_numpy(pixels).to(self.device, self.model.dtype)
        else:
            patches, grid = qwen_video_patches(
                frames, vision.patch_size, vision.temporal_patch_size, vision.spatial_merge_size,
                *self._qwen_pixel_limits(), mean, std,
            )  # fmt: skip
            num_video_tokens = math.prod(grid) // vision.spatial_merge_size**2
            extra["pixel_values_videos"] = torch.from_numpy(patches).to(self.device)
            extra["video_grid_thw"] = torch.tensor([grid], device=self.device)
        prompt = self._prompt(instruction).replace(self.video_token, self.video_token * num_video_tokens, 1)
        has_bos = bool(self.tokenizer.bos_token) and prompt.startswith(self.tokenizer.bos_token)
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=not has_bos).to(self.device)
        video_positions = inputs["input_ids"] == self.video_token_id
        if int(video_positions.sum()) != num_video_tokens:
            raise FatalCaptionError(
                f"the tokenizer does not keep {self.video_token!r} as one token; the model folder looks incomplete"
            )
        if self.name == "qwen":
            extra["mm_token_type_ids"] = video_positions.long() * 2  # 0 text, 1 image, 2 video
        with torch.inference_mode():
            output = self.model.generate(**inputs, **extra, max_new_tokens=self.max_new_tokens, do_sample=False)
        new_tokens = output[0, inputs["input_ids"].shape[1] :]
        text = clean_caption(self.tokenizer.decode(new_tokens, skip_special_tokens=True))
        if not text:
            raise CaptionError("the model generated no text for this clip")
        return text

    def close(self) -> None:
        import torch

        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _prompt(self, instruction: str) -> str:
        """The model's own chat template if it renders one video token, else the family's known format."""
        if self.chat_template:
            messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": instruction}]}]
            try:
                prompt = self.tokenizer.apply_chat_template(
                    messages, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
                )
                if prompt.count(self.video_token) == 1:
                    return prompt
            except Exception:  # a template written for text-only messages: use the known format
                pass
        return FALLBACK_PROMPTS[self.name].format(video=self.video_token, instruction=instruction)

    def _qwen_pixel_limits(self) -> tuple[int, int]:
        size = self.settings.get("size") or {}
        min_pixels = self.settings.get("min_pixels") or size.get("shortest_edge") or QWEN_MIN_PIXELS_PER_FRAME
        max_pixels = self.settings.get("max_pixels") or size.get("longest_edge") or QWEN_MAX_PIXELS_PER_FRAME
        max_pixels = min(int(max_pixels), QWEN_MAX_PIXELS_PER_FRAME)
        return min(int(min_pixels), max_pixels), max_pixels


def _bitsandbytes_config(quantization: str, device: object, dtype: object) -> object:
    """8- or 4-bit weights through bitsandbytes; only on a CUDA GPU, where it saves memory."""
    if getattr(device, "type", "cpu") != "cuda":
        raise FatalCaptionError(f"{quantization} loading needs a CUDA GPU; leave out --quantization on this machine")
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError:
        raise FatalCaptionError(
            f"{quantization} loading needs the bitsandbytes package (pip install bitsandbytes)"
        ) from None
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    raise ValueError(f"quantization must be '8bit' or '4bit', got {quantization!r}")
