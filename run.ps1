# ltxtrainer launcher for Windows with Anaconda Python (see INSTALLATION_CN.md).
#   .\run.ps1            create/refresh the virtual environment if needed, then open the GUI
#   .\run.ps1 test       install the test extras and run the whole test suite
#   .\run.ps1 demo       run the end-to-end demo on the tiny models (any machine, CPU is fine)
#   .\run.ps1 env        print the environment report
# The interpreter that creates .venv: $env:PYTHON if set, else the active conda environment
# ($env:CONDA_PREFIX), else C:\ProgramData\anaconda3 or %USERPROFILE%\anaconda3.
# Other overrides as in run.sh: LTXT_VENV, TORCH_SPEC, TORCH_INDEX_URL.

. (Join-Path $PSScriptRoot 'scripts\launcher_windows.ps1')

$candidates = @(
    $env:PYTHON,
    $(if ($env:CONDA_PREFIX) { Join-Path $env:CONDA_PREFIX 'python.exe' }),
    'C:\ProgramData\anaconda3\python.exe',
    $(if ($env:USERPROFILE) { Join-Path $env:USERPROFILE 'anaconda3\python.exe' })
) | Where-Object { $_ }
$python = $candidates | Where-Object { Test-Path -LiteralPath $_ } | Select-Object -First 1
if (-not $python -and -not (Test-Path -LiteralPath (Join-Path $PSScriptRoot '.venv\Scripts\python.exe'))) {
    Write-Step "Anaconda Python not found (looked for: $($candidates -join ', '))."
    Write-Step 'Install Anaconda, set $env:PYTHON to a python.exe, or use .\run_system_python.ps1.'
    if (Test-StartedForThisScript) { Read-Host 'Press Enter to close' | Out-Null }
    exit 1
}
Start-Ltxtrainer -Root $PSScriptRoot -BasePython "$python" -Arguments $args
