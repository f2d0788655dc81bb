"""The launchers' decisions (run.sh, run.ps1, run_system_python.ps1): which torch build, the torch pin,
which packages a platform gets. They run `ltxtrainer/install_plan.py` by its path in a bare venv,
so these tests do the same, with a fake `nvidia-smi` on PATH standing in for the driver."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from ltxtrainer.install_plan import choose_torch_index, cuda_advice, parse_gpu_query, torch_constraint

REPO = Path(__file__).resolve().parents[1]
PLAN = str(REPO / "ltxtrainer" / "install_plan.py")
CU = "https://download.pytorch.org/whl/"


@pytest.mark.parametrize(
    ("platform", "driver", "capability", "build"),
    [
        ("linux", None, None, "cpu"),  # no NVIDIA driver
        ("windows", (581, 57), (8, 9), "cu128"),  # RTX 4090, current driver
        ("windows", (528, 33), (8, 6), "cu128"),  # CUDA 12.0 driver runs 12.8 wheels (minor version compatibility)
        ("windows", (528, 24), (8, 6), "cu118"),  # just below the CUDA 12 minimum on Windows
        ("linux", (525, 60, 13), (8, 6), "cu128"),
        ("linux", (525, 60, 12), (8, 6), "cu118"),
        ("windows", (516, 94), (7, 5), "cu118"),  # CUDA 11.7 driver
        ("windows", (452, 39), (7, 5), "cu118"),
        ("windows", (451, 82), (7, 5), "cpu"),  # CUDA 11.0 driver: nothing current runs
        ("linux", (450, 80, 2), None, "cu118"),  # driver too old to report compute_cap
        ("windows", (560, 94), (6, 1), "cu126"),  # GTX 1080: cu128 has no Pascal kernels
        ("windows", (560, 94), (7, 0), "cu126"),  # Volta
        ("windows", (560, 94), (5, 2), "cu126"),  # GTX 970
        ("windows", (472, 12), (6, 1), "cu118"),  # Pascal on a CUDA 11 driver
        ("windows", (560, 94), (3, 7), "cpu"),  # Kepler: no torch 2.x build at all
        ("windows", (572, 16), (12, 0), "cu128"),  # RTX 5090 on R570
        ("windows", (566, 36), (12, 0), "cpu"),  # RTX 5090 on a pre-Blackwell driver: update it
        ("linux", (570, 86, 15), (10, 0), "cu128"),  # B200
    ],
)
def test_the_torch_build_matches_driver_and_card(platform, driver, capability, build):
    choice = choose_torch_index(platform, driver, capability)
    assert choice.index_url == CU + build
    assert choice.reason
    if build == "cpu" and driver is not None and capability and capability >= (5, 0):
        assert "update the NVIDIA driver" in choice.reason


@pytest.mark.parametrize(
    ("output", "gpus"),
    [
        ("581.57, 8.9\n", [((581, 57), (8, 9))]),
        ("550.54.15, 8.0\n550.54.15, 9.0\n", [((550, 54, 15), (8, 0)), ((550, 54, 15), (9, 0))]),
        ("472.12\n", [((472, 12), None)]),
        ("472.12, [N/A]\n", [((472, 12), None)]),
        ("", []),
        ("No devices were found\n", []),
    ],
)
def test_nvidia_smi_answers_are_read(output, gpus):
    assert parse_gpu_query(output) == gpus


def fake_nvidia_smi(folder: Path, answer: str | None, code: int = 0) -> dict[str, str]:
    """A `nvidia-smi` that prints `answer` for the two-field query and fails for anything else."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        f'case "$1" in --query-gpu=driver_version,compute_cap) printf "{answer or ""}"; exit {code};; esac\n'
        "exit 9\n",
        encoding="utf-8",
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    env = {key: value for key, value in os.environ.items() if key != "TORCH_INDEX_URL"}
    env["PATH"] = f"{folder}{os.pathsep}{env['PATH']}"
    return env


@pytest.mark.skipif(os.name == "nt", reason="the fake nvidia-smi is a shell script")
@pytest.mark.parametrize(
    ("answer", "expected"),
    [("560.94, 6.1\n", "cu126"), ("570.86.15, 8.9\n", "cu128"), (None, "cpu")],
)
def test_the_launchers_command_prints_the_index_for_this_driver(tmp_path, answer, expected):
    env = fake_nvidia_smi(tmp_path / "bin", answer, code=0 if answer else 9)
    if answer is None:  # no driver at all: no nvidia-smi on PATH
        env["PATH"] = f"/usr/bin{os.pathsep}/bin"
    result = subprocess.run([sys.executable, "-I", PLAN, "torch-index"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == CU + expected
    assert expected in result.stderr  # the launcher shows which build and why


def test_torch_index_url_overrides_the_choice(tmp_path):
    env = {**fake_nvidia_smi(tmp_path / "bin", "560.94, 8.9\n"), "TORCH_INDEX_URL": "pypi"}
    result = subprocess.run([sys.executable, "-I", PLAN, "torch-index"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.strip() == "pypi"


@pytest.mark.parametrize(("metadata", "pin"), [("2.14.1", "torch==2.14.1\n"), ("2.7.1+cu128", "torch==2.7.1+cu128\n")])
def test_the_pin_is_the_metadata_version(metadata, pin):
    assert torch_constraint(metadata) == pin


def bare_venv_with_torch(folder: Path, runtime_version: str, metadata_version: str) -> Path:
    """A venv holding a stand-in torch whose runtime `__version__` and wheel metadata differ, as PyPI's do."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=60)
    python = folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text(f'__version__ = "{runtime_version}"\n', encoding="utf-8")
    info = site / f"torch-{metadata_version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {metadata_version}\n",
                                   encoding="utf-8")
    (info / "RECORD").write_text("torch/__init__.py,,\n", encoding="utf-8")
    return python


def test_a_pypi_torch_keeps_its_pin_through_pip(tmp_path):
    """PyPI's torch says 2.14.1+cu130 at runtime but 2.14.1 to pip; the pin must be one pip can satisfy."""
    python = bare_venv_with_torch(tmp_path / "venv", "2.14.1+cu130", "2.14.1")
    constraint = tmp_path / "torch-constraint.txt"
    subprocess.run([str(python), "-I", PLAN, "constraint", str(constraint)], check=True, timeout=60)
    assert constraint.read_text(encoding="utf-8") == "torch==2.14.1\n"
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}  # no machine-wide index or find-links
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--dry-run", "--no-index",
         "-c", str(constraint), "torch"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "already satisfied" in result.stdout


@pytest.mark.parametrize(
    ("platform", "machine", "installed"),
    [
        ("linux", "x86_64", True), ("linux", "aarch64", True), ("win32", "AMD64", True),
        ("win32", "ARM64", False), ("darwin", "arm64", False), ("darwin", "x86_64", False), ("linux", "armv7l", False),
    ],
)
def test_bitsandbytes_is_installed_where_wheels_exist(platform, machine, installed):
    lines = (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines()
    requirement = next(Requirement(line) for line in lines if line.startswith("bitsandbytes"))
    assert requirement.marker.evaluate({"sys_platform": platform, "platform_machine": machine}) is installed
    assert "bitsandbytes" not in (REPO / "requirements-test.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("torch_cuda", "available", "driver", "says"),
    [
        (None, False, None, None),  # no GPU, CPU torch: nothing to say
        ("12.8", True, (581, 57), None),
        (None, False, (581, 57), "CPU build"),
        ("12.8", False, (472, 12), "Update the NVIDIA driver"),
    ],
)
def test_a_torch_that_cannot_use_the_gpu_says_what_to_update(torch_cuda, available, driver, says):
    advice = cuda_advice(torch_cuda, available, driver)
    assert advice is None if says is None else says in advice


# ---- syntax of the Windows launchers, checked without Windows --------------------------------------

def shipped(pattern: str) -> list[Path]:
    """Every file of the project matching `pattern`, outside hidden folders (.venv, node_modules under .ci)
    and the user's data folders."""
    skip = {"models", "outputs", "train_date", "datasets", "node_modules"}
    return sorted(path for path in REPO.rglob(pattern)
                  if not any(part.startswith(".") or part in skip for part in path.relative_to(REPO).parts[:-1]))


PS1_FILES = shipped("*.ps1")
CMD_FILES = shipped("*.cmd")
PS1CHECK = REPO / ".ci" / "ps1check"


def test_every_launcher_is_checked():
    assert {"run.ps1", "run_system_python.ps1", "launcher_windows.ps1"} <= {path.name for path in PS1_FILES}
    assert {"run.cmd", "run_system_python.cmd"} <= {path.name for path in CMD_FILES}


@pytest.mark.parametrize("path", PS1_FILES + CMD_FILES, ids=lambda path: path.name)
def test_launchers_are_ascii(path):
    """Windows PowerShell 5.1 reads a .ps1 without a BOM in the ANSI code page (GBK on Chinese
    Windows), and cmd.exe in the OEM one: any non-ASCII byte turns into something else."""
    assert path.read_bytes().isascii()


def ps1_syntax_errors(paths: list[Path]) -> subprocess.CompletedProcess:
    """Run the tree-sitter PowerShell parser (.ci/ps1check) over `paths`, installing it once (pinned, ~1 min)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the PowerShell syntax check (tree-sitter-powershell)")
    if not (PS1CHECK / "node_modules" / "tree-sitter-powershell").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=PS1CHECK, check=True, timeout=900,
                       capture_output=True)
    return subprocess.run([node, str(PS1CHECK / "check.mjs"), *map(str, paths)], capture_output=True, text=True,
                          timeout=120)


def test_powershell_launchers_parse():
    result = ps1_syntax_errors(PS1_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "broken",
    [
        "function Start-It {\n    if ($x) { Write-Host 'a'\n}\n",  # a brace left open
        "$name = \"unterminated\nWrite-Host $name\n",  # a string left open
        "Invoke-Native $py @('-m', 'pip'\n",  # an array left open
    ],
)
def test_the_powershell_check_finds_broken_syntax(tmp_path, broken):
    path = tmp_path / "broken.ps1"
    path.write_text(broken, encoding="utf-8", newline="\r\n")
    result = ps1_syntax_errors([path])
    assert result.returncode == 1 and "broken.ps1:" in result.stdout


def cmd_problems(path: Path) -> list[str]:
    """What makes cmd.exe misread a batch file: LF endings (labels and blocks go wrong), unbalanced
    parentheses (blocks) or double quotes on a line, and a `goto`/`call` to a label that is not there."""
    data = path.read_bytes()
    problems = []
    if data.replace(b"\r\n", b"").count(b"\n") or not data.endswith(b"\r\n"):
        problems.append("lines must end with CRLF")
    lines = data.decode("ascii", errors="replace").split("\r\n")
    labels = {line.strip()[1:].split()[0].lower() for line in lines if line.strip().startswith(":")
              and not line.strip().startswith("::") and len(line.strip()) > 1}
    depth = 0
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.lower().startswith(("rem ", "::")) or stripped.lower() == "rem":
            continue
        if line.count('"') % 2:
            problems.append(f"line {number}: unbalanced double quotes")
        unquoted = "".join(part for index, part in enumerate(line.split('"')) if index % 2 == 0)
        for char in unquoted.replace("^(", "").replace("^)", ""):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth < 0:
                problems.append(f"line {number}: ')' without '('")
                depth = 0
        words = unquoted.replace("(", " ").replace(")", " ").split()
        for index, word in enumerate(words[:-1]):
            target = words[index + 1]
            if word.lower() == "goto" or (word.lower() == "call" and target.startswith(":")):
                label = target.lstrip(":").lower()
                if label != "eof" and label not in labels:
                    problems.append(f"line {number}: no label :{label}")
    if depth:
        problems.append(f"{depth} '(' never closed")
    return problems


@pytest.mark.parametrize("path", CMD_FILES, ids=lambda path: path.name)
def test_cmd_launchers_are_well_formed_and_call_their_powershell_script(path):
    assert cmd_problems(path) == []
    text = path.read_text(encoding="ascii")
    assert f'-ExecutionPolicy Bypass -File "%~dp0{path.stem}.ps1" %*' in text
    assert "pause" in text  # a failure stays on screen after a double-click


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("@echo off\nexit /b 0\n", "CRLF"),
        ("@echo off\r\nif 1==1 (\r\n  echo yes\r\n", "never closed"),
        ("@echo off\r\necho done)\r\n", "without '('"),
        ('@echo off\r\npowershell -File "%~dp0run.ps1 %*\r\n', "double quotes"),
        ("@echo off\r\nif errorlevel 1 goto failed\r\n:fail\r\npause\r\n", "no label :failed"),
    ],
)
def test_the_cmd_check_finds_what_breaks_a_batch_file(tmp_path, text, problem):
    path = tmp_path / "broken.cmd"
    path.write_bytes(text.encode("ascii"))
    assert any(problem in found for found in cmd_problems(path))


def test_the_chinese_guide_gives_the_same_driver_rule_as_the_launchers():
    """INSTALLATION_CN.md's table is what a user checks their driver against; it must be the code's rule."""
    from ltxtrainer import install_plan

    guide = (REPO / "INSTALLATION_CN.md").read_text(encoding="utf-8")
    for versions in (install_plan.CUDA12_DRIVER, install_plan.CUDA11_DRIVER, install_plan.BLACKWELL_DRIVER):
        assert ".".join(map(str, versions["windows"])) in guide
    for build in ("cu128", "cu126", "cu118"):
        assert build in guide
    assert "run.cmd" in guide and "NO_PROXY" in guide and "PIP_INDEX_URL" in guide and "Sysmem Fallback" in guide
