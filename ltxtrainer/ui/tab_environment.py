"""Tab 6, 环境与模型 / Environment and models: scripts/check_env.py's report, and the header line.

The check runs as a subprocess (it imports torch and asks nvidia-smi) once in the background
when the app is built, so opening the page does not wait for it; the button runs it again.
"""

from __future__ import annotations

import threading

import gradio as gr

from ltxtrainer.ui import actions
from ltxtrainer.ui.i18n import t

_report: dict = {}
_lock = threading.Lock()
_ready = threading.Event()


def refresh_report(ui) -> dict:
    """Run the check now; the result (or the reason it failed) replaces the cached one."""
    try:
        report = actions.environment_report(ui.paths)
    except (RuntimeError, OSError, ValueError) as error:
        report = {"error": str(error)}
    with _lock:
        _report.clear()
        _report.update(report)
    _ready.set()
    return report


def cached_report(ui, timeout_s: float = 120) -> dict:
    _ready.wait(timeout_s)
    with _lock:
        return dict(_report)


def models_lines(report: dict, lang: str) -> list[str]:
    lines = []
    for model in report.get("models", []):
        if model.get("kind") != "ltx-video":
            lines.append(t("env.model_other", lang, name=model["name"]))
        elif model.get("ok"):
            lines.append(t("env.model_ok", lang, name=model["name"], variant=model.get("variant", "?")))
        else:
            lines.append(t("env.model_bad", lang, name=model["name"], problems="; ".join(model.get("problems", []))))
    return lines or [t("header.no_models", lang)]


def header_text(ui, lang: str) -> str:
    """One line for the top of the page: the GPU and its memory, and ✅/❌ per model folder."""
    report = cached_report(ui)
    if "error" in report:
        return t("env.failed", lang, error=report["error"])
    usable = [gpu for gpu in report.get("gpus", []) if gpu.get("usable_by_torch")]
    gpu_line = (
        "; ".join(t("header.gpu", lang, name=g["name"], free=g.get("free_memory_gb"), total=g.get("total_memory_gb"))
                  for g in usable)
        if usable else t("header.no_gpu", lang)
    )
    return gpu_line + "  \n" + " · ".join(models_lines(report, lang))


def report_markdown(report: dict, lang: str) -> str:
    if "error" in report:
        return t("env.failed", lang, error=report["error"])
    torch = report.get("torch") or {}
    driver = report.get("driver") or {}
    disk = report.get("disk") or {}
    ffmpeg = report.get("ffmpeg") or {}
    lines = [
        f"- Python {report.get('python')} · {report.get('platform')}",
        f"- torch {torch.get('version')} (CUDA {torch.get('cuda') or '—'}, GPU usable: {torch.get('cuda_available')})",
        f"- NVIDIA driver {driver.get('version') or '—'} (CUDA ≤ {driver.get('cuda') or '—'})",
        f"- disk {disk.get('free_gb')} / {disk.get('total_gb')} GB free · ffmpeg {ffmpeg.get('path') or '—'}",
        "",
        *[f"- {line}" for line in models_lines(report, lang)],
    ]
    problems = report.get("problems") or []
    if problems:
        lines += ["", f"**{t('env.problems', lang)}**"]
        for problem in problems:
            fix = f" — {problem['fix']}" if problem.get("fix") else ""
            lines.append(f"- [{problem['severity']}] {problem['message']}{fix}")
    else:
        lines += ["", t("env.all_good", lang)]
    return "\n".join(lines)


def build(ui) -> None:
    lang = ui.language
    if not _ready.is_set():
        threading.Thread(target=refresh_report, args=(ui,), daemon=True, name="ltxtrainer-env-check").start()
    check = ui.tr(gr.Button(t("env.check", lang), variant="primary"), value="env.check")
    report = gr.Markdown()

    def run_check(lang):
        return report_markdown(refresh_report(ui), lang)

    check.click(run_check, inputs=ui.lang, outputs=report, api_name="check_env")
