#!/usr/bin/env bash
# ltxtrainer launcher for Linux and macOS.
#   ./run.sh            create/refresh the virtual environment if needed, then open the GUI
#   ./run.sh test       install the test extras and run the whole test suite
#   ./run.sh demo       run the end-to-end demo on the tiny models (any machine, CPU is fine)
#   ./run.sh env        print the environment report
# Environment overrides: PYTHON (interpreter used to create the venv), LTXT_VENV (venv folder),
# TORCH_SPEC (e.g. "torch==2.7.1"), TORCH_INDEX_URL (a PyTorch wheel index, or "pypi" for PyPI;
# default: the CUDA build the NVIDIA driver runs, see ltxtrainer/install_plan.py), and pip's own
# PIP_INDEX_URL (a PyPI mirror), PIP_TIMEOUT, PIP_RETRIES.
set -euo pipefail
cd "$(dirname "$0")"
# Slow or flaky links (3 GB of torch from abroad) need longer than pip's 15 s timeout.
export PYTHONUTF8=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_TIMEOUT="${PIP_TIMEOUT:-120}" PIP_RETRIES="${PIP_RETRIES:-10}"

venv="${LTXT_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  echo "[ltxtrainer] creating virtual environment in $venv" >&2
  "${PYTHON:-python3}" -m venv "$venv"
fi
py="$venv/bin/python"

# 1. torch first: the CUDA build the NVIDIA driver runs, the CPU build without one.
if ! "$py" -c "import torch" >/dev/null 2>&1; then
  index="$("$py" -I ltxtrainer/install_plan.py torch-index)"
  echo "[ltxtrainer] installing ${TORCH_SPEC:-torch} from ${index}" >&2
  if [ "$index" = "pypi" ]; then
    "$py" -m pip install "${TORCH_SPEC:-torch}"
  else
    "$py" -m pip install "${TORCH_SPEC:-torch}" --index-url "$index"
  fi
  "$py" -I ltxtrainer/install_plan.py check-cuda
fi

# 2. Everything else, pinned to the installed torch so no package can swap its build.
constraint="$venv/torch-constraint.txt"
"$py" -I ltxtrainer/install_plan.py constraint "$constraint"
install_once() {  # install a requirements file only when it changed since the last install
  local req="$1" stamp="$venv/.$(basename "$1").sha256"
  local sum; sum="$(cat "$req" "$constraint" | "$py" -c "import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())")"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$sum" ]; then
    echo "[ltxtrainer] installing $req" >&2
    "$py" -m pip install -r "$req" -c "$constraint"
    echo "$sum" > "$stamp"
  fi
}
install_once requirements.txt

case "${1:-gui}" in
  test)
    install_once requirements-test.txt
    shift
    exec "$py" -m pytest "$@"
    ;;
  demo)
    shift
    exec "$py" scripts/run_pipeline.py --demo "$@"
    ;;
  env)
    shift
    exec "$py" scripts/check_env.py "$@"
    ;;
  gui)
    [ $# -gt 0 ] && shift
    if [ -f scripts/minimal_ui.py ]; then
      exec "$py" scripts/minimal_ui.py "$@"
    fi
    exec "$py" scripts/check_env.py "$@"
    ;;
  *)
    exec "$py" scripts/minimal_ui.py "$@"
    ;;
esac
