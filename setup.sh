#!/usr/bin/env bash
# Create .venv at the repo root and install the pinned dependencies.
#   ./setup.sh          service + conversion bridge (x86-64: Paddle, PyTorch, converters)
#   ./setup.sh --dev    the same plus the test and lint tools
#   ./setup.sh --serve-only VENV_DIR   the service alone (ONNX Runtime, no Paddle, no PyTorch)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
mode=${1:-}
venv=.venv
reqs=(-r requirements.txt)
case "$mode" in
  --dev) reqs+=(-r requirements-dev.txt) ;;
  --serve-only) venv=${2:?VENV_DIR}; reqs=(-r requirements-serve.txt) ;;
  "") ;;
  *) echo "usage: $0 [--dev | --serve-only VENV_DIR]" >&2; exit 2 ;;
esac
[ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip==25.2
"$venv/bin/python" -m pip install -q "${reqs[@]}"
# Their declared pins cannot be met on Python 3.11; what they import is pinned above.
"$venv/bin/python" -m pip install -q --no-deps -r requirements-nodeps.txt
echo "installed into $venv"
