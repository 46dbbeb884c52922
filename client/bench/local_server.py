"""Starts the real service (web_service.py) in a subprocess on free loopback ports.

Used by the tests, the benchmark and the soak script; never binds anything but 127.0.0.1 clients.
"""

from __future__ import annotations

import contextlib
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

ROOT = Path(__file__).resolve().parents[2]
SERVING_MODEL = ROOT / "serving_model"


def image_app_copy(dest: Path) -> Path:
    """Copy what docker/Dockerfile copies into the image (its COPY lines) to ``dest``.

    Running the service from such a copy proves the image holds every file the service needs.
    """
    import shutil

    for line in (ROOT / "docker" / "Dockerfile").read_text(encoding="utf-8").splitlines():
        parts = [p for p in line.split() if not p.startswith("--")]
        if not parts or parts[0] != "COPY" or "--from=" in line:  # --from: from a build stage
            continue
        if parts[1].startswith("requirements") or "docker/" in parts[1]:
            continue
        for src in parts[1:-1]:
            source = ROOT / src.rstrip("/")
            target = dest / src.rstrip("/")
            if source.is_dir():
                shutil.copytree(
                    source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
    return dest


@contextmanager
def serving(app) -> Iterator[int]:
    """Serve an ASGI ``app`` (e.g. ``KServeApp(...).asgi``) on a free loopback port, as the
    service serves it; yields the port."""
    from pipeline.config import Limits
    from pipeline.http.servers import HttpServers, bind

    servers = HttpServers(Limits())
    sock = bind("127.0.0.1", 0)
    servers.add("test", sock, app)
    servers.start()
    try:
        yield sock.getsockname()[1]
    finally:
        servers.stop()


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

    def config(self) -> dict:
        """The config.yml the server runs with."""
        return yaml.safe_load((self.workdir / "config.yml").read_text(encoding="utf-8"))

    def log(self) -> str:
        path = self.workdir / "server.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def write_config(
    workdir: Path,
    backend: str,
    rpc_port: int,
    http_port: int,
    app: Path = ROOT,
    dag: dict | None = None,
    op: dict[str, dict] | None = None,
    **ie: object,
) -> Path:
    """A copy of ``app``/config.yml on the given ports and backend, with overrides.

    ``dag`` updates the ``dag:`` section, ``op`` each named op's section (a None value removes
    the key), ``ie`` the ``ie:`` section (``models`` per model name: settings to update, a new
    name's whole settings, or None to drop that model). Model dirs are made absolute (relative
    ones are relative to ``app``).
    """
    conf = yaml.safe_load((app / "config.yml").read_text(encoding="utf-8"))
    conf["rpc_port"], conf["http_port"] = rpc_port, http_port
    conf["dag"].update(dag or {})
    for name, settings in (op or {}).items():
        section = conf["op"].setdefault(name, {})
        for key, value in settings.items():
            if value is None:
                section.pop(key, None)
            else:
                section[key] = value
    conf["ie"]["backend"] = backend
    conf["ie"]["bind_address"] = "127.0.0.1"  # tests and benchmarks listen on loopback only
    for model in conf["ie"]["models"].values():
        model["dir"] = str(app / model["dir"])  # an absolute dir stays as it is
    conf["ie"].setdefault("kserve_http_port", free_port())
    conf["ie"].setdefault("metrics_port", free_port())
    models = ie.pop("models", {})
    conf["ie"].setdefault("limits", {}).update(ie.pop("limits", {}))
    conf["ie"].update(ie)
    for name, model in models.items():
        if model is None:
            conf["ie"]["models"].pop(name, None)
        else:
            conf["ie"]["models"].setdefault(name, {}).update(model)
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
    workdir: Path,
    backend: str = "auto",
    python: str | list[str] = sys.executable,
    env: dict | None = None,
    app: Path = ROOT,
    ready_timeout: float = 180.0,
    dag: dict | None = None,
    op: dict[str, dict] | None = None,
    **ie: object,
) -> Iterator[RunningServer]:
    """Run ``app``/web_service.py with a copy of its config.yml on free ports; SIGTERM it after.

    ``app`` is the repo, or a copy of the image's files (:func:`image_app_copy`).
    """
    workdir = Path(workdir).resolve()  # the server runs there: a relative path would be doubled
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(workdir, backend, free_port(), free_port(), app, dag, op, **ie)
    server = start_server(workdir, config, python, env, app)
    try:
        wait_ready(server, ready_timeout)
        yield server
    finally:
        stop(server.proc)


def start_server(
    workdir: Path,
    config: Path,
    python: str | list[str] = sys.executable,
    env: dict | None = None,
    app: Path = ROOT,
) -> RunningServer:
    """Start ``app``/web_service.py with ``config`` in its own session (the log appends to
    ``workdir``/server.log); returns at once: :func:`wait_ready` waits for it."""
    conf = yaml.safe_load(config.read_text(encoding="utf-8"))
    with open(workdir / "server.log", "ab") as log:
        proc = subprocess.Popen(
            [
                *([python] if isinstance(python, str) else python),
                str(app / "web_service.py"),
                "--config",
                str(config),
            ],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(app), **(env or {})},
            start_new_session=True,
        )
    return RunningServer(proc, conf["rpc_port"], conf["http_port"], workdir)


def stop(proc: subprocess.Popen, grace: float = 15.0) -> int:
    """SIGTERM the server's process group; SIGKILL what is left after ``grace`` s.

    The group is signalled even when the main process has exited: forked children (Paddle
    Serving's HTTP proxy) would otherwise keep the ports.
    """
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return proc.wait()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()
