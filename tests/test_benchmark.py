"""The benchmark script's contract (the CI smoke test) and its FLOP arithmetic."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ltxtrainer.benchmark import MODEL_SHAPES, BenchmarkRefused, model_flops_per_step, parse_resolution
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
