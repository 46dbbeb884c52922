"""Start-up faults and shutdown: clear messages naming the file or port, and SIGTERM drains."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from client import rpc_client
from client.bench.local_server import ROOT, SERVING_MODEL, free_port, run_server, write_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SERVING_MODEL / "parity.json").exists(), reason="demo models not built"),
]


def start(config: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "web_service.py"), "--config", str(config)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def models_copy(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    shutil.copytree(SERVING_MODEL, app / "serving_model")
    shutil.copy2(ROOT / "config.yml", app / "config.yml")
    return app


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda m: (m / "spo" / "model.onnx").write_bytes(b"not an onnx file"), "model.onnx"),
        (lambda m: (m / "uie" / "model.onnx").unlink(), "model.onnx"),
        (lambda m: (m / "spo" / "vocab.txt").unlink(), "vocab.txt"),
        (lambda m: (m / "uie" / "model_card.json").write_text("{", encoding="utf-8"), "model_card.json"),
    ],
)
def test_bad_model_file_stops_startup_naming_it(tmp_path, damage, needle):
    app = models_copy(tmp_path)
    damage(app / "serving_model")
    config = write_config(tmp_path, "onnx", free_port(), free_port(), app)
    result = start(config, tmp_path)
    assert result.returncode == 2
    assert needle in result.stderr and "cannot start" in result.stderr


def test_corrupt_paddle_params_stop_startup(tmp_path):
    app = models_copy(tmp_path)
    params = next((app / "serving_model" / "uie" / "serving_server").glob("*.pdiparams"))
    params.write_bytes(params.read_bytes()[:100])
    config = write_config(tmp_path, "paddle", free_port(), free_port(), app)
    result = start(config, tmp_path)
    assert result.returncode == 2 and "cannot start" in result.stderr and "uie" in result.stderr


def test_port_in_use_is_named(tmp_path):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, "onnx", port, free_port())
        result = start(config, tmp_path)
    assert result.returncode == 2
    assert f"port {port} (rpc_port" in result.stderr and "already in use" in result.stderr


def test_sigterm_drains_in_flight_requests(tmp_path):
    texts = ["张伟，1985年3月出生于杭州，毕业于北辰大学。" * 8] * 48
    with run_server(tmp_path / "srv", backend="onnx") as srv:
        results: list = []
        errors: list = []
        finished: list[float] = []

        def ask() -> None:
            try:
                results.append(rpc_client.predict("spo", texts, endpoint=srv.rpc_endpoint))
                finished.append(time.monotonic())
            except Exception as e:  # recorded and asserted on below
                errors.append(e)

        workers = [threading.Thread(target=ask) for _ in range(6)]
        for w in workers:
            w.start()
        time.sleep(0.3)  # requests are in flight
        signalled = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        for w in workers:
            w.join(60)
        code = srv.proc.wait(60)
        log = srv.log()
    assert not errors, errors
    assert len(results) == 6 and all(len(r) == 48 for r in results)
    assert max(finished) > signalled, "no request was in flight at SIGTERM: make them longer"
    assert code == 0 and "draining in-flight requests" in log and "stopped" in log


@pytest.mark.parametrize("op", ["model", "decode"])
def test_killed_process_op_worker_stops_the_server_instead_of_hanging(tmp_path, op):
    with run_server(tmp_path / "srv", backend="onnx", dag={"is_thread_op": False}) as srv:
        assert rpc_client.predict("spo", "张伟出生于杭州。", endpoint=srv.rpc_endpoint)
        found = re.search(rf"{op}\[0\] pid (\d+)", srv.log())
        assert found, srv.log()[-2000:]
        os.kill(int(found.group(1)), signal.SIGKILL)
        outcome: list[object] = []

        def racing_request() -> None:  # answered or refused, never left hanging
            try:
                outcome.append(rpc_client.predict("spo", "李娜毕业于北辰大学。", endpoint=srv.rpc_endpoint))
            except Exception as e:  # any error is an answer here
                outcome.append(e)

        racing = threading.Thread(target=racing_request, daemon=True)
        racing.start()
        racing.join(30)
        assert outcome, "a request hung after the worker died"
        code = srv.proc.wait(60)
        log = srv.log()
    assert code == 3, log[-3000:]
    assert f"op worker '{op}' (pid {found.group(1)}) was killed by signal SIGKILL" in log
    assert "restart the service" in log and "stopped" in log
