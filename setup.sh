#!/usr/bin/env bash
# Create a venv and install the pinned dependencies.
#   ./setup.sh                      .venv: service + conversion bridge (Paddle, PyTorch, converters)
#   ./setup.sh --dev                the same plus the test and lint tools
#   ./setup.sh --serve-only DIR     DIR: the service alone on ONNX Runtime (no Paddle, no PyTorch),
#                                   as on arm hosts; the same step as the Docker image's
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
mode=${1:-}
venv=.venv
case "$mode" in
  --dev | "") ;;
  --serve-only) venv=${2:?usage: $0 --serve-only DIR} ;;
  *) echo "usage: $0 [--dev | --serve-only DIR]" >&2; exit 2 ;;
esac
[ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q --upgrade pip==25.2
if [ "$mode" = "--serve-only" ]; then
  docker/install.sh "$py" onnx
else
  reqs=(-r requirements.txt)
  [ "$mode" = "--dev" ] && reqs+=(-r requirements-dev.txt)
  "$py" -m pip install -q "${reqs[@]}"
  # Their declared pins cannot be met on Python 3.11; what they import is pinned in requirements*.txt.
  "$py" -m pip install -q --no-deps -r requirements-nodeps.txt
fi
echo "installed into $venv"
