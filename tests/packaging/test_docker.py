"""docker/Dockerfile: linted with hadolint, and its amd64 install step + file layout proven in a
clean venv by serving from them (no Docker engine runs here). The arm64 variant is proven by
tests/packaging/test_no_paddle.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from client import http_client
from client.bench.local_server import ROOT, SERVING_MODEL, image_app_copy, run_server

DOCKERFILE = ROOT / "docker" / "Dockerfile"


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_settings_match_the_config():
    text = DOCKERFILE.read_text(encoding="utf-8")
    conf = yaml.safe_load((ROOT / "config.yml").read_text(encoding="utf-8"))
    exposed = {int(p) for p in re.search(r"^EXPOSE (.+)$", text, re.M).group(1).split()}
    assert {conf["rpc_port"], conf["http_port"]} <= exposed
    assert re.search(r"^USER \d+$", text, re.M), "the image must not run as root"
    assert "HEALTHCHECK" in text and "TARGETARCH" in text


@pytest.mark.slow
@pytest.mark.skipif(not (SERVING_MODEL / "parity.json").exists(), reason="demo models not built")
def test_amd64_install_step_serves(tmp_path):
    venv = ROOT / "build" / "venv-image-amd64"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([str(ROOT / "docker" / "install.sh"), python, "paddle"], check=True, timeout=1200)
    app = image_app_copy(tmp_path / "app")
    assert not (app / "conversion").exists()
    with run_server(tmp_path / "run", backend="paddle", python=python, app=app) as srv:
        [result] = http_client.predict("spo", "张伟出生于杭州。", url=srv.http_url)
        assert "spo_list" in result
