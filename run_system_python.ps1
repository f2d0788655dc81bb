# ltxtrainer launcher for Windows with Python from python.org (see INSTALLATION_CN.md).
# Double-click run_system_python.cmd, or in PowerShell:
#   .\run_system_python.ps1            create/refresh the virtual environment if needed, then open the GUI
#   .\run_system_python.ps1 test       install the test extras and run the whole test suite
#   .\run_system_python.ps1 demo       run the end-to-end demo on the tiny models (CPU is fine)
#   .\run_system_python.ps1 env        print the environment report
# The interpreter that creates .venv: $env:PYTHON if set, else `python` on PATH, else the py
# launcher (py -3.12, then -3.11, -3.10, -3), which python.org's installer always installs even
# when "Add python.exe to PATH" is left unticked.
# Other overrides as in run.sh: LTXT_VENV, TORCH_SPEC, TORCH_INDEX_URL, PIP_INDEX_URL.

. (Join-Path $PSScriptRoot 'scripts\launcher_windows.ps1')

$python = $env:PYTHON
if (-not $python) {
    $found = Get-Command python -CommandType Application -ErrorAction SilentlyContinue | Select-Object -First 1
    # Windows ships a `python` that only opens the Microsoft Store; it cannot create a venv.
    if ($found -and $found.Source -notlike '*\WindowsApps\*') { $python = $found.Source }
}
if (-not $python) { $python = Find-PyLauncherPython }
if (-not $python -and -not (Test-Path -LiteralPath (Join-Path $PSScriptRoot '.venv\Scripts\python.exe'))) {
    Write-Step 'No Python found: none on PATH (the Microsoft Store shortcut does not count) and no py launcher.'
    Write-Step 'Install Python 3.10-3.12 from python.org, or use run.cmd with Anaconda.'
    Wait-IfWindowCloses 1
    exit 1
}
Start-Ltxtrainer -Root $PSScriptRoot -BasePython "$python" -Arguments $args
