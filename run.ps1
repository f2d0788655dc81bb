# ltxtrainer launcher for Windows with Anaconda or Miniconda Python (see INSTALLATION_CN.md).
# Double-click run.cmd, or in PowerShell:
#   .\run.ps1            create/refresh the virtual environment if needed, then open the GUI
#   .\run.ps1 test       install the test extras and run the whole test suite
#   .\run.ps1 demo       run the end-to-end demo on the tiny models (any machine, CPU is fine)
#   .\run.ps1 env        print the environment report
# The interpreter that creates .venv: $env:PYTHON if set, else the first Anaconda/Miniconda found:
# the active environment ($env:CONDA_PREFIX), the installers' registry entries
# (HKCU/HKLM\Software\Python\ContinuumAnalytics\*\InstallPath), conda on PATH, then anaconda3 /
# miniconda3 folders in the user profile, AppData\Local, ProgramData and the root of every drive.
# Other overrides as in run.sh: LTXT_VENV, TORCH_SPEC, TORCH_INDEX_URL, PIP_INDEX_URL.

. (Join-Path $PSScriptRoot 'scripts\launcher_windows.ps1')

$python = $env:PYTHON
if (-not $python) { $python = Find-CondaPython }
if (-not $python -and -not (Test-Path -LiteralPath (Join-Path $PSScriptRoot '.venv\Scripts\python.exe'))) {
    Write-Step 'Anaconda/Miniconda Python not found (looked in the registry, on PATH and in the usual anaconda3/miniconda3 folders).'
    Write-Step 'Install Anaconda or Miniconda, or use run_system_python.cmd with Python from python.org,'
    Write-Step 'or set $env:PYTHON to a python.exe (3.10-3.12) before running .\run.ps1.'
    Wait-IfWindowCloses 1
    exit 1
}
Start-Ltxtrainer -Root $PSScriptRoot -BasePython "$python" -Arguments $args
