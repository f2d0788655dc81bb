"""Training-step benchmark: our step against the plain diffusers + peft step, on random inputs.

Both sides build the transformer from the real config numbers with random weights (on the `meta`
device first, then filled in place, so 13B costs seconds, not minutes) and train on random
latents and prompt embeddings. LTX-Video 0.9 (`tiny`, `2b`, `13b`) and LTX-2 (`tiny-ltx2`,
`ltx2`, `ltx2.3`: joint audio+video unless `with_audio` is off) alike. "Ours" is the trainer's own setup and step (`prepare_transformer`,
`build_optimizer`, accelerate's mixed precision, `_training_loss`); "plain" is what a first
script would do (peft `add_adapter`, fp32 adapter, `torch.optim.AdamW()` defaults). The memory
options the user chose (quantization, gradient checkpointing, block offload) apply to both
sides, because they change what fits rather than how fast it is; every report carries
ours/plain so a change that slows our step shows at once.
"""

from __future__ import annotations

import gc
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from ltxtrainer import progress
from ltxtrainer.config import TrainerConfig, config_from_dict
from ltxtrainer.memory import (
    LTX2_FPS,
    LTX2_TEXT_TOKENS,
    MODEL_SHAPES,
    PROMPT_TOKENS,
    estimate_memory,
    full_shape,
    is_ltx2,
    ltx2_audio_tokens,
)
from ltxtrainer.models import ltx2, ltx_video

try:
    import resource
except ImportError:  # Windows has no resource module; there the benchmark measures GPU memory only
    resource = None

PROMPT_VALID_TOKENS = 48  # a typical caption; the rest is padding with a False mask
FPS = 25.0

# Above this many parameters a CPU run needs tens of GB and hours per step.
CPU_PARAMETER_LIMIT = 5e9


class BenchmarkRefused(ValueError):
    """The benchmark cannot run as asked; the message is one paragraph for the user."""


@dataclass
class BenchmarkOptions:
    model: str = "tiny"
    width: int = 256
    height: int = 256
    frames: int = 25
    batch_size: int = 1
    rank: int = 64
    quantization: str = "none"
    gradient_checkpointing: bool = False
    mixed_precision: str = "bf16"
    compile: bool = False
    attention_backend: str | None = None
    block_offload: bool = False
    steps: int = 5
    warmup: int = 2
    skip_plain: bool = False
    allow_cpu_large: bool = False
    device: str | None = None  # default: cuda if available, else cpu
    with_audio: bool = True  # LTX-2 only: the joint audio+video step the LTX-2 templates train


def parse_resolution(text: str) -> tuple[int, int, int]:
    """'768x512x49' -> (768, 512, 49), checked against the VAE's rules."""
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 3 or not all(part.strip().isdigit() for part in parts):
        raise BenchmarkRefused(f"--resolution must look like 768x512x49 (width x height x frames), got {text!r}.")
    width, height, frames = (int(part) for part in parts)
    if width <= 0 or height <= 0 or width % 32 or height % 32:
        raise BenchmarkRefused(f"Width and height must be positive multiples of 32, got {width}x{height}.")
    if frames < 1 or (frames - 1) % 8:
        raise BenchmarkRefused(f"Frames must be 8k+1 (1, 9, 17, 25, 49, ...), got {frames}.")
    return width, height, frames


def transformer_shape(model: str) -> dict:
    if model not in MODEL_SHAPES:
        raise BenchmarkRefused(f"--model must be one of {', '.join(MODEL_SHAPES)}, got {model!r}.")
    return dict(MODEL_SHAPES[model])


def model_flops_per_step(shape: dict, tokens: int, batch_size: int = 1, prompt_tokens: int = PROMPT_TOKENS) -> float:
    """Model FLOPs of one LoRA training step (FIELD_NOTES §4), hardware recomputation not counted.

    Video part: 4·N_v·T + 12·T²·d·L with N_v = 14·d²·L (forward 2 + input-gradient 2 per weight;
    frozen weights skip their weight-gradient matmul; attention needs its full backward). The text
    cross-attention adds 4·2·d·c·L·S for the frozen key/value projections of the S prompt tokens
    and 12·T·S·d·L for the scores. The FIELD_NOTES figures (13B 768x768x49 = 2.22e14, 2B 768x512x49
    = 2.30e13) include that text part: without it 2B would be 2.26e13.
    """
    layers = shape["num_layers"]
    width = shape["num_attention_heads"] * shape["attention_head_dim"]
    text_width = shape["cross_attention_dim"]
    video_weights = 14 * width * width * layers
    video = 4 * video_weights * tokens + 12 * tokens * tokens * width * layers
    text = 4 * 2 * width * text_width * layers * prompt_tokens + 12 * tokens * prompt_tokens * width * layers
    return float(batch_size * (video + text))


def ltx2_model_flops_per_step(
    shape: dict, video_tokens: int, audio_tokens: int, batch_size: int = 1, with_audio: bool = True,
    text_tokens: int = LTX2_TEXT_TOKENS,
) -> float:
    """Model FLOPs of one LTX-2 LoRA training step, counted as `model_flops_per_step` counts 0.9's:
    4 per weight and token (forward, input gradient) and 12·n·m·d per attention of n queries over m
    keys at width d, for both streams, both prompt attentions over the 1024 caption tokens and, in a
    joint step, the audio<->video attention (at the audio width). A video-only step runs the audio
    stream on one dummy token and skips the audio<->video attention."""
    shape = full_shape(shape)
    layers = shape["num_layers"]
    video = shape["num_attention_heads"] * shape["attention_head_dim"]
    audio = shape["audio_num_attention_heads"] * shape["audio_attention_head_dim"]
    video_text, audio_text = shape["cross_attention_dim"], shape["audio_cross_attention_dim"]
    # video tokens: attn1 (4d²), attn2's q and out (2d²), ff (8d²); audio tokens likewise at the audio width
    total = 4 * 14 * video * video * video_tokens + 12 * video_tokens * video_tokens * video
    total += 4 * 14 * audio * audio * audio_tokens + 12 * audio_tokens * audio_tokens * audio
    total += 4 * 2 * (video * video_text + audio * audio_text) * text_tokens  # prompt keys and values
    total += 12 * text_tokens * (video_tokens * video + audio_tokens * audio)  # prompt attention scores
    if with_audio:  # a2v: q, out from video (2·d·a), k, v from audio (2a²); v2a the other way round
        total += 4 * (2 * video * audio * video_tokens + 2 * audio * audio * audio_tokens)
        total += 4 * (2 * audio * audio * audio_tokens + 2 * video * audio * video_tokens)
        total += 2 * 12 * video_tokens * audio_tokens * audio
    return float(batch_size * layers * total)


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _init_random_(module: torch.nn.Module, seed: int) -> None:
    """Cheap, well-scaled random weights: normal(0, 0.02) matrices, zero biases, unit norm scales."""
    generator = torch.Generator(device=next(module.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if parameter.ndim >= 2:
                parameter.normal_(0.0, 0.02, generator=generator)
            elif name.endswith("bias"):
                parameter.zero_()
            else:
                parameter.fill_(1.0)


def _transformer_on_meta(shape: dict) -> torch.nn.Module:
    """diffusers' transformer class of the shape's family, built on the current device."""
    from diffusers import LTX2VideoTransformer3DModel, LTXVideoTransformer3DModel

    arguments = {key: value for key, value in shape.items() if not key.startswith("_")}  # config.json's _class_name...
    return LTX2VideoTransformer3DModel(**arguments) if is_ltx2(shape) else LTXVideoTransformer3DModel(**arguments)


def build_random_transformer(shape: dict, dtype: torch.dtype, device: torch.device, seed: int = 0):
    """A transformer of `shape` (either family) with random weights, built without a CPU-side init pass.

    The default dtype is switched while building on `meta` (rather than `.to(dtype)` afterwards),
    which creates the parameters in `dtype` directly and avoids diffusers' cast warning.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            transformer = _transformer_on_meta(shape)
    finally:
        torch.set_default_dtype(previous)
    transformer = transformer.to_empty(device=device)
    _init_random_(transformer, seed)
    return transformer


def random_batch(
    shape: dict, width: int, height: int, frames: int, batch_size: int, seed: int = 0, with_audio: bool = True,
) -> dict:
    """A batch as the trainer's DataLoader yields it: CPU tensors, fp32 latents and embeddings
    (for LTX-2 the fields of `ltx2.collate`: connector outputs of 1024 tokens, audio latents)."""
    generator = torch.Generator().manual_seed(seed)
    if is_ltx2(shape):
        return _random_ltx2_batch(full_shape(shape), width, height, frames, batch_size, generator, with_audio)
    latent_frames, latent_height, latent_width = ltx_video.latent_size(width, height, frames)
    tokens = latent_frames * latent_height * latent_width
    mask = torch.zeros(batch_size, PROMPT_TOKENS, dtype=torch.bool)
    mask[:, :PROMPT_VALID_TOKENS] = True
    return {
        "latents": torch.randn(batch_size, tokens, shape["in_channels"], generator=generator),
        "prompt_embeds": torch.randn(batch_size, PROMPT_TOKENS, shape["caption_channels"], generator=generator),
        "prompt_attention_mask": mask,
        "num_frames": latent_frames,
        "height": latent_height,
        "width": latent_width,
        "fps": FPS,
    }


def _random_ltx2_batch(
    shape: dict, width: int, height: int, frames: int, batch_size: int, generator: torch.Generator, with_audio: bool,
) -> dict:
    latent_frames, latent_height, latent_width = ltx_video.latent_size(width, height, frames)
    tokens = latent_frames * latent_height * latent_width
    # the connector outputs the transformer reads: caption width for LTX-2.0 (it projects them), stream widths for 2.3
    video_text = shape["caption_channels"] if shape["use_prompt_embeddings"] else shape["cross_attention_dim"]
    audio_text = shape["caption_channels"] if shape["use_prompt_embeddings"] else shape["audio_cross_attention_dim"]
    mask = torch.ones(batch_size, LTX2_TEXT_TOKENS, dtype=torch.long)  # the registers fill every position
    audio_tokens = ltx2_audio_tokens(frames, True)
    return {
        "latents": torch.randn(batch_size, tokens, shape["in_channels"], generator=generator),
        "num_frames": latent_frames, "height": latent_height, "width": latent_width, "fps": LTX2_FPS,
        "video_text": torch.randn(batch_size, LTX2_TEXT_TOKENS, video_text, generator=generator),
        "audio_text": torch.randn(batch_size, LTX2_TEXT_TOKENS, audio_text, generator=generator),
        "text_mask": mask,
        "audio_latents": torch.randn(batch_size, audio_tokens, shape["audio_in_channels"], generator=generator)
        if with_audio else None,
    }


def trainer_config(options: BenchmarkOptions) -> TrainerConfig:
    """The TrainerConfig a user would write for these options (everything else at our defaults)."""
    return config_from_dict({
        "model": {"model_source": "(benchmark: random weights)", "training_mode": "lora",
                  "with_audio": options.with_audio and is_ltx2(MODEL_SHAPES.get(options.model, {}))},
        "lora": {"rank": options.rank, "alpha": options.rank},
        "optimization": {
            "batch_size": options.batch_size,
            "enable_gradient_checkpointing": options.gradient_checkpointing,
            "steps": max(1, options.steps + options.warmup),
        },
        "acceleration": {
            "mixed_precision_mode": options.mixed_precision,
            "quantization": options.quantization,
            "compile_with_inductor": options.compile,
            "block_offload": options.block_offload,
            "attention_backend": options.attention_backend,
        },
        "data": {"preprocessed_data_root": "(benchmark: random latents)"},
        "validation": {"interval": None},
    })


# ---- memory measurement -------------------------------------------------------------------------

def saved_activation_bytes(model: torch.nn.Module, inputs: dict) -> int:
    """Bytes of the distinct tensors autograd keeps for backward in one forward `model(**inputs)`,
    weights excluded.

    This is what calibrated ltxtrainer.memory's activation constants; tests use it to check the
    estimate still matches the installed diffusers and torch.
    """
    return saved_bytes_during(model, lambda: model(**inputs))


def saved_bytes_during(model: torch.nn.Module, forward: Callable[[], object]) -> int:
    """`saved_activation_bytes` of any forward of `model` (e.g. `ltx2.predict` as the trainer calls it)."""
    weights = set()
    for parameter in model.parameters():
        try:
            weights.add(parameter.untyped_storage().data_ptr())
        except (RuntimeError, NotImplementedError):  # quanto's quantized weights have no plain storage
            continue
    kept: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        try:
            storage = tensor.untyped_storage()
            pointer = storage.data_ptr()
        except (RuntimeError, NotImplementedError):
            return tensor
        if pointer not in weights:
            kept[pointer] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    return sum(kept.values())


def _rss_bytes() -> int:
    if resource is None:  # Windows: no CPU memory figure (the trainer reports 0 there too); GPU memory is measured
        return 0
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * resource.getpagesize()
    except OSError:
        return _max_rss_bytes()


def _max_rss_bytes() -> int:
    if resource is None:
        return 0
    scale = 1 if sys.platform == "darwin" else 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


def _reset_peak(device: torch.device) -> bool:
    """Start a new peak window; False where the OS keeps one high-water mark for the whole process."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:  # Linux: writing 5 resets the process's peak RSS (VmHWM, which ru_maxrss reports)
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class _PeakMeter:
    """Peak memory of one side: GPU max_memory_allocated, or on CPU the RSS growth above the
    process's footprint before that side built its model (so imports and the other side's freed
    memory are not counted)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.exact = _reset_peak(device)
        self.baseline = 0 if device.type == "cuda" else _rss_bytes()

    def peak(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return max(0, _max_rss_bytes() - self.baseline)


# ---- the two steps ------------------------------------------------------------------------------

@dataclass
class _Side:
    """One way of training, built and ready: `step(index)` runs one optimizer step."""

    label: str
    step: Callable[[int], None]
    device: torch.device
    times_s: list[float]
    peak_memory_bytes: int = 0

    def timed_step(self, index: int) -> float:
        started = time.perf_counter()
        self.step(index)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - started

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)


def build_ours(options: BenchmarkOptions, shape: dict, batch: dict, device: torch.device) -> Callable[[int], None]:
    """The trainer's own setup and loop body (trainer.run_training), one micro-step per step."""
    from ltxtrainer.training.model_setup import weight_dtype
    from ltxtrainer.training.trainer import (
        _make_accelerator,
        _StepLosses,
        _training_loss,
        accelerate_parts,
        apply_gradients,
        build_training_parts,
    )

    config = trainer_config(options)
    accelerator = _make_accelerator(config)
    build_device = torch.device("cpu") if options.block_offload else device
    dtype = weight_dtype(config, device)
    transformer = build_random_transformer(shape, dtype, build_device)
    family = ltx2 if is_ltx2(shape) else ltx_video
    transformer, optimizer, lr_scheduler, trained = build_training_parts(transformer, config, device, family)
    model, optimizer, clip_parameters = accelerate_parts(accelerator, transformer, optimizer, trained, config)
    max_grad_norm = config.optimization.max_grad_norm
    losses = _StepLosses()

    def step(index: int) -> None:
        loss = _training_loss(model, batch, config, index, accelerator.process_index, device, dtype, family)
        accelerator.backward(loss)
        apply_gradients(accelerator, optimizer, lr_scheduler, clip_parameters, max_grad_norm)
        losses.put(index, loss.detach().float(), lr_scheduler.get_last_lr()[0])
        losses.take()  # the trainer logs each step's loss once the device has computed it

    return step


def build_plain(options: BenchmarkOptions, shape: dict, batch: dict, device: torch.device) -> Callable[[int], None]:
    """A first script's step: diffusers model + peft add_adapter + AdamW() defaults, no autocast."""
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    from ltxtrainer.training.flow_matching import noisy_inputs
    from ltxtrainer.training.model_setup import quantize_transformer

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(options.mixed_precision, torch.float32)
    if dtype == torch.float16 and device.type != "cuda":
        dtype = torch.float32  # the trainer falls back the same way
    build_device = torch.device("cpu") if options.block_offload else device
    transformer = build_random_transformer(shape, dtype, build_device)
    if options.quantization not in (None, "none"):
        quantize_transformer(transformer, options.quantization, (ltx2 if is_ltx2(shape) else ltx_video).QUANTIZE_EXCLUDE)
    transformer.requires_grad_(False)
    transformer.add_adapter(LoraConfig(
        r=options.rank, lora_alpha=options.rank, target_modules=["to_k", "to_q", "to_v", "to_out.0"],
        init_lora_weights=True,
    ))
    cast_training_params(transformer, dtype=torch.float32)
    if options.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    if options.block_offload and device.type == "cuda":
        transformer.enable_group_offload(onload_device=device, offload_type="block_level", num_blocks_per_group=1)
    else:
        transformer.to(device)
    transformer.train()
    parameters = [parameter for parameter in transformer.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(parameters)
    generator = torch.Generator().manual_seed(0)

    def step(index: int) -> None:
        latents = batch["latents"]
        sigmas = torch.rand(latents.shape[0], generator=generator)
        if is_ltx2(shape):
            loss = _plain_ltx2_loss(transformer, batch, sigmas, generator, device, dtype)
        else:
            noise = torch.randn(latents.shape, generator=generator)
            noisy, timesteps, target, _ = noisy_inputs(latents, noise, sigmas, 0)
            prediction = transformer(
                hidden_states=noisy.to(device, dtype),
                encoder_hidden_states=batch["prompt_embeds"].to(device, dtype),
                timestep=timesteps.to(device),
                encoder_attention_mask=batch["prompt_attention_mask"].to(device),
                num_frames=batch["num_frames"], height=batch["height"], width=batch["width"],
                rope_interpolation_scale=ltx_video.rope_interpolation_scale(batch["fps"]),
                return_dict=False,
            )[0]
            loss = torch.nn.functional.mse_loss(prediction.float(), target.to(device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad()

    return step


def _plain_ltx2_loss(
    transformer, batch: dict, sigmas: torch.Tensor, generator: torch.Generator, device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """A first script's LTX-2 step: both streams noised with one sigma, the transformer called as
    LTX2Pipeline calls it (a video-only step: one zero audio token, modalities isolated), plain MSE."""
    video = batch["latents"]
    audio = batch["audio_latents"]
    video_noise = torch.randn(video.shape, generator=generator)
    expanded = sigmas[:, None, None]
    noisy_video = (1 - expanded) * video + expanded * video_noise
    if audio is None:
        noisy_audio, audio_target = torch.zeros(video.shape[0], 1, transformer.config.audio_in_channels), None
    else:
        audio_noise = torch.randn(audio.shape, generator=generator)
        noisy_audio, audio_target = (1 - expanded) * audio + expanded * audio_noise, audio_noise - audio
    timesteps = (sigmas * 1000.0).to(device)
    video_prediction, audio_prediction = transformer(
        hidden_states=noisy_video.to(device, dtype), audio_hidden_states=noisy_audio.to(device, dtype),
        encoder_hidden_states=batch["video_text"].to(device, dtype),
        audio_encoder_hidden_states=batch["audio_text"].to(device, dtype),
        timestep=timesteps, audio_timestep=timesteps, sigma=timesteps,
        encoder_attention_mask=batch["text_mask"].to(device), audio_encoder_attention_mask=batch["text_mask"].to(device),
        num_frames=batch["num_frames"], height=batch["height"], width=batch["width"], fps=batch["fps"],
        audio_num_frames=noisy_audio.shape[1], isolate_modalities=audio is None, use_cross_timestep=True,
        return_dict=False,
    )
    loss = torch.nn.functional.mse_loss(video_prediction.float(), (video_noise - video).to(device))
    if audio_target is not None:
        loss = loss + torch.nn.functional.mse_loss(audio_prediction.float(), audio_target.to(device))
    return loss


def _warm_up(label: str, build: Callable[[], Callable[[int], None]], warmup: int, device: torch.device) -> _Side:
    """Build one side and run its warm-up steps; its peak memory is taken over exactly that."""
    meter = _PeakMeter(device)
    side = _Side(label, build(), device, [])
    for index in range(warmup):
        elapsed = side.timed_step(index)
        progress.say(f"  {label}: warm-up step {index + 1}/{warmup}: {elapsed:.3f} s")
    if warmup == 0:
        side.timed_step(0)  # memory needs one step even when none is discarded for timing
    side.peak_memory_bytes = meter.peak()
    return side


def _time(sides: list[_Side], steps: int, warmup: int) -> None:
    for index in range(warmup, warmup + steps):
        for side in sides:
            elapsed = side.timed_step(index)
            side.times_s.append(elapsed)
            progress.say(f"  {side.label}: timed step {index - warmup + 1}/{steps}: {elapsed:.3f} s")


def time_sides(options: BenchmarkOptions, shape: dict, batch: dict, device: torch.device) -> list[_Side]:
    """Ours, then plain. On a CPU both stay built and their timed steps alternate, so load from
    other processes on a shared machine hits both alike; on a GPU (exclusive, and 13B twice would
    not fit) each side is timed and freed before the next is built."""
    builders = [("ours", lambda: build_ours(options, shape, batch, device))]
    if not options.skip_plain:
        builders.append(("plain", lambda: build_plain(options, shape, batch, device)))
    interleave = device.type == "cpu"
    sides: list[_Side] = []
    for label, build in builders:
        side = _warm_up(label, build, options.warmup, device)
        if not interleave:
            _time([side], options.steps, options.warmup)
            side.step = _done  # drop the model, optimizer and accelerator the closure holds
            gc.collect()
        sides.append(side)
    if interleave:
        _time(sides, options.steps, options.warmup)
    return sides


def _done(index: int) -> None:
    raise RuntimeError("this side was freed after timing")


# ---- device peak --------------------------------------------------------------------------------

def measure_peak_flops(device: torch.device, dtype: torch.dtype, seconds: float = 0.5) -> float:
    """FLOP/s of a large square matmul in `dtype` on this device right now."""
    size = 8192 if device.type == "cuda" else 2048
    left = torch.randn(size, size, device=device, dtype=dtype)
    right = torch.randn(size, size, device=device, dtype=dtype)
    torch.matmul(left, right)  # first call: library and kernel selection
    runs = 0
    started = time.perf_counter()
    while True:
        torch.matmul(left, right)
        runs += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and runs >= 3:
            break
    return 2.0 * size**3 * runs / elapsed


def device_peak_flops(device: torch.device, mixed_precision: str) -> tuple[float, str]:
    """The peak MFU is measured against: bf16 matmul on a GPU; on a CPU fp32, or bf16 when the run
    computes in bf16 and the CPU does that faster (AVX512-BF16/AMX), so MFU stays below 100%."""
    if device.type == "cuda":
        return measure_peak_flops(device, torch.bfloat16), "bfloat16"
    peak, name = measure_peak_flops(device, torch.float32), "float32"
    if mixed_precision == "bf16":
        bf16 = measure_peak_flops(device, torch.bfloat16)
        if bf16 > peak:
            peak, name = bf16, "bfloat16"
    return peak, name


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


# ---- the whole benchmark ------------------------------------------------------------------------

def check_feasible(options: BenchmarkOptions, shape: dict, device: torch.device) -> None:
    parameters = estimate_parameter_count(shape)
    if device.type == "cpu" and parameters > CPU_PARAMETER_LIMIT and not options.allow_cpu_large:
        raise BenchmarkRefused(
            f"The {options.model.upper()} transformer has {parameters / 1e9:.1f} B parameters; on this CPU-only "
            "machine one training step would need 50+ GB of memory and hours of compute. Run it on a GPU, "
            f"or try --model {'tiny-ltx2' if is_ltx2(shape) else '2b'} with a small --resolution such as 256x256x9 "
            "(add --allow-cpu-large to force it)."
        )
    if options.mixed_precision == "fp16" and device.type != "cuda":
        raise BenchmarkRefused("fp16 mixed precision needs a GPU; use --mixed-precision bf16 or no on a CPU.")
    if options.steps < 1 or options.warmup < 0:
        raise BenchmarkRefused("--steps must be at least 1 and --warmup at least 0.")


def estimate_parameter_count(shape: dict) -> int:
    """Parameters of the real model of `shape`, built on `meta` (no memory, no time)."""
    with torch.device("meta"):
        transformer = _transformer_on_meta(shape)
    return sum(parameter.numel() for parameter in transformer.parameters())


def run_benchmark(options: BenchmarkOptions) -> dict:
    """Time our step (and the plain one unless skipped); returns the report as a flat dict."""
    shape = transformer_shape(options.model)
    device = torch.device(options.device) if options.device else default_device()
    check_feasible(options, shape, device)
    tokens = ltx_video.token_count(options.width, options.height, options.frames)
    family_ltx2 = is_ltx2(shape)
    with_audio = options.with_audio and family_ltx2
    audio_tokens = ltx2_audio_tokens(options.frames, with_audio) if family_ltx2 else 0
    batch = random_batch(
        shape, options.width, options.height, options.frames, options.batch_size, with_audio=with_audio)
    streams = f"{tokens} video + {audio_tokens} audio tokens" if family_ltx2 else f"{tokens} tokens"
    progress.say(
        f"Benchmarking {options.model} at {options.width}x{options.height}x{options.frames} "
        f"({streams} x batch {options.batch_size}) on {device}."
    )
    peak_flops, peak_dtype = device_peak_flops(device, options.mixed_precision)
    sides = time_sides(options, shape, batch, device)
    ours, plain = sides[0], (sides[1] if len(sides) > 1 else None)
    flops = (
        ltx2_model_flops_per_step(shape, tokens, audio_tokens, options.batch_size, with_audio) if family_ltx2
        else model_flops_per_step(shape, tokens, options.batch_size)
    )
    estimate = estimate_memory(
        trainer_config(options), options.width, options.height, options.frames, shape,
        batch_size=options.batch_size, device_type=device.type, vae_resident=False,
    )
    report = {
        "step_time_s": round(ours.median_s, 6),
        "plain_step_time_s": round(plain.median_s, 6) if plain else None,
        "ours_over_plain": round(ours.median_s / plain.median_s, 4) if plain else None,
        "tokens_per_s": round(tokens * options.batch_size / ours.median_s, 2),
        "model_flops_per_step": flops,
        "mfu": round(flops / ours.median_s / peak_flops, 5),
        "plain_mfu": round(flops / plain.median_s / peak_flops, 5) if plain else None,
        "peak_memory_bytes": ours.peak_memory_bytes,
        "plain_peak_memory_bytes": plain.peak_memory_bytes if plain else None,
        "estimated_memory_bytes": estimate.total_bytes,
        "estimate_error": round(estimate.total_bytes / ours.peak_memory_bytes - 1, 4) if ours.peak_memory_bytes else None,
        "peak_memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "process RSS growth",
        "device_peak_flops": peak_flops,
        "device_peak_dtype": peak_dtype,
        "device": describe_device(device),
        "tokens_per_sample": tokens,
        "audio_tokens_per_sample": audio_tokens,
        "step_times_s": [round(value, 6) for value in ours.times_s],
        "plain_step_times_s": [round(value, 6) for value in plain.times_s] if plain else None,
        "torch": torch.__version__,
        **{key: value for key, value in asdict(options).items() if key != "device"},
        "with_audio": with_audio,
    }
    return report


def options_from_args(args) -> BenchmarkOptions:
    width, height, frames = parse_resolution(args.resolution)
    return BenchmarkOptions(
        model=args.model, width=width, height=height, frames=frames, batch_size=args.batch_size, rank=args.rank,
        quantization=args.quantization, gradient_checkpointing=args.gradient_checkpointing,
        mixed_precision=args.mixed_precision, compile=args.compile, attention_backend=args.attention_backend,
        block_offload=args.block_offload, steps=args.steps, warmup=args.warmup, skip_plain=args.skip_plain,
        allow_cpu_large=args.allow_cpu_large, device=args.device, with_audio=not args.video_only,
    )


def report_table(report: dict):
    """A rich Table of the report for people."""
    from rich.table import Table

    def gib(value) -> str:
        return "—" if value is None else f"{value / 2**30:.2f} GiB"

    def seconds(value) -> str:
        return "—" if value is None else f"{value:.3f} s"

    def percent(value) -> str:
        return "—" if value is None else f"{100 * value:.2f} %"

    family = "LTX-2" if report["audio_tokens_per_sample"] else "LTX-Video"
    streams = " with audio" if report["with_audio"] else ""
    title = (
        f"{family} {report['model']}{streams} LoRA r{report['rank']} {report['width']}x{report['height']}x{report['frames']}"
        f" batch {report['batch_size']} on {report['device']}"
    )
    table = Table(title=title)
    table.add_column("")
    table.add_column("ours", justify="right")
    table.add_column("plain", justify="right")
    plain_tokens = (
        report["tokens_per_sample"] * report["batch_size"] / report["plain_step_time_s"]
        if report["plain_step_time_s"] else None
    )
    table.add_row("median step", seconds(report["step_time_s"]), seconds(report["plain_step_time_s"]))
    table.add_row("tokens/s", f"{report['tokens_per_s']:.1f}", "—" if plain_tokens is None else f"{plain_tokens:.1f}")
    table.add_row("MFU", percent(report["mfu"]), percent(report["plain_mfu"]))
    table.add_row(
        f"peak memory ({report['peak_memory_kind']})",
        gib(report["peak_memory_bytes"]), gib(report["plain_peak_memory_bytes"]),
    )
    table.add_row("estimated memory (ltxtrainer.memory)", gib(report["estimated_memory_bytes"]), "")
    ratio = report["ours_over_plain"]
    table.add_row("ours / plain time", "—" if ratio is None else f"{ratio:.3f}", "")
    table.caption = (
        f"model FLOPs/step {report['model_flops_per_step']:.3e}; device peak {report['device_peak_flops']:.3e} "
        f"FLOP/s ({report['device_peak_dtype']} matmul); quantization {report['quantization']}, "
        f"checkpointing {report['gradient_checkpointing']}, mixed precision {report['mixed_precision']}, "
        f"compile {report['compile']}"
    )
    return table
