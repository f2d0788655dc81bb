@echo off
rem Double-click to start ltxtrainer with Python from python.org; same as: run_system_python.ps1 (or add test, demo or env)
rem PowerShell runs the launcher with the execution policy bypassed for this one run, so no
rem policy change (Set-ExecutionPolicy) and no Unblock-File of a downloaded zip is needed.
setlocal
rem The launcher then leaves pausing to this file (no second "press Enter").
set "LTXT_LAUNCHED_BY_CMD=1"
powershell -NoProfile -ExecutionPolicy Bypass -File "%~dp0run_system_python.ps1" %*
set "EXITCODE=%ERRORLEVEL%"
if not "%EXITCODE%"=="0" goto failed
exit /b 0

:failed
echo.
echo [ltxtrainer] stopped with exit code %EXITCODE%. The messages above say why;
echo [ltxtrainer] INSTALLATION_CN.md lists the common problems and their fixes.
pause
exit /b %EXITCODE%
