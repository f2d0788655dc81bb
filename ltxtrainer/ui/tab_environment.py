"""Tab 6, 环境与模型 / Environment and models: scripts/check_env.py's report, and the header line.

The full check runs as a subprocess (it imports torch; the GUI does not) once in the background
when the app is built, and its report is on the tab when the page opens; the button runs it
again. The header needs no torch: the card from nvidia-smi and the model folders' checks, fast
enough to redo on every language switch.
"""

from __future__ import annotations

import re
import threading

import gradio as gr

from ltxtrainer import env_check
from ltxtrainer.ui import actions, memory_line
from ltxtrainer.ui.i18n import t
from ltxtrainer.ui.workspace import AppPaths

# The last report of each workspace (one per app; a test process builds several apps), and whether
# its first background check has finished.
_reports: dict[AppPaths, dict] = {}
_lock = threading.Lock()
_ready: dict[AppPaths, threading.Event] = {}
POLL_S = 2.0  # how often an open page looks whether the background check has finished

# ltxtrainer.models.folder's problem lines ("<what>: <path>") and their strings-table keys.
_MODEL_PROBLEMS = (
    (re.compile(r"^folder not found: (?P<path>.+)$"), "envm.folder_not_found"),
    (re.compile(r"^missing subfolder (?P<what>\S+): (?P<path>.+)$"), "envm.missing_subfolder"),
    (re.compile(r"^missing weights \(\*\.safetensors\) in (?P<path>.+)$"), "envm.missing_weights"),
    (re.compile(r"^missing tokenizer\.json or spiece\.model in (?P<path>.+)$"), "envm.missing_tokenizer"),
    (re.compile(r"^only pickle \(\.bin\) weights in (?P<path>.+?);"), "envm.only_bin"),
    (re.compile(r"^missing (?P<what>.+?): (?P<path>.+)$"), "envm.missing_file"),
    (re.compile(r"^empty file \(download incomplete\?\): (?P<path>.+)$"), "envm.empty_file"),
    (re.compile(r"^unreadable JSON \((?P<error>.*)\): (?P<path>.+)$"), "envm.bad_json"),
)


def refresh_report(paths: AppPaths) -> dict:
    """Run the check now; the result (or the reason it failed) replaces the cached one."""
    try:
        report = actions.environment_report(paths)
    except (RuntimeError, OSError, ValueError) as error:
        report = {"error": str(error)}
    with _lock:
        _reports[paths] = report
    ready(paths).set()
    return report


def ready(paths: AppPaths) -> threading.Event:
    """Set once the first check of this workspace has finished."""
    with _lock:
        return _ready.setdefault(paths, threading.Event())


def cached_report(paths: AppPaths) -> dict:
    """The workspace's last report, or {} while its first background check still runs (it imports torch: seconds)."""
    with _lock:
        return dict(_reports.get(paths, {}))


def model_problem_text(problem: str, lang: str) -> str:
    """One of models.folder's problem lines in `lang` (the file paths stay as they are)."""
    for pattern, key in _MODEL_PROBLEMS:
        match = pattern.match(problem)
        if match:
            return t(key, lang, **match.groupdict())
    return t("envm.other", lang, problem=problem)


def models_lines(states: list[dict], lang: str, brief: bool = False) -> list[str]:
    """✅/❌/➖ per model folder; `brief` (the header) counts a broken folder's problems instead of listing them."""
    lines = []
    for model in states:
        if model.get("kind") != "ltx-video":
            lines.append(t("env.model_other", lang, name=model["name"]))
        elif model.get("ok"):
            variant = model.get("variant", "custom")
            variant = t(f"env.variant.{variant}", lang) if variant in ("tiny", "custom") else variant.upper()
            family = t(f"family.{model.get('family') or 'ltx_video'}", lang)
            lines.append(t("env.model_ok", lang, name=model["name"], family=family, variant=variant))
        elif brief:
            lines.append(t("header.model_bad", lang, name=model["name"], count=len(model.get("problems", []))))
        else:
            problems = t("memory.change.separator", lang).join(
                model_problem_text(problem, lang) for problem in model.get("problems", []))
            lines.append(t("env.model_bad", lang, name=model["name"], problems=problems))
    return lines or [t("header.no_models", lang)]


def header_text(paths: AppPaths, lang: str) -> str:
    """The top of the page: the card and its memory, and ✅/❌ per model folder (no torch, quick)."""
    card = memory_line.detect_card()
    gpu_line = (t("header.gpu", lang, name=card.name, total=card.total_bytes / memory_line.GIB)
                if card else t("header.no_gpu", lang))
    states = [vars(state) for state in env_check.scan_models(paths.models)]
    return gpu_line + "  \n" + " · ".join(models_lines(states, lang, brief=True))


def problem_text(problem: dict, lang: str) -> str:
    """A problem of the report in `lang`: its code's strings, with the report's particulars."""
    code, values = problem.get("code"), dict(problem.get("values") or {})
    severity = t(f"env.severity.{problem['severity']}", lang)
    if not code:
        return f"- [{severity}] {problem['message']}"
    if code == "model_incomplete":
        values["problems"] = t("memory.change.separator", lang).join(
            model_problem_text(line, lang) for line in values["problems"])
    if code == "no_gpu":
        values["where"] = t("env.smi_found" if values.pop("nvidia_smi_found") else "env.smi_missing", lang)
    return f"- [{severity}] {t(f'envp.{code}', lang, **values)} — {t(f'envp.{code}.fix', lang, **values)}"


def report_markdown(report: dict, lang: str) -> str:
    if not report:
        return t("env.running", lang)
    if "error" in report:
        return t("env.failed", lang, error=report["error"])
    torch = report.get("torch") or {}
    driver = report.get("driver") or {}
    disk = report.get("disk") or {}
    ffmpeg = report.get("ffmpeg") or {}
    yes_no = t("env.yes" if torch.get("cuda_available") else "env.no", lang)
    lines = [
        f"- Python {report.get('python')} · {report.get('platform')}",
        "- " + t("env.torch", lang, version=torch.get("version") or "—", cuda=torch.get("cuda") or "—", usable=yes_no),
        "- " + t("env.driver", lang, version=driver.get("version") or "—", cuda=driver.get("cuda") or "—"),
        "- " + t("env.disk", lang, free=disk.get("free_gb"), total=disk.get("total_gb"), path=disk.get("path")),
        "- " + t("env.ffmpeg", lang, path=ffmpeg.get("path") or "—"),
        "",
        *[f"- {line}" for line in models_lines(report.get("models", []), lang)],
    ]
    problems = report.get("problems") or []
    if problems:
        lines += ["", f"**{t('env.problems', lang)}**", *[problem_text(problem, lang) for problem in problems]]
    else:
        lines += ["", t("env.all_good", lang)]
    return "\n".join(lines)


def build(ui) -> None:
    lang = ui.language
    if not ready(ui.paths).is_set():
        threading.Thread(target=refresh_report, args=(ui.paths,), daemon=True, name="ltxtrainer-env-check").start()
    check = ui.tr(gr.Button(t("env.check", lang), variant="primary"), value="env.check")
    # The report is the tab's content from the first look: every page load and language switch
    # shows the background check's report (or that it is still running, without waiting for it:
    # the page's labels arrive in the same update), and a timer fills it in once it is ready.
    report = ui.tr(gr.Markdown(t("env.running", lang)), value=lambda lang: report_markdown(cached_report(ui.paths), lang))
    waiting = gr.Timer(POLL_S)

    def fill_in(lang):
        if not ready(ui.paths).is_set():
            return gr.skip(), gr.skip()
        return report_markdown(cached_report(ui.paths), lang), gr.Timer(active=False)

    def run_check(lang):
        return report_markdown(refresh_report(ui.paths), lang)

    waiting.tick(fill_in, inputs=ui.lang, outputs=[report, waiting], api_visibility="private", show_progress="hidden")
    check.click(run_check, inputs=ui.lang, outputs=report, api_name="check_env")
