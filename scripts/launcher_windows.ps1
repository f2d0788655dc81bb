# Shared steps of run.ps1 (Anaconda Python) and run_system_python.ps1 (python on PATH or py.exe).
# Dot-sourced by them; mirrors run.sh step by step, with the same files and environment overrides:
#   LTXT_VENV (venv folder, default .venv), TORCH_SPEC (e.g. "torch==2.7.1"),
#   TORCH_INDEX_URL (a PyTorch wheel index, or "pypi" for PyPI; default: the CUDA build the NVIDIA
#   driver runs, chosen by ltxtrainer\install_plan.py, the same rule run.sh uses), and pip's own
#   PIP_INDEX_URL (a PyPI mirror), PIP_TIMEOUT, PIP_RETRIES.
# Native commands get argument arrays (never Invoke-Expression), so paths with spaces or Chinese
# characters pass through unchanged. Native stderr is never redirected: Windows PowerShell 5.1
# turns redirected stderr lines into terminating errors under ErrorActionPreference Stop.

Set-StrictMode -Version 3.0
$ErrorActionPreference = 'Stop'
# PowerShell 7.4 can make a native non-zero exit throw; exit codes are checked here instead.
$PSNativeCommandUseErrorActionPreference = $false
$script:LauncherLog = $null

function Write-Step([string]$Message) {
    [Console]::Error.WriteLine("[ltxtrainer] $Message")
    if ($script:LauncherLog) {
        $line = "$(Get-Date -Format 'yyyy-MM-dd HH:mm:ss') $Message"
        try { [IO.File]::AppendAllText($script:LauncherLog, $line + [Environment]::NewLine, [Text.Encoding]::UTF8) }
        catch { }  # a log that cannot be written must not stop the launcher
    }
}

function Invoke-Native([string]$Exe, [string[]]$Arguments) {
    & $Exe @Arguments
    if ($LASTEXITCODE -ne 0) {
        throw "this command failed (exit code $LASTEXITCODE): $Exe $($Arguments -join ' ')"
    }
}

function Set-LauncherEnvironment {
    # Chinese paths, captions and log lines must not turn into '???' or a UnicodeEncodeError.
    $utf8 = New-Object System.Text.UTF8Encoding $false
    try { [Console]::OutputEncoding = $utf8 } catch { }  # no console (redirected): nothing to set
    $global:OutputEncoding = $utf8
    $env:PYTHONUTF8 = '1'
    $env:PIP_DISABLE_PIP_VERSION_CHECK = '1'
    # 3 GB of torch over a slow or flaky link (mainland China) needs more than pip's 15 s timeout.
    if (-not $env:PIP_TIMEOUT) { $env:PIP_TIMEOUT = '120' }
    if (-not $env:PIP_RETRIES) { $env:PIP_RETRIES = '10' }
}

function Test-StartedForThisScript {
    # "Run with PowerShell" from Explorer closes the window on exit; keep errors readable there.
    # run.cmd / run_system_python.cmd pause themselves (LTXT_LAUNCHED_BY_CMD), so no second pause.
    if ($env:LTXT_LAUNCHED_BY_CMD) { return $false }
    return ([Environment]::CommandLine -match 'run(_system_python)?\.ps1')
}

function Wait-IfWindowCloses([int]$ExitCode) {
    if ($ExitCode -ne 0 -and (Test-StartedForThisScript)) { Read-Host 'Press Enter to close' | Out-Null }
}

function Get-CondaRoots {
    # Every place an Anaconda or Miniconda installation is found on a typical PC. The installers
    # refuse folders with non-ASCII names, so a user whose account name is Chinese installs to D:\anaconda3 or similar.
    $roots = New-Object System.Collections.Generic.List[string]
    if ($env:CONDA_PREFIX) { $roots.Add($env:CONDA_PREFIX) }
    if ($env:CONDA_EXE) { $roots.Add((Split-Path -Parent (Split-Path -Parent $env:CONDA_EXE))) }
    # The installers register themselves here (InstallPath's default value is the root folder).
    foreach ($hive in 'HKCU:', 'HKLM:') {
        $vendor = "$hive\Software\Python\ContinuumAnalytics"
        foreach ($key in @(Get-ChildItem -LiteralPath $vendor -ErrorAction SilentlyContinue)) {
            $install = Get-Item -LiteralPath (Join-Path $key.PSPath 'InstallPath') -ErrorAction SilentlyContinue
            if ($install) {
                $path = $install.GetValue('')
                if ($path) { $roots.Add([string]$path) }
            }
        }
    }
    # conda on PATH: <root>\Scripts\conda.exe or <root>\condabin\conda.bat
    $conda = Get-Command conda -CommandType Application -ErrorAction SilentlyContinue | Select-Object -First 1
    if ($conda -and $conda.Source) { $roots.Add((Split-Path -Parent (Split-Path -Parent $conda.Source))) }
    $parents = @($env:USERPROFILE, $env:LOCALAPPDATA, $env:ProgramData)
    $parents += @(Get-PSDrive -PSProvider FileSystem -ErrorAction SilentlyContinue | ForEach-Object { $_.Root })
    foreach ($parent in $parents) {
        if (-not $parent) { continue }
        foreach ($name in 'anaconda3', 'miniconda3', 'Anaconda', 'Miniconda') { $roots.Add((Join-Path $parent $name)) }
    }
    return $roots
}

function Find-CondaPython {
    # The python.exe of the first Anaconda/Miniconda root that has one; $null when none does.
    foreach ($root in (Get-CondaRoots)) {
        $python = Join-Path $root 'python.exe'
        if (Test-Path -LiteralPath $python) { return $python }
    }
    return $null
}

function Find-PyLauncherPython {
    # python.org's installer leaves "Add to PATH" unticked by default but always installs py.exe.
    $py = Get-Command py -CommandType Application -ErrorAction SilentlyContinue | Select-Object -First 1
    if (-not $py) { return $null }
    # py prints "No suitable Python runtime found" for each version that is not installed; that is
    # expected here, so its stderr is dropped (safe only with ErrorActionPreference Continue, see top).
    $ErrorActionPreference = 'Continue'
    foreach ($version in '-3.12', '-3.11', '-3.10', '-3') {
        $found = (& $py.Source $version -c 'import sys; print(sys.executable)' 2>$null | Out-String).Trim()
        if ($LASTEXITCODE -eq 0 -and $found) { return $found }
    }
    return $null
}

function Add-CondaLibraryBin([string]$Venv) {
    # A venv made from a conda Python that conda never activated finds no libssl/libcrypto DLLs
    # (they live in <conda>\Library\bin), so pip cannot use HTTPS. pyvenv.cfg names the base.
    $cfg = Join-Path $Venv 'pyvenv.cfg'
    if (-not (Test-Path -LiteralPath $cfg)) { return }
    $homeLine = Get-Content -LiteralPath $cfg | Where-Object { $_ -match '^\s*home\s*=' } | Select-Object -First 1
    if (-not $homeLine) { return }
    $base = ($homeLine -replace '^\s*home\s*=\s*', '').Trim()
    $library = Join-Path $base 'Library\bin'
    if ((Test-Path -LiteralPath (Join-Path $base 'conda-meta')) -and (Test-Path -LiteralPath $library)) {
        $env:PATH = "$library;$env:PATH"
    }
}

function Install-Torch([string]$Python) {
    & $Python -c "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('torch') else 1)"
    if ($LASTEXITCODE -eq 0) { return }
    # PyPI's Windows torch wheels are CPU-only, so a GPU machine must use PyTorch's own index, for
    # the CUDA version its driver runs (install_plan.py reads nvidia-smi; -I: stdlib only).
    $index = (& $Python -I 'ltxtrainer\install_plan.py' 'torch-index' | Out-String).Trim()
    if ($LASTEXITCODE -ne 0 -or -not $index) { throw 'could not choose a torch build (ltxtrainer\install_plan.py)' }
    $spec = if ($env:TORCH_SPEC) { $env:TORCH_SPEC } else { 'torch' }
    Write-Step "installing $spec from $index"
    if ($index -eq 'pypi') {
        Invoke-Native $Python @('-m', 'pip', 'install', $spec)
    } else {
        Invoke-Native $Python @('-m', 'pip', 'install', $spec, '--index-url', $index)
    }
    # Says what to update when the driver cannot run the installed build.
    Invoke-Native $Python @('-I', 'ltxtrainer\install_plan.py', 'check-cuda')
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
    $outputs = Join-Path $Root 'outputs'
    if (Test-Path -LiteralPath $outputs) { $script:LauncherLog = Join-Path $outputs 'launcher.log' }
    Push-Location -LiteralPath $Root  # popped on exit: the user's console keeps its own folder
    $code = 1
    try {
        $venv = if ($env:LTXT_VENV) { $env:LTXT_VENV } else { '.venv' }
        $py = Join-Path $venv 'Scripts\python.exe'
        if (-not (Test-Path -LiteralPath $py)) { New-Venv $BasePython $venv }
        $py = (Resolve-Path -LiteralPath $py).Path
        Add-CondaLibraryBin $venv

        # 1. torch first: the CUDA build the NVIDIA driver runs, the CPU build without one.
        Install-Torch $py

        # 2. Everything else, pinned to the installed torch so no package can swap its build.
        $constraint = Join-Path $venv 'torch-constraint.txt'
        Invoke-Native $py @('-I', 'ltxtrainer\install_plan.py', 'constraint', $constraint)
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
        $code = $LASTEXITCODE
        if ($code -ne 0) {
            Write-Step "'$command' ended with exit code $code; the messages above say why."
            Write-Step "Logs: the launcher's in $(Join-Path $outputs 'launcher.log'); each GUI job's in $(Join-Path $outputs '.jobs\<job>\log.txt')."
        }
    } catch {
        Write-Step "$($_.Exception.Message)"
        Write-Step "See the common problems section of INSTALLATION_CN.md. The launcher's log: $(Join-Path $outputs 'launcher.log')"
        $code = 1
    } finally {
        Pop-Location
    }
    Wait-IfWindowCloses $code
    exit $code
}

# UTF-8 before anything runs Python: the interpreter paths the launchers read back from Python
# (py.exe's sys.executable) may hold Chinese characters.
Set-LauncherEnvironment
