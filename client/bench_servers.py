"""Starts the servers under test as subprocesses on free loopback ports: the real service
(web_service.py, through client/local_server.py's helpers) and the naive Flask baseline."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from client.local_server import ROOT, RunningServer, free_port, stop, wait_ready

logger = logging.getLogger(__name__)


def service_config(
    workdir: Path,
    settings,
    rpc_port: int,
    http_port: int,
    batch_size: int,
    batching_timeout_ms: int,
    concurrency: int = 1,
) -> Path:
    """config.yml with the benchmark's models, backend, threads and model-op batching and threads."""
    conf = yaml.safe_load((ROOT / "config.yml").read_text(encoding="utf-8"))
    conf["rpc_port"], conf["http_port"] = rpc_port, http_port
    model_op = conf["op"]["model"]
    model_op["batch_size"] = batch_size
    model_op["concurrency"] = concurrency
    if batch_size > 1:
        model_op["auto_batching_timeout"] = batching_timeout_ms
    else:
        model_op.pop("auto_batching_timeout", None)
    ie = conf["ie"]
    ie["backend"] = settings.backend
    ie["intra_op_threads"] = settings.intra_op_threads
    ie["kserve_http_port"] = 0  # not measured; the RPC and HTTP routes are
    ie["metrics_port"] = 0  # metrics are still recorded; only the scrape port is off
    for name, model in settings.models.items():
        ie["models"][name]["dir"] = str(model.dir)
    path = workdir / "config.yml"
    path.write_text(yaml.safe_dump(conf, allow_unicode=True), encoding="utf-8")
    return path


@contextmanager
def run_service(
    workdir: Path,
    settings,
    batching_timeout_ms: int = 4,
    batch_size: int = 1,
    concurrency: int = 1,
    ready_timeout: float = 300.0,
) -> Iterator[RunningServer]:
    """web_service.py on free ports with :func:`service_config`; stopped on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    rpc_port, http_port = free_port(), free_port()
    conf = (batch_size, batching_timeout_ms, concurrency)
    config = service_config(workdir, settings, rpc_port, http_port, *conf)
    with open(workdir / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "web_service.py"), "--config", str(config)],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            start_new_session=True,
        )
        server = RunningServer(proc, rpc_port, http_port, workdir)
        try:
            wait_ready(server, ready_timeout)
            yield server
        finally:
            stop(proc)


def _wait_http(proc: subprocess.Popen, url: str, body: bytes, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"naive server exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise TimeoutError(f"naive server not ready after {timeout}s")


@contextmanager
def run_naive(
    workdir: Path, models_root: Path, backend: str, threads: int, pylib: Path, ready_timeout: float = 300.0,
) -> Iterator[int]:  # fmt: skip
    """client/naive_server.py on a free port (yielded); stopped on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [sys.executable, "-m", "client.naive_server", "--models", str(models_root), "--backend", backend]
    cmd += ["--port", str(port), "--threads", str(threads), "--pylib", str(pylib)]
    log_path = workdir / "naive.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            start_new_session=True,
        )
        try:
            body = b'{"key": ["task", "text"], "value": ["spo", "\\u5f20\\u4f1f"]}'
            _wait_http(proc, f"http://127.0.0.1:{port}/ie/prediction", body, ready_timeout, log_path)
            yield port
        finally:
            stop(proc)
