# Shared steps of run.ps1 (Anaconda Python) and run_system_python.ps1 (python on PATH).
# Dot-sourced by them; mirrors run.sh step by step, with the same files and environment overrides:
#   LTXT_VENV (venv folder, default .venv), TORCH_SPEC (e.g. "torch==2.7.1"),
#   TORCH_INDEX_URL (a PyTorch wheel index, or "pypi" for PyPI).
# Native commands get argument arrays (never Invoke-Expression), so paths with spaces or Chinese
# characters pass through unchanged. Native stderr is never redirected: Windows PowerShell 5.1
# turns redirected stderr lines into terminating errors under ErrorActionPreference Stop.

Set-StrictMode -Version 3.0
$ErrorActionPreference = 'Stop'
# PowerShell 7.4 can make a native non-zero exit throw; exit codes are checked here instead.
$PSNativeCommandUseErrorActionPreference = $false

function Write-Step([string]$Message) {
    [Console]::Error.WriteLine("[ltxtrainer] $Message")
}

function Invoke-Native([string]$Exe, [string[]]$Arguments) {
    & $Exe @Arguments
    if ($LASTEXITCODE -ne 0) {
        throw "this command failed (exit code $LASTEXITCODE): $Exe $($Arguments -join ' ')"
    }
}

function Set-Utf8Console {
    # Chinese paths, captions and log lines must not turn into '???' or a UnicodeEncodeError.
    $utf8 = New-Object System.Text.UTF8Encoding $false
    try { [Console]::OutputEncoding = $utf8 } catch { }  # no console (redirected): nothing to set
    $global:OutputEncoding = $utf8
    $env:PYTHONUTF8 = '1'
    $env:PIP_DISABLE_PIP_VERSION_CHECK = '1'
}

function Find-NvidiaSmi {
    $onPath = Get-Command nvidia-smi -CommandType Application -ErrorAction SilentlyContinue | Select-Object -First 1
    if ($onPath) { return $onPath.Source }
    $classic = Join-Path $env:ProgramFiles 'NVIDIA Corporation\NVSMI\nvidia-smi.exe'
    if (Test-Path -LiteralPath $classic) { return $classic }
    return $null
}

function Test-NvidiaGpu {
    # Same rule as run.sh: a CUDA torch when an NVIDIA driver answers `nvidia-smi -L`.
    $smi = Find-NvidiaSmi
    if (-not $smi) { return $false }
    try {
        & $smi -L | Out-Null
        return ($LASTEXITCODE -eq 0)
    } catch {
        return $false
    }
}

function Install-Torch([string]$Python) {
    & $Python -c "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('torch') else 1)"
    if ($LASTEXITCODE -eq 0) { return }
    # PyPI's Windows torch wheels are CPU-only, so a GPU machine must use PyTorch's own index.
    if (Test-NvidiaGpu) { $defaultIndex = 'https://download.pytorch.org/whl/cu128' }
    else { $defaultIndex = 'https://download.pytorch.org/whl/cpu' }
    $spec = if ($env:TORCH_SPEC) { $env:TORCH_SPEC } else { 'torch' }
    $index = if ($env:TORCH_INDEX_URL) { $env:TORCH_INDEX_URL } else { $defaultIndex }
    Write-Step "installing $spec from $index"
    if ($index -eq 'pypi') {
        Invoke-Native $Python @('-m', 'pip', 'install', $spec)
    } else {
        Invoke-Native $Python @('-m', 'pip', 'install', $spec, '--index-url', $index)
    }
}

function Install-Once([string]$Python, [string]$Venv, [string]$Requirements, [string]$Constraint) {
    # Install a requirements file only when it (or the pinned torch) changed since the last install;
    # the stamp file names are run.sh's.
    $stamp = Join-Path $Venv ('.' + (Split-Path -Leaf $Requirements) + '.sha256')
    $hashCode = "import hashlib, sys; print(hashlib.sha256(b''.join(open(p, 'rb').read() for p in sys.argv[1:])).hexdigest())"
    $sum = (& $Python -c $hashCode $Requirements $Constraint | Out-String).Trim()
    if ($LASTEXITCODE -ne 0 -or -not $sum) { throw "could not hash $Requirements" }
    $previous = if (Test-Path -LiteralPath $stamp) { "$(Get-Content -LiteralPath $stamp -Raw)".Trim() } else { '' }
    if ($previous -ne $sum) {
        Write-Step "installing $Requirements"
        Invoke-Native $Python @('-m', 'pip', 'install', '-r', $Requirements, '-c', $Constraint)
        Set-Content -LiteralPath $stamp -Value $sum -Encoding Ascii
    }
}

function Test-StartedForThisScript {
    # "Run with PowerShell" from Explorer closes the window on exit; keep errors readable there.
    return ([Environment]::CommandLine -match 'run(_system_python)?\.ps1')
}

function New-Venv([string]$BasePython, [string]$Venv) {
    & $BasePython -c "import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)"
    if ($LASTEXITCODE -ne 0) {
        throw "$BasePython is not Python 3.10 or newer (or does not run); install Python 3.10-3.12 or Anaconda, or set `$env:PYTHON to one"
    }
    Write-Step "creating virtual environment in $Venv (with $BasePython)"
    Invoke-Native $BasePython @('-m', 'venv', $Venv)
}

function Start-Ltxtrainer([string]$Root, [string]$BasePython, [string[]]$Arguments) {
    # $Root: the project folder (the launcher's own), so the launcher works from any current folder.
    if (-not $Arguments) { $Arguments = @() }  # .Count on $null fails under strict mode in PowerShell 5.1
    Set-Utf8Console
    Push-Location -LiteralPath $Root  # popped on exit: the user's console keeps its own folder
    try {
        $venv = if ($env:LTXT_VENV) { $env:LTXT_VENV } else { '.venv' }
        $py = Join-Path $venv 'Scripts\python.exe'
        if (-not (Test-Path -LiteralPath $py)) { New-Venv $BasePython $venv }
        $py = (Resolve-Path -LiteralPath $py).Path

        # 1. torch first: a CUDA build when an NVIDIA driver answers, the CPU build otherwise.
        Install-Torch $py

        # 2. Everything else, pinned to the installed torch so no package can swap its build.
        $constraint = Join-Path $venv 'torch-constraint.txt'
        Invoke-Native $py @('-c', "import sys, torch; open(sys.argv[1], 'w', encoding='utf-8').write('torch==' + torch.__version__ + '\n')", $constraint)
        Install-Once $py $venv 'requirements.txt' $constraint

        $command = if ($Arguments.Count -gt 0) { $Arguments[0] } else { 'gui' }
        $rest = @(if ($Arguments.Count -gt 1) { $Arguments[1..($Arguments.Count - 1)] })
        switch -Exact ($command) {
            'test' {
                Install-Once $py $venv 'requirements-test.txt' $constraint
                & $py -m pytest @rest
            }
            'demo' { & $py 'scripts\run_pipeline.py' --demo @rest }
            'env' { & $py 'scripts\check_env.py' @rest }
            'gui' {
                if (Test-Path -LiteralPath 'scripts\minimal_ui.py') { & $py 'scripts\minimal_ui.py' @rest }
                else { & $py 'scripts\check_env.py' @rest }
            }
            default { & $py 'scripts\minimal_ui.py' @Arguments }
        }
        exit $LASTEXITCODE
    } catch {
        [Console]::Error.WriteLine("[ltxtrainer] $($_.Exception.Message)")
        [Console]::Error.WriteLine('[ltxtrainer] See the common problems section of INSTALLATION_CN.md.')
        if (Test-StartedForThisScript) { Read-Host 'Press Enter to close' | Out-Null }
        exit 1
    } finally {
        Pop-Location
    }
}
