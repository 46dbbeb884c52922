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
  [ "$mode" = "--dev" ] && "$py" -m pip install -q --no-deps -r requirements-dev-nodeps.txt
fi
# The playground's browser test drives Debian's Chromium (a CJK font for its screenshots).
if [ "$mode" = "--dev" ] && ! command -v chromedriver >/dev/null && [ "$(id -u)" = 0 ] \
  && command -v apt-get >/dev/null; then
  { apt-get update -qq && apt-get install -y -qq chromium chromium-driver fonts-wqy-zenhei >/dev/null; } \
    || echo "chromium could not be installed: tests/test_playground.py will skip" >&2
fi
# tests/packaging/test_image.py builds the image with podman (docker/build_local.sh), on a base
# it makes with debootstrap.
if [ "$mode" = "--dev" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
  && ! { command -v podman >/dev/null && [ -x /usr/sbin/debootstrap ]; }; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman debootstrap >/dev/null; } \
    || echo "podman could not be installed: tests/packaging/test_image.py cannot build the image" >&2
fi
echo "installed into $venv"
