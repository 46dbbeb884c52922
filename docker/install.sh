#!/usr/bin/env bash
# Installs the service's dependencies into PYTHON's environment. The image's install step; also
# what `setup.sh --serve-only` runs and what tests/test_docker.py proves in a clean venv.
#   docker/install.sh PYTHON PROFILE     PROFILE: paddle (Paddle + ONNX Runtime) | onnx (ONNX Runtime only)
set -euo pipefail
python=${1:?python executable}; profile=${2:?paddle|onnx}
here=$(cd "$(dirname "$0")/.." && pwd)
case "$profile" in
  paddle) reqs=requirements-paddle.txt ;;
  onnx) reqs=requirements-serve.txt ;;
  *) echo "unknown profile $profile (paddle|onnx)" >&2; exit 2 ;;
esac
"$python" -m pip install --no-cache-dir -q -r "$here/$reqs" -c "$here/requirements-serve.lock"
# Their declared pins cannot be met on Python 3.11; what they import is pinned in $reqs.
"$python" -m pip install --no-cache-dir -q --no-deps -r "$here/requirements-nodeps.txt"
