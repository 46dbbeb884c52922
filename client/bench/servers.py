"""Starts the servers under test as subprocesses on free loopback ports: the real service
(web_service.py, through client/bench/local_server.py's helpers), the naive Flask baseline and the
Triton baseline (PyTriton, from its own venv)."""

from __future__ import annotations

import json
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

from client.bench.local_server import ROOT, RunningServer, free_port, run_server, stop

logger = logging.getLogger(__name__)


@contextmanager
def run_service(
    workdir: Path,
    settings,
    batching_timeout_ms: int = 4,
    batch_size: int = 1,
    concurrency: int = 1,
    batching: str = "adaptive",
    ready_timeout: float = 300.0,
    instances: int = 1,
) -> Iterator[RunningServer]:
    """web_service.py with the benchmark's models, backend, threads and engine ``instances``, and
    the model op's ``batch_size``, ``concurrency`` and batching (``ie.batching``; ``timeout``
    waits ``batching_timeout_ms`` for a batch to fill)."""
    timed = batch_size > 1 and batching == "timeout"
    model_op = {
        "batch_size": batch_size,
        "concurrency": concurrency,
        "auto_batching_timeout": batching_timeout_ms if timed else None,
    }
    with run_server(
        workdir,
        settings.backend,
        ready_timeout=ready_timeout,
        op={"model": model_op},
        intra_op_threads=settings.intra_op_threads,
        engine_instances=instances,
        batching="timeout" if timed else "adaptive",
        kserve_http_port=0,  # not measured; the RPC and HTTP routes are
        metrics_port=0,  # metrics are still recorded; only the scrape port is off
        models={name: {"dir": str(m.dir), "precision": m.precision} for name, m in settings.models.items()},
    ) as server:
        yield server


def _wait_http(proc: subprocess.Popen, url: str, body: bytes, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{log.name} server exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise TimeoutError(f"server of {log.name} not ready after {timeout}s")


@contextmanager
def _run_baseline(
    cmd: list[str],
    log_path: Path,
    url: str,
    body: bytes,
    ready_timeout: float,
    env: dict | None = None,
    grace: float = 15.0,
) -> Iterator[None]:
    """``cmd`` as a subprocess from the repo root, logging to ``log_path``, ready once a POST of
    ``body`` to ``url`` answers 200; its process group is stopped on exit (SIGKILL after ``grace`` s)."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            start_new_session=True,
        )
        try:
            _wait_http(proc, url, body, ready_timeout, log_path)
            yield
        finally:
            stop(proc, grace)


@contextmanager
def run_naive(
    workdir: Path, models_root: Path, backend: str, threads: int, pylib: Path, ready_timeout: float = 300.0,
) -> Iterator[int]:  # fmt: skip
    """client/bench/naive_server.py on a free port (yielded); stopped on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "client.bench.naive_server",
        "--models",
        str(models_root),
        "--backend",
        backend,
    ]
    cmd += ["--port", str(port), "--threads", str(threads), "--pylib", str(pylib)]
    body = b'{"key": ["task", "text"], "value": ["spo", "\\u5f20\\u4f1f"]}'
    url = f"http://127.0.0.1:{port}/ie/prediction"
    with _run_baseline(cmd, workdir / "naive.log", url, body, ready_timeout):
        yield port


@contextmanager
def run_triton(
    workdir: Path,
    models_root: Path,
    backend: str,
    threads: int,
    python: Path,
    max_batch_size: int,
    queue_delay_us: int,
    ready_timeout: float = 300.0,
    instances: int = 1,
) -> Iterator[int]:
    """client/bench/triton_server.py (PyTriton, run by ``python``) on a free port (yielded);
    stopped on exit."""
    from client.bench.common import MODEL_NAME, infer_body

    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [
        str(python),
        "-m",
        "client.bench.triton_server",
        "--models",
        str(models_root),
        "--backend",
        backend,
    ]
    cmd += ["--http-port", str(port), "--threads", str(threads), "--instances", str(instances)]
    cmd += ["--max-batch-size", str(max_batch_size), "--queue-delay-us", str(queue_delay_us)]
    body = json.dumps(infer_body('{"key": ["task", "text"], "value": ["spo", "张伟"]}')).encode()
    url = f"http://127.0.0.1:{port}/v2/models/{MODEL_NAME}/infer"
    # the Paddle backend reads serving_server_conf.prototxt with Paddle Serving's old generated
    # _pb2 modules, which protobuf 6's C++ runtime (Triton's venv) refuses to load
    env = {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    with _run_baseline(cmd, workdir / "triton.log", url, body, ready_timeout, env, grace=30):
        yield port
