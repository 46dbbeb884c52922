"""The service from a second venv with no paddlepaddle (and no torch): the arm-host install.

The venv is made by ``./setup.sh --serve-only`` (the arm64 image's install step) and the service
runs from a copy of the image's files, so this also proves requirements-serve.txt and the
Dockerfile's COPY lines are complete. Its answers must equal those of the full install.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from client import http_client, rpc_client
from client.bench.local_server import ROOT, SERVING_MODEL, image_app_copy, run_server
from client.request import results_close as close
from conversion.demo_data import generate, uie_schema

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SERVING_MODEL / "parity.json").exists(), reason="demo models not built"),
]

VENV = ROOT / "build" / "venv-serve"


@pytest.fixture(scope="module")
def slim_python() -> str:
    subprocess.run([str(ROOT / "setup.sh"), "--serve-only", str(VENV)], check=True, timeout=900)
    python = str(VENV / "bin" / "python")
    probe = subprocess.run(
        [python, "-c", "import importlib.util as u; print(u.find_spec('paddle'), u.find_spec('torch'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.split() == ["None", "None"], "the slim venv must not have paddle or torch"
    return python


def _ask(server, texts: list[str]) -> dict[str, list[dict]]:
    return {
        "uie": rpc_client.predict("uie", texts, uie_schema(), endpoint=server.rpc_endpoint),
        "spo": http_client.predict("spo", texts, url=server.http_url),
    }


def test_slim_venv_serves_the_same_answers(slim_python, tmp_path: Path):
    _, test = generate(seed=0)
    texts = [r["text"] for r in test[:16]]
    app = image_app_copy(tmp_path / "app")
    with run_server(tmp_path / "slim", backend="auto", python=slim_python, app=app) as slim:
        assert "using onnx" in slim.log()
        slim_answers = _ask(slim, texts)
    with run_server(tmp_path / "full", backend="paddle") as full:
        full_answers = _ask(full, texts)
    assert close(slim_answers, full_answers)
    # not a comparison of empty answers
    assert any(r["spo_list"] for r in slim_answers["spo"]) or any(
        any(r.values()) for r in slim_answers["uie"]
    )
