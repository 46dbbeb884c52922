"""Starts the real service (web_service.py) in a subprocess on free loopback ports, for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SERVING_MODEL = ROOT / "serving_model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    proc: subprocess.Popen
    rpc_port: int
    http_port: int
    workdir: Path

    @property
    def rpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.rpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/ie/prediction"

    def log(self) -> str:
        path = self.workdir / "server.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def write_config(workdir: Path, backend: str, rpc_port: int, http_port: int, **ie: object) -> Path:
    conf = yaml.safe_load((ROOT / "config.yml").read_text(encoding="utf-8"))
    conf["rpc_port"], conf["http_port"] = rpc_port, http_port
    conf["ie"]["backend"] = backend
    for name, model in conf["ie"]["models"].items():
        model["dir"] = str(SERVING_MODEL / name)
    conf["ie"].update(ie)
    path = workdir / "config.yml"
    path.write_text(yaml.safe_dump(conf, allow_unicode=True), encoding="utf-8")
    return path


def wait_ready(server: RunningServer, timeout: float = 180.0) -> None:
    """Poll with a real RPC request until the DAG answers (models loaded)."""
    from client.rpc_client import connect, predict

    deadline = time.monotonic() + timeout
    client = None
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode}:\n{server.log()[-4000:]}")
        try:
            client = client or connect(server.rpc_endpoint)
            predict("spo", "张伟出生于杭州。", client=client)
            return
        except Exception:
            time.sleep(0.5)
    raise TimeoutError(f"server not ready after {timeout}s:\n{server.log()[-4000:]}")


@contextmanager
def run_server(
    workdir: Path, backend: str = "auto", python: str = sys.executable, env: dict | None = None, **ie: object
) -> Iterator[RunningServer]:
    """Run web_service.py with a copy of config.yml on free ports; stop it (SIGTERM) after."""
    workdir.mkdir(parents=True, exist_ok=True)
    rpc_port, http_port = free_port(), free_port()
    config = write_config(workdir, backend, rpc_port, http_port, **ie)
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [python, str(ROOT / "web_service.py"), "--config", str(config)],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        start_new_session=True,
    )
    server = RunningServer(proc, rpc_port, http_port, workdir)
    try:
        wait_ready(server)
        yield server
    finally:
        stop(proc)
        log.close()


def stop(proc: subprocess.Popen, grace: float = 15.0) -> int:
    """SIGTERM the server's process group; SIGKILL it if it has not exited after ``grace`` s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode
