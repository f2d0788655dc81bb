"""The training loop: setup, then the loop, then saving, in the order they happen.

accelerate drives devices and processes, so the same code runs on one CPU, one GPU, or several
GPUs/machines under `accelerate launch` (DDP; FSDP through an accelerate config). Everything a
step draws at random (its batch, noise, sigmas, first-frame coin, dropout) is seeded from
(seed, micro-step, rank), which is what makes stop-and-resume reproduce an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate.utils import DistributedType, set_seed
from safetensors import SafetensorError
from tqdm import tqdm

from ltxtrainer import platform_checks, progress, stopfile
from ltxtrainer.config import ConfigError, TrainerConfig, save_config
from ltxtrainer.data import BucketBatchOrder
from ltxtrainer.models import ltx_video
from ltxtrainer.models.family import ModelFamily, family_for
from ltxtrainer.models.folder import require_model_folder
from ltxtrainer.training import checkpoints, flow_matching
from ltxtrainer.training.lora_io import (
    LORA_FILE,
    RANK_ADAPTERS_ENV,
    load_lora_into,
    save_lora,
    save_rank_adapter,
)
from ltxtrainer.training.model_setup import prepare_transformer, trainable_parameters, weight_dtype
from ltxtrainer.training.optim import build_lr_scheduler, build_optimizer
from ltxtrainer.training.validation import dataset_frame_rate

METRICS_FILE = "metrics.jsonl"
SAMPLES_DIR = "samples"
EFFECTIVE_CONFIG = "training_config.yaml"
MEMORY_ADVICE = (
    "Lower memory with: acceleration.quantization: int8-quanto (LoRA mode), "
    "optimization.enable_gradient_checkpointing: true, a smaller resolution bucket or fewer frames, "
    "optimization.batch_size: 1, acceleration.block_offload: true, or a smaller LoRA rank."
)


class TrainingStopped(Exception):
    """Stopped by the user (Ctrl+C / the GUI's Stop); a checkpoint was saved."""


class TrainingFailed(RuntimeError):
    """Training cannot go on; the message is one paragraph for the user."""


@dataclass
class TrainingResult:
    output_dir: Path
    final_step: int
    lora_path: Path | None
    checkpoint: Path | None


class _StopFlag:
    """A stop after the current step, asked for by the first Ctrl+C (or SIGTERM/SIGBREAK) or by the job's
    stop file; a second signal kills.

    The stop file (`ltxtrainer.stopfile`) is how the GUI reaches a training it started detached from
    its console on Windows, where no Ctrl+C can arrive. On POSIX the GUI writes the file and also sends
    SIGINT, so only signals count towards "second one kills": the file is not a first Ctrl+C.
    """

    def __init__(self) -> None:
        self._signalled = False
        self._file_seen = False
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        if not self._signalled and not self._file_seen and stopfile.stop_requested():
            self._file_seen = True
            progress.say("Stop requested (stop file): finishing this step and saving a checkpoint.")
        return self._signalled or self._file_seen

    def _handle(self, signum, frame) -> None:
        if self._signalled:
            raise KeyboardInterrupt
        self._signalled = True
        progress.say("Stop requested: finishing this step and saving a checkpoint (press Ctrl+C again to kill).")

    def __enter__(self) -> _StopFlag:
        names = ["SIGINT", "SIGTERM", "SIGBREAK"]
        for name in names:
            signum = getattr(signal, name, None)
            if signum is not None:
                with contextlib.suppress(ValueError):  # not the main thread
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource

        scale = 1 if sys.platform == "darwin" else 1024
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)
    except ImportError:  # Windows
        return 0


class _StepLosses:
    """Each step's loss, read only once the device has computed it.

    Reading a GPU loss at once (`.item()`) would make the CPU wait for every step to finish before
    it queues the next one. The loss is copied to pinned host memory behind an event instead, and
    logged as soon as the event has passed (one or two steps later); checkpoints, validation, a stop
    and the last step wait for all of them. On the CPU a loss is ready at once.
    """

    def __init__(self) -> None:
        self._pending: deque = deque()

    def put(self, step: int, loss: torch.Tensor, lr: float) -> None:
        done = None
        if loss.device.type == "cuda":
            host = torch.empty((), dtype=loss.dtype, pin_memory=True)
            host.copy_(loss, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            loss = host
        self._pending.append((step, loss, lr, done))

    def take(self, wait: bool = False) -> list[tuple[int, float, float]]:
        """(step, loss, lr) of every step whose loss is ready, oldest first; with `wait`, of all of them."""
        finished = []
        while self._pending:
            step, loss, lr, done = self._pending[0]
            if done is not None:
                if not (wait or done.query()):
                    break
                done.synchronize()
            self._pending.popleft()
            finished.append((step, float(loss), lr))
        return finished


class _BatchIndices:
    """The batch sampler of the DataLoader: this rank's batches for micro-steps [start, stop)."""

    def __init__(self, order: BucketBatchOrder, start: int, stop: int):
        self.order, self.start, self.stop = order, start, stop

    def __iter__(self):
        for micro_step in range(self.start, self.stop):
            yield self.order.batch(micro_step)

    def __len__(self) -> int:
        return self.stop - self.start


def _make_accelerator(config: TrainerConfig):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import AutocastKwargs

    # accelerate keeps one AcceleratorState per process and refuses a second run with another
    # mixed-precision mode (accelerate 1.15); the distributed PartialState is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    mixed = config.acceleration.mixed_precision_mode or "no"
    if mixed == "fp16" and not torch.cuda.is_available():
        progress.say("fp16 mixed precision needs a GPU; training in full precision on the CPU.")
        mixed = "no"
    # LoRA on a bf16/fp16 base: the base runs in its own dtype and the adapters choose their own
    # precision (model_setup.adapters_in_low_precision: autocast on a GPU, fp32 on a CPU);
    # accelerate keeps mixed precision for the gradient scaler (fp16) and FSDP, but must not wrap
    # the whole forward in autocast.
    handlers = [AutocastKwargs(enabled=False)] if config.model.training_mode == "lora" and mixed != "no" else []
    return Accelerator(mixed_precision=mixed, kwargs_handlers=handlers)


def _resume_point(config: TrainerConfig, output_dir: Path, resume: bool) -> Path | None:
    source = config.model.load_checkpoint
    if resume or source == "latest":
        return checkpoints.latest_checkpoint(output_dir)
    if source:
        path = Path(source)
        if not path.exists():
            raise TrainingFailed(f"model.load_checkpoint points to {path}, which does not exist.")
        return path
    return None


def _write_metrics(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _end_torn_metrics_line(path: Path) -> None:
    """A kill mid-write can leave half a line; start the resumed run's records on a fresh line."""
    if path.is_file() and path.stat().st_size:
        with open(path, "rb+") as handle:
            handle.seek(-1, 2)
            if handle.read(1) != b"\n":
                handle.write(b"\n")


def _log(accelerator, metrics_path: Path, event: str, **fields) -> None:
    """Main process only: a JSON line in metrics.jsonl and on stdout for the GUI."""
    if accelerator.is_main_process:
        _write_metrics(metrics_path, {"event": event, "time": round(time.time(), 3), **fields})
        progress.emit(event, **fields)


def run_training(config: TrainerConfig, resume: bool = False) -> TrainingResult:
    # ---- setup ----------------------------------------------------------------------------------
    config = config.model_copy(deep=True)  # settings resolved here (the validation fps) stay in this run
    accelerator = _make_accelerator(config)
    device = accelerator.device
    platform_checks.refuse_options_needing_a_compiler(sys.platform, config, platform_checks.compute_capability(device))
    output_dir = Path(config.output_dir)
    metrics_path = output_dir / METRICS_FILE
    model_dir = require_model_folder(config.model.model_source)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        checkpoints.remove_partial_checkpoints(output_dir)
        _end_torn_metrics_line(metrics_path)
    if config.hub.push_to_hub:
        progress.say("hub.push_to_hub is accepted for compatibility but ltxtrainer does not upload; "
                     f"upload {output_dir / LORA_FILE} yourself when training ends.")
    if config.wandb.enabled:
        progress.say("wandb.enabled is accepted for compatibility; ltxtrainer logs to metrics.jsonl instead.")
    try:
        flow_matching.check_sampling_params(
            config.flow_matching.timestep_sampling_mode, config.flow_matching.timestep_sampling_params
        )
    except ValueError as error:  # the message names the field and the allowed keys
        raise ConfigError(str(error)) from None

    dtype = weight_dtype(config, device)
    family = family_for(model_dir)
    transformer = family.load_transformer(model_dir, dtype=dtype)
    dataset = family.open_dataset(config, transformer)
    order = BucketBatchOrder(
        dataset.buckets, config.optimization.batch_size, config.seed, accelerator.process_index, accelerator.num_processes
    )
    renderer = None
    validation = config.validation
    validating = bool(validation.prompts and validation.interval)
    if validating and validation.frame_rate is None:
        validation.frame_rate = dataset_frame_rate(dataset)
        progress.say(f"Validation videos at {validation.frame_rate:g} fps, the median of the dataset's clips.")
    if accelerator.is_main_process:
        save_config(config, output_dir / EFFECTIVE_CONFIG)
    if validating and accelerator.is_main_process:
        renderer = family.validation_renderer(model_dir, config, dataset, device, dtype)

    transformer, optimizer, lr_scheduler, trained = build_training_parts(transformer, config, device, family)
    start_point = _resume_point(config, output_dir, resume)
    start_step = 0
    if start_point is not None:
        if start_point.is_file():  # a LoRA file: warm start from its weights, new optimizer
            try:
                load_lora_into(transformer, start_point)
            except (ValueError, RuntimeError, SafetensorError) as error:  # another rank, targets or model; not a LoRA
                first_lines = " ".join(str(error).splitlines()[:2])  # a size mismatch lists every tensor
                raise TrainingFailed(
                    f"model.load_checkpoint {start_point} cannot start this run: {first_lines} Give a LoRA file trained "
                    "with this model and the same lora.rank and lora.target_modules, or a checkpoint folder."
                ) from None
            progress.say(f"Starting from the LoRA weights in {start_point}.")
        else:
            start_step = checkpoints.load_checkpoint(start_point, transformer, optimizer, lr_scheduler, config)
            progress.say(f"Resuming from {start_point} at step {start_step}.")
    elif resume:
        progress.say(f"No checkpoint in {output_dir / checkpoints.CHECKPOINTS_DIR} yet; starting at step 0.")
    model, optimizer, clip_parameters = accelerate_parts(accelerator, transformer, optimizer, trained, config)

    total_steps = config.optimization.steps
    accumulation = config.optimization.gradient_accumulation_steps
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=_BatchIndices(order, start_step * accumulation, total_steps * accumulation),
        collate_fn=family.collate,
        num_workers=config.data.num_dataloader_workers,
        pin_memory=device.type == "cuda",
    )
    batches = iter(loader)
    _log(
        accelerator, metrics_path, "train_start", start_step=start_step, total_steps=total_steps,
        samples=len(dataset), buckets=[list(bucket) for bucket in dataset.buckets], device=str(device),
        processes=accelerator.num_processes,
    )
    rendering_step: int | None = None  # set while validation videos render, for the out-of-memory message
    last_checkpoint: Path | None = None
    step = start_step

    def save(at_step: int) -> Path | None:
        accelerator.wait_for_everyone()
        path = None
        if accelerator.is_main_process:
            try:
                path = checkpoints.save_checkpoint(
                    output_dir, at_step, accelerator.unwrap_model(model), optimizer.optimizer, lr_scheduler, config
                )
            except (OSError, SafetensorError, RuntimeError) as error:  # disk full: safetensors and torch.save
                raise TrainingFailed(
                    f"Could not save the checkpoint of step {at_step} ({error}). The previous checkpoint is intact. "
                    "Free disk space under the output folder and resume with --resume."
                ) from error
            checkpoints.prune_checkpoints(output_dir, config.checkpoints.keep_last_n)
            _log(accelerator, metrics_path, "checkpoint", step=at_step, path=str(path))
        accelerator.wait_for_everyone()
        return path

    def validate(at_step: int) -> None:
        nonlocal rendering_step
        if renderer is None:
            return
        folder = output_dir / SAMPLES_DIR / f"step_{at_step:06d}"
        rendering_step = at_step
        videos = renderer.render(accelerator.unwrap_model(model), folder)
        rendering_step = None
        _log(accelerator, metrics_path, "validation", step=at_step, videos=[str(v) for v in videos])

    # ---- the loop -------------------------------------------------------------------------------
    with _StopFlag() as stop:
        bar = tqdm(
            total=total_steps, initial=start_step, desc="train", unit="step", file=sys.stderr,
            disable=not accelerator.is_main_process, dynamic_ncols=True,
        )
        started = time.perf_counter()
        losses = _StepLosses()

        def report(finished: list[tuple[int, float, float]]) -> None:
            for done_step, loss_value, lr in finished:
                elapsed = time.perf_counter() - started
                rate = (done_step - start_step) / elapsed if elapsed > 0 else 0.0
                peak = _peak_memory_bytes(device)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", peak=f"{peak / 2**30:.2f}GiB")
                _log(
                    accelerator, metrics_path, "step", step=done_step, total_steps=total_steps, loss=loss_value,
                    lr=lr, steps_per_s=round(rate, 4),
                    eta_s=round((total_steps - done_step) / rate, 1) if rate else None, peak_memory_bytes=peak,
                )

        try:
            if step == 0 and not validation.skip_initial_validation and accelerator.is_main_process:
                validate(0)
            while step < total_steps:
                step_loss = None
                for micro in range(accumulation):
                    micro_step = step * accumulation + micro
                    batch = next(batches)
                    sync = micro == accumulation - 1
                    with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                        loss = _training_loss(
                            model, batch, config, micro_step, accelerator.process_index, device, dtype, family
                        )
                        accelerator.backward(loss / accumulation)
                    part = loss.detach().float() / accumulation
                    step_loss = part if step_loss is None else step_loss + part
                apply_gradients(accelerator, optimizer, lr_scheduler, clip_parameters, config.optimization.max_grad_norm)
                step += 1
                losses.put(step, step_loss, lr_scheduler.get_last_lr()[0])
                report(losses.take())
                due_checkpoint = config.checkpoints.interval and step % config.checkpoints.interval == 0
                due_validation = validation.interval and step % validation.interval == 0
                if due_checkpoint or due_validation or step == total_steps:
                    report(losses.take(wait=True))
                if due_checkpoint and step < total_steps:
                    last_checkpoint = save(step)
                if due_validation and accelerator.is_main_process:
                    validate(step)
                if _stop_requested(stop, accelerator):  # any rank's stop
                    report(losses.take(wait=True))
                    last_checkpoint = save(step)
                    _log(accelerator, metrics_path, "train_end", status="stopped", step=step)
                    raise TrainingStopped(
                        f"Stopped at step {step} of {total_steps}; checkpoint saved in {last_checkpoint}. "
                        "Continue with: python scripts/train.py CONFIG --resume"
                    )
        except torch.OutOfMemoryError as error:
            report(losses.take(wait=True))
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            saved = save(step) if step > start_step else last_checkpoint
            _log(accelerator, metrics_path, "train_end", status="out_of_memory", step=step)
            kept = f" A checkpoint of step {step} is in {saved}." if saved else ""
            if rendering_step is not None:
                raise TrainingFailed(
                    f"Out of GPU memory while rendering the validation videos of step {rendering_step}.{kept} "
                    "Lower validation.video_dims or validation.videos_per_prompt, or turn validation off "
                    f"(validation.interval: null). {MEMORY_ADVICE}"
                ) from error
            raise TrainingFailed(f"Out of GPU memory at step {step + 1}.{kept} {MEMORY_ADVICE}") from error
        finally:
            bar.close()

    # ---- saving ---------------------------------------------------------------------------------
    if not checkpoints.checkpoint_dir(output_dir, step).exists():
        last_checkpoint = save(step)
    lora_path = None
    if accelerator.is_main_process and config.model.training_mode == "lora":
        lora_path = save_lora(accelerator.unwrap_model(model), config, output_dir / LORA_FILE, family=family.FAMILY)
    if validation.interval and step % validation.interval and accelerator.is_main_process:
        validate(step)
    _log(accelerator, metrics_path, "train_end", status="finished", step=step,
         lora=str(lora_path) if lora_path else None)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainingResult(output_dir, step, lora_path, last_checkpoint or checkpoints.latest_checkpoint(output_dir))


def build_training_parts(
    transformer: torch.nn.Module, config: TrainerConfig, device: torch.device, family: ModelFamily = ltx_video
):
    """(transformer, optimizer, lr scheduler, trained parameters) for a loaded base transformer.

    Shared with the benchmark, so what it times is exactly the trainer's setup.
    """
    set_seed(config.seed)  # the adapter's random initialisation, identical on every rank and every run
    transformer = prepare_transformer(transformer, config, device, quantize_exclude=family.QUANTIZE_EXCLUDE)
    trained = trainable_parameters(transformer)
    optimizer = build_optimizer(trained, config, device)
    return transformer, optimizer, build_lr_scheduler(optimizer, config), trained


def accelerate_parts(accelerator, transformer, optimizer, trained: list[torch.nn.Parameter], config: TrainerConfig):
    """(model, optimizer, parameters to clip) wrapped by accelerate for this process's device(s)."""
    # Under block offload diffusers' hooks decide where each block lives; accelerate must not move it.
    offloaded = config.acceleration.block_offload and accelerator.device.type == "cuda"
    model, optimizer = accelerator.prepare(transformer, optimizer, device_placement=[not offloaded, True])
    return model, optimizer, _clip_parameters(accelerator, model, trained)


# Where accelerate's optimizer wrapper and clipping reduce to torch's own calls.
_PLAIN_DISTRIBUTION = (DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU)


def apply_gradients(accelerator, optimizer, lr_scheduler, clip_parameters, max_grad_norm: float) -> None:
    """The end of every optimizer step: clip, step, advance the schedule, drop the gradients.

    Without fp16 loss scaling, on one device or under DDP, accelerate's wrappers reduce to torch's
    calls plus per-step overhead (two package look-ups in `step`, a signature inspection in
    `zero_grad`, DTensor checks in clipping: 0.33 ms per step, 2% of a tiny model's step), so the
    wrapped optimizer is called directly there. fp16, FSDP, DeepSpeed and XLA go through accelerate.
    """
    if accelerator.scaler is None and accelerator.distributed_type in _PLAIN_DISTRIBUTION:
        inner = getattr(optimizer, "optimizer", optimizer)
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(clip_parameters, max_grad_norm)
        inner.step()
        lr_scheduler.step()
        inner.zero_grad(set_to_none=True)
        return
    if max_grad_norm > 0:
        accelerator.clip_grad_norm_(clip_parameters, max_grad_norm)
    optimizer.step()
    lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def _clip_parameters(accelerator, model, trained: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    """Clipping walks only the trained tensors (frozen ones have no gradients); FSDP needs the full
    list for its own sharded clipping."""
    return list(model.parameters()) if accelerator.distributed_type == DistributedType.FSDP else trained


def _stop_requested(stop: _StopFlag, accelerator) -> bool:
    """Every rank must agree to stop at the same step, or the others would wait forever."""
    if accelerator.num_processes == 1:
        return stop.requested
    flag = torch.tensor([1.0 if stop.requested else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(flag, reduction="sum").item() > 0)


def _training_loss(
    model, batch: dict, config: TrainerConfig, micro_step: int, rank: int, device: torch.device, dtype: torch.dtype,
    family: ModelFamily = ltx_video,
):
    """One micro-batch of flow-matching loss; all randomness comes from the step's own seed.

    That seed is a function of the batch's place in the run (micro-step x world size + rank), so
    N data-parallel ranks draw what one process with N-fold accumulation draws for the same batches.
    Random draws come from a CPU generator (identical on every machine, which is what makes resume
    exact); the family's step (`ModelFamily.training_loss`) draws from it in a fixed order and
    computes everything else on `device`.
    """
    _save_rank_adapter(model, micro_step, rank)
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    seed = flow_matching.per_step_seed(config.seed, micro_step, rank, world)
    # LoRA dropout draws from the global generator of the model's device. Seed only that one:
    # torch.manual_seed would also queue seeding for every lazy backend (CUDA, XPU, MTIA), which
    # formats a stack trace each time, about half a millisecond per step.
    torch.random.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    return family.training_loss(model, batch, config, generator, device, dtype)


def _save_rank_adapter(model, micro_step: int, rank: int) -> None:
    """With LTXT_RANK_ADAPTERS_DIR set, every rank writes the adapter it starts each micro-step with
    (`rank<R>_micro<M>.safetensors`): a check that data-parallel ranks stay identical, which the
    multi-process tests read; only rank 0 saves anything otherwise. Off (and free) by default."""
    folder = os.environ.get(RANK_ADAPTERS_ENV)
    if folder:
        save_rank_adapter(model, Path(folder) / f"rank{rank}_micro{micro_step:06d}.safetensors")
