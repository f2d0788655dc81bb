"""The benchmark script's contract (the CI smoke test) and its FLOP arithmetic, for LTX-Video 0.9 and LTX-2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ltxtrainer.benchmark import (
    MODEL_SHAPES,
    BenchmarkOptions,
    BenchmarkRefused,
    ltx2_model_flops_per_step,
    model_flops_per_step,
    parse_resolution,
    run_benchmark,
)
from ltxtrainer.memory import ltx2_audio_tokens
from ltxtrainer.models.ltx_video import token_count

DOCUMENTED_KEYS = {
    "step_time_s", "plain_step_time_s", "ours_over_plain", "tokens_per_s", "model_flops_per_step", "mfu",
    "peak_memory_bytes", "device", "model", "width", "height", "frames", "batch_size", "rank",
    "quantization", "gradient_checkpointing", "mixed_precision", "estimated_memory_bytes",
}


def _run_script(repo_root, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(repo_root / "scripts" / "benchmark.py"), *args],
        capture_output=True, text=True, encoding="utf-8", timeout=300, cwd=repo_root,
    )


def test_tiny_benchmark_ends_with_one_json_line_of_the_documented_keys(repo_root):
    result = _run_script(repo_root, "--model", "tiny", "--resolution", "64x64x9", "--json", "--steps", "2", "--warmup", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert DOCUMENTED_KEYS <= set(report)
    assert report["model"] == "tiny" and (report["width"], report["height"], report["frames"]) == (64, 64, 9)
    assert len(report["step_times_s"]) == 2 and len(report["plain_step_times_s"]) == 2
    assert report["step_time_s"] > 0 and report["plain_step_time_s"] > 0
    assert report["ours_over_plain"] == pytest.approx(report["step_time_s"] / report["plain_step_time_s"], rel=1e-3)
    tokens = token_count(64, 64, 9)
    assert report["model_flops_per_step"] == model_flops_per_step(MODEL_SHAPES["tiny"], tokens)
    assert report["tokens_per_s"] == pytest.approx(tokens / report["step_time_s"], rel=1e-3)
    assert 0 < report["mfu"] < 1
    assert report["peak_memory_bytes"] > 0


def test_13b_on_a_cpu_is_refused_with_a_readable_reason(repo_root):
    result = _run_script(repo_root, "--model", "13b", "--resolution", "768x768x49", "--device", "cpu", "--json")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "13B" in result.stderr and "--allow-cpu-large" in result.stderr


def test_flops_match_the_field_notes_figures():
    thirteen = model_flops_per_step(MODEL_SHAPES["13b"], token_count(768, 768, 49))
    two = model_flops_per_step(MODEL_SHAPES["2b"], token_count(768, 512, 49))
    assert thirteen == pytest.approx(2.22e14, rel=0.01)
    assert two == pytest.approx(2.30e13, rel=0.01)
    assert model_flops_per_step(MODEL_SHAPES["2b"], token_count(768, 512, 49), batch_size=2) == 2 * two


def test_flops_grow_quadratically_only_through_attention():
    shape = MODEL_SHAPES["2b"]
    one, two = model_flops_per_step(shape, 1000), model_flops_per_step(shape, 2000)
    assert 2 * one < two < 2.5 * one


@pytest.mark.parametrize("text", ["768x512", "770x512x49", "768x512x48", "axbxc"])
def test_bad_resolutions_are_refused(text):
    with pytest.raises(BenchmarkRefused):
        parse_resolution(text)


def test_resolution_parses_width_height_frames():
    assert parse_resolution("768x512x49") == (768, 512, 49)


# ---- LTX-2 ---------------------------------------------------------------------------------------

def test_tiny_ltx2_benchmark_runs_the_joint_step_beside_the_plain_one(repo_root):
    result = _run_script(repo_root, "--model", "tiny-ltx2", "--resolution", "64x64x9", "--json", "--steps", "2",
                         "--warmup", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert DOCUMENTED_KEYS <= set(report)
    assert report["model"] == "tiny-ltx2" and report["with_audio"] is True
    assert report["audio_tokens_per_sample"] == ltx2_audio_tokens(9, True) == 9  # 25 a second at 24 fps
    assert len(report["step_times_s"]) == 2 and len(report["plain_step_times_s"]) == 2
    assert report["model_flops_per_step"] == ltx2_model_flops_per_step(MODEL_SHAPES["tiny-ltx2"], token_count(64, 64, 9), 9)
    assert report["peak_memory_bytes"] > 0 and report["estimated_memory_bytes"] > 0


def test_a_video_only_ltx2_step_feeds_one_audio_token():
    report = run_benchmark(BenchmarkOptions(model="tiny-ltx2", width=64, height=64, frames=9, steps=1, warmup=0,
                                            skip_plain=True, with_audio=False, device="cpu"))
    assert report["with_audio"] is False and report["audio_tokens_per_sample"] == 1
    assert report["model_flops_per_step"] < ltx2_model_flops_per_step(MODEL_SHAPES["tiny-ltx2"], 8, 9)


@pytest.mark.parametrize("model", ["ltx2", "ltx2.3"])
def test_ltx2_on_a_cpu_is_refused_after_counting_the_real_model_on_meta(model):
    with pytest.raises(BenchmarkRefused, match=r"(18\.9|19\.0) B parameters.*tiny-ltx2"):
        run_benchmark(BenchmarkOptions(model=model, width=768, height=512, frames=121, device="cpu"))


@pytest.mark.parametrize("model", ["tiny-ltx2", "ltx2", "ltx2.3"])
def test_ltx2_flops_count_every_linear_a_token_passes_four_times(model):
    """Without caption tokens, one more video token and two more audio tokens add 4 x the weights each
    token passes (the streams' linears inside the blocks, read from diffusers' model) plus the
    attention scores: 12·n·m·width for video, audio and the audio<->video pairs."""
    import torch
    from diffusers import LTX2VideoTransformer3DModel

    shape = MODEL_SHAPES[model]
    with torch.device("meta"):
        transformer = LTX2VideoTransformer3DModel(**{k: v for k, v in shape.items() if k != "_class_name"})
    video_weights = audio_weights = 0
    for name, module in transformer.named_modules():
        if not isinstance(module, torch.nn.Linear) or not name.startswith("transformer_blocks.") or "to_gate" in name:
            continue
        attention = name.split(".")[2]
        leaf = name.split(".")[-1] if not name.endswith("to_out.0") else "to_out"
        reads = {"attn1": "video", "attn2": "video" if leaf in ("to_q", "to_out") else "text",
                 "audio_attn1": "audio", "audio_attn2": "audio" if leaf in ("to_q", "to_out") else "text",
                 "audio_to_video_attn": "video" if leaf in ("to_q", "to_out") else "audio",
                 "video_to_audio_attn": "audio" if leaf in ("to_q", "to_out") else "video",
                 "ff": "video", "audio_ff": "audio"}[attention]
        if reads == "video":
            video_weights += module.weight.numel()
        elif reads == "audio":
            audio_weights += module.weight.numel()
    one = ltx2_model_flops_per_step(shape, 1, 1, text_tokens=0)
    two = ltx2_model_flops_per_step(shape, 2, 3, text_tokens=0)
    linear = 4 * (video_weights + 2 * audio_weights)  # one more video token and two more audio tokens
    video = shape["num_attention_heads"] * shape["attention_head_dim"]
    audio = shape["audio_num_attention_heads"] * shape["audio_attention_head_dim"]
    attention = 12 * ((2 * 2 - 1) * video + (3 * 3 - 1) * audio + 2 * (2 * 3 - 1) * audio)
    assert two - one == linear + shape["num_layers"] * attention
