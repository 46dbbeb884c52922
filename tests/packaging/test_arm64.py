"""The arm path for real: an aarch64 CPython 3.11 under qemu-user (shared/tools/arm64-python.sh),
with aarch64 wheels of requirements-serve.lock, serving from a copy of the image's files.

No Paddle (no aarch64 wheels) and no Go gateway (x86-64 binary): the service must pick ONNX
Runtime and the Python HTTP gateway by itself, and answer like the x86 install.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from client import http_client, rpc_client
from client.bench.local_server import ROOT, SERVING_MODEL, image_app_copy, run_server
from client.request import results_close as close
from conversion.demo_data import generate, uie_schema

TOOL = ROOT.parent / "shared" / "tools" / "arm64-python.sh"
ARM_DIR = ROOT / "build" / "arm64"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not TOOL.exists(), reason="shared/tools/arm64-python.sh not beside the repo"),
    pytest.mark.skipif(not (SERVING_MODEL / "parity.json").exists(), reason="demo models not built"),
]


def _arm_requirements(dest: Path) -> list[str]:
    """The lock's pins; sdist-only packages are built into wheels on the host first."""
    pins = [
        line.split("#")[0].strip()
        for line in (ROOT / "requirements-serve.lock").read_text(encoding="utf-8").splitlines()
        if line.split("#")[0].strip()
    ]
    wheels = dest / "wheels"
    sdist_only = [
        p for p in pins if p.lower().startswith("func_timeout") or p.lower().startswith("func-timeout")
    ]
    if sdist_only:
        subprocess.run(["pip", "wheel", "-q", "--no-deps", "-w", str(wheels), *sdist_only], check=True)
    return [p for p in pins if p not in sdist_only] + [str(w) for w in sorted(wheels.glob("*.whl"))]


@pytest.fixture(scope="module")
def arm_python() -> list[str]:
    if not (ARM_DIR / "root" / "usr" / "bin" / "python3.11").exists():
        ARM_DIR.mkdir(parents=True, exist_ok=True)  # the tool logs beside it, into build/
        subprocess.run(["bash", str(TOOL), "setup", str(ARM_DIR)], check=True, timeout=1200)
    marker = ARM_DIR / "site" / ".installed"
    lock = (ROOT / "requirements-serve.lock").read_text(encoding="utf-8")
    if not marker.exists() or marker.read_text(encoding="utf-8") != lock:
        shutil.rmtree(ARM_DIR / "site", ignore_errors=True)
        subprocess.run(
            ["bash", str(TOOL), "pip", str(ARM_DIR), *_arm_requirements(ARM_DIR)], check=True, timeout=1200
        )
        marker.write_text(lock, encoding="utf-8")
    return ["bash", str(TOOL), "run", str(ARM_DIR)]


def test_arm64_host_serves_rpc_and_http_like_x86(arm_python, tmp_path):
    probe = subprocess.run(
        [
            *arm_python,
            "-c",
            "import platform, importlib.util as u; print(platform.machine(), u.find_spec('paddle'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.split() == ["aarch64", "None"]
    _, test = generate(seed=0)
    texts = [r["text"] for r in test[:6]]
    app = image_app_copy(tmp_path / "app")
    env = {"ARM_PYTHONPATH": str(app)}
    models = {"spo": {"precision": "int8"}}  # UIE in FP32, SPO from its INT8 file
    with run_server(
        tmp_path / "arm",
        backend="auto",
        python=arm_python,
        app=app,
        env=env,
        ready_timeout=600,
        models=models,
    ) as arm:
        log = arm.log()
        assert "using onnx" in log and "(python gateway)" in log
        assert "model.int8.onnx (int8" in log
        arm_answers = {
            "uie": rpc_client.predict("uie", texts, uie_schema(), endpoint=arm.rpc_endpoint),
            "spo": http_client.predict("spo", texts, url=arm.http_url, timeout=300),
        }
    with run_server(tmp_path / "x86", backend="onnx", models=models) as x86:
        x86_answers = {
            "uie": rpc_client.predict("uie", texts, uie_schema(), endpoint=x86.rpc_endpoint),
            "spo": http_client.predict("spo", texts, url=x86.http_url),
        }
    # not a comparison of empty answers
    assert any(r["spo_list"] for r in arm_answers["spo"]) or any(any(r.values()) for r in arm_answers["uie"])
    assert close(arm_answers, x86_answers)
