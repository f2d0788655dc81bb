"""Print what this machine can train with and what to fix: a table for people, --json for the GUI.

It is a report, so it exits 0 even without a GPU or a model; non-zero only if the check itself
cannot run.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import json  # noqa: E402

from ltxtrainer.env_check import EnvReport, check_environment  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
MARKS = {"error": ("✗ error", "red"), "warning": ("! warning", "yellow"), "info": ("i info", "cyan")}


def print_table(report: EnvReport) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    table = Table(title="ltxtrainer environment", show_lines=False)
    table.add_column("item", style="bold")
    table.add_column("state", overflow="fold")
    table.add_row("Python", f"{report.python} on {report.platform}")
    torch = report.torch
    if torch["version"] is None:
        table.add_row("torch", "[red]not installed[/red]")
    else:
        build = f"CUDA {torch['cuda']} build" if torch["cuda"] else "CPU-only build"
        usable = "GPU usable" if torch["cuda_available"] else "no GPU usable"
        table.add_row("torch", f"{torch['version']} ({build}, {usable})")
    driver = report.driver
    if driver["nvidia_smi"] is None:
        table.add_row("NVIDIA driver", "none (nvidia-smi not found)")
    else:
        table.add_row("NVIDIA driver", f"{driver['version']} (supports CUDA up to {driver['cuda']})")
    for gpu in report.gpus:
        bf16 = {True: "bf16 ✓", False: "no bf16", None: "bf16 unknown"}[gpu.bf16]
        table.add_row(
            f"GPU {gpu.index}",
            f"{gpu.name}: {gpu.free_memory_gb} / {gpu.total_memory_gb} GB free, {bf16}"
            + ("" if gpu.usable_by_torch else ", [red]not usable by torch[/red]"),
        )
    if not report.gpus:
        table.add_row("GPU", "[yellow]none: training runs on CPU[/yellow]")
    table.add_row(
        "disk",
        Text(f"{report.disk['free_gb']} GB free of {report.disk['total_gb']} GB at {report.disk['path']}"),
    )
    ffmpeg = report.ffmpeg
    table.add_row(
        "ffmpeg",
        Text(f"{ffmpeg['path']} ({ffmpeg['source']})") if ffmpeg["path"] else "[yellow]not found[/yellow]",
    )
    for state in report.models:
        if state.kind != "ltx-video":
            table.add_row(f"model {state.name}", "not an LTX-Video folder (not checked)")
        elif state.ok:
            table.add_row(f"model {state.name}", f"[green]✓ complete[/green] (LTX-Video {state.variant})")
        else:
            # Text, not markup: a path with brackets in it must print as it is.
            table.add_row(f"model {state.name}", Text("✗ " + "\n".join(state.problems), style="red"))
    if not report.models:
        table.add_row("models", "no model folders")
    console.print(table)
    for problem in report.problems:
        label, style = MARKS[problem.severity]
        console.print(Text(label, style=style) + Text(" " + problem.message), highlight=False)
        if problem.fix:
            console.print(f"    fix: {problem.fix}", highlight=False, markup=False)
    if not report.problems:
        console.print("[green]Everything needed for training is in place.[/green]")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (for the GUI)")
    parser.add_argument(
        "--models-dir", type=Path, default=REPO_ROOT / "models", help="folder holding model folders"
    )
    parser.add_argument(
        "--outputs-dir", type=Path, default=REPO_ROOT / "outputs", help="where runs are written"
    )
    args = parser.parse_args()
    for stream in (sys.stdout, sys.stderr):  # a GBK console must not turn a ✓ into a traceback
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    try:
        report = check_environment(args.models_dir, args.outputs_dir)
    except Exception as error:  # the one failure this report cannot describe is its own
        print(f"The environment check itself could not run: {error!r}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
