"""docker/Dockerfile's image, built for real (docker/build_local.sh: podman, its base made from
Debian's packages where no registry is reachable) and run as a container engine runs it.

No container runtime works here (crun cannot set rlimits in this sandbox), so the container is
created and mounted with podman and its ENTRYPOINT + CMD, Env, WorkingDir and User (all read from
the image's config) run under chroot in their own PID and mount namespaces: the service is PID 1,
with /proc, a minimal /dev and /dev/shm mounted inside its root. The host network is shared, so
the image's config.yml gets free loopback ports (the only change the test makes to the image).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

import pytest
import yaml

from client import http_client, rpc_client
from client.bench.local_server import ROOT, SERVING_MODEL, free_port, run_server
from client.request import results_close as close
from conversion.demo_data import generate, uie_schema

SCRIPT = ROOT / "docker" / "build_local.sh"
IMAGE = "localhost/ie-serving:amd64"
STATE_DIR = "/var/lib/ie"  # the one directory the image gives its user (SERVING_HOME)
logger = logging.getLogger(__name__)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SERVING_MODEL / "parity.json").exists(), reason="demo models not built"),
]

# Container-like /dev: the usual character devices, fd links, a tmpfs /dev/shm.
_DEVICES = {
    "null": (1, 3),
    "zero": (1, 5),
    "full": (1, 7),
    "random": (1, 8),
    "urandom": (1, 9),
    "tty": (5, 0),
}
_SETUP = "\n".join(
    [
        "set -eu",
        "r=$1; shift",
        'mount -t proc -o nosuid,nodev,noexec proc "$r/proc"',
        'mount -t tmpfs -o nosuid,mode=0755 dev "$r/dev"',
        *(f'mknod -m 666 "$r/dev/{name}" c {major} {minor}' for name, (major, minor) in _DEVICES.items()),
        'mkdir "$r/dev/shm" && mount -t tmpfs -o nosuid,nodev,mode=1777 shm "$r/dev/shm"',
        'ln -s /proc/self/fd "$r/dev/fd"',
        *(f'ln -s /proc/self/fd/{i} "$r/dev/{name}"' for i, name in enumerate(["stdin", "stdout", "stderr"])),
        'exec chroot "$@"',
    ]
)


def _unavailable(reason: str) -> None:
    """Skip; in CI (CI set, root, package registries reachable) the image must be built: fail."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must build and run the image: {reason}")
    pytest.skip(reason)


def _run(cmd: list[str], timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode:
        raise AssertionError(
            f"{cmd} exited {result.returncode}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result


@dataclass
class Container:
    """A created (never started) podman container of the image, its root file system mounted."""

    cid: str
    root: Path
    config: dict  # the image's Config: Entrypoint, Cmd, Env, WorkingDir, User, Healthcheck

    def home(self, uid: int) -> str:
        """The user's home from the image's /etc/passwd, as a container engine sets HOME."""
        for line in (self.root / "etc" / "passwd").read_text(encoding="utf-8").splitlines():
            fields = line.split(":")
            if len(fields) > 5 and fields[2] == str(uid):
                return fields[5]
        return "/"

    def command(self, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
        """``argv`` as the image's user, in the image's Env and WorkingDir, in new PID and mount
        namespaces (PID 1 there) under chroot into the container's root."""
        user = self.config["User"]
        uid = int(user.split(":")[0])
        image_env = dict(item.split("=", 1) for item in self.config.get("Env") or [])
        full_env = {"HOME": self.home(uid), **image_env, **(env or {})}
        return [
            "unshare", "--pid", "--fork", "--mount", "--propagation", "private", "--kill-child",
            "sh", "-c", _SETUP, "sh", str(self.root),
            f"--userspec={user}:{user}" if ":" not in user else f"--userspec={user}",
            str(self.root),
            "/usr/bin/env", "-i", "-C", self.config.get("WorkingDir") or "/",
            *(f"{k}={v}" for k, v in full_env.items()),
            *argv,
        ]  # fmt: skip

    def exec(
        self, argv: list[str], env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        """Run ``argv`` in the container (as `docker exec` would) and wait for it."""
        return subprocess.run(self.command(argv, env), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def built_image() -> dict:
    """docker/build_local.sh's image (built, or rebuilt from podman's layer cache): its config
    (Entrypoint, Cmd, Env, WorkingDir, User, Healthcheck)."""
    if os.geteuid() != 0:
        _unavailable("needs root (podman, chroot, mounts)")
    start = time.monotonic()
    try:
        result = subprocess.run(["bash", str(SCRIPT), IMAGE], capture_output=True, text=True, timeout=1800)
    except FileNotFoundError as e:
        _unavailable(str(e))
    if result.returncode == 3:  # podman or debootstrap missing and not installable
        _unavailable(result.stderr.strip())
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    logger.info(
        "build_local.sh took %.0f s: %s", time.monotonic() - start, result.stdout.strip().splitlines()[-2:]
    )
    [info] = json.loads(_run(["podman", "image", "inspect", IMAGE]).stdout)
    # podman reports the HEALTHCHECK beside the Config (docker inside it): the one config here
    return {**info["Config"], "Healthcheck": info["Config"].get("Healthcheck") or info.get("Healthcheck")}


@pytest.fixture
def container(built_image: dict) -> Iterator[Container]:
    name = f"ie-image-test-{uuid.uuid4().hex[:8]}"
    cid = _run(["podman", "create", "--name", name, IMAGE]).stdout.strip()
    try:
        root = Path(_run(["podman", "mount", cid]).stdout.strip())
        yield Container(cid, root, built_image)
    finally:
        _run(["podman", "umount", cid], check=False)
        _run(["podman", "rm", "--force", cid], check=False)


def _free_ports_config(ctr: Container) -> dict[str, int]:
    """Rewrite the image's config (the file its CMD names) onto free loopback ports."""
    cmd = ctr.config["Cmd"]
    path = ctr.root / ctr.config["WorkingDir"].lstrip("/") / cmd[cmd.index("--config") + 1]
    conf = yaml.safe_load(path.read_text(encoding="utf-8"))
    ports = {"rpc": free_port(), "http": free_port(), "kserve": free_port(), "metrics": free_port()}
    conf["rpc_port"], conf["http_port"] = ports["rpc"], ports["http"]
    conf["ie"]["kserve_http_port"], conf["ie"]["metrics_port"] = ports["kserve"], ports["metrics"]
    conf["ie"]["bind_address"] = "127.0.0.1"
    path.write_text(yaml.safe_dump(conf, allow_unicode=True), encoding="utf-8")
    return ports


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status == 200
    except OSError:
        return False


def _pid_ns_members(ns: str) -> list[int]:
    """Host PIDs of the processes in the PID namespace ``ns`` (a /proc/PID/ns/pid link)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "ns" / "pid") == ns:
                    members.append(int(entry.name))
    return members


def _status(pid: int, key: str) -> list[str]:
    """The fields of ``key`` in /proc/PID/status (host view)."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        name, _, fields = line.partition(":")
        if name == key:
            return fields.split()
    raise KeyError(key)


def _answers(rpc_endpoint: str, http_url: str, texts: list[str]) -> dict[str, list[dict]]:
    return {
        "uie_rpc": rpc_client.predict("uie", texts, uie_schema(), endpoint=rpc_endpoint),
        "uie_http": http_client.predict("uie", texts, uie_schema(), url=http_url),
        "spo_rpc": rpc_client.predict("spo", texts, endpoint=rpc_endpoint),
        "spo_http": http_client.predict("spo", texts, url=http_url),
    }


def _writable_by_user(ctr: Container) -> list[str]:
    """What the service's user may write under WorkingDir, as the kernel decides (os.access)."""
    probe = (
        "import os, sys\n"
        "top = os.getcwd()\n"
        "for d, dirs, files in os.walk(top):\n"
        "    for p in [d] + [os.path.join(d, f) for f in files]:\n"
        "        if os.access(p, os.W_OK): print(p)\n"
    )
    result = ctr.exec(["python", "-c", probe])
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@contextlib.contextmanager
def _running(ctr: Container, argv: list[str], log_path: Path, ready_url: str) -> Iterator[tuple[Popen, int]]:
    """Start ``argv`` in the container, wait until ``ready_url`` answers 200; yields the unshare
    process and the host PID of the container's PID 1. Kills what is left on the way out."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(ctr.command(argv), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not _ready(ready_url):
            assert proc.poll() is None, f"the container exited {proc.returncode}:\n{_tail(log_path)}"
            assert time.monotonic() < deadline, f"not ready after 300 s:\n{_tail(log_path)}"
            time.sleep(0.5)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        [pid1] = [int(c) for c in children]  # unshare's one child: PID 1 of the namespace
        yield proc, pid1
    finally:
        if proc.poll() is None:
            proc.kill()  # --kill-child: PID 1, and so its whole namespace, goes with it
            proc.wait(30)


def _tail(log_path: Path) -> str:
    return log_path.read_text(encoding="utf-8", errors="replace")[-4000:]


def _texts() -> list[str]:
    _, test = generate(seed=0)
    return ["张伟出生于杭州。", *(r["text"] for r in test[:4])]


def _check_answers(image: dict[str, list[dict]], venv: dict[str, list[dict]]) -> None:
    assert any(r["spo_list"] for r in image["spo_http"]), image  # not a comparison of empty answers
    assert any(any(r.values()) for r in image["uie_rpc"]), image
    assert close(image, venv), (image, venv)


def test_image_serves_like_the_venv_install_and_stops_cleanly(container, tmp_path):
    ctr = container
    cfg = ctr.config
    assert cfg["User"] == "10001" and cfg["Entrypoint"] and cfg["Cmd"], cfg
    assert _writable_by_user(ctr) == [], "the service's files must be read-only for its user"
    ports = _free_ports_config(ctr)
    health_env = {"IE_HEALTH_URL": f"http://127.0.0.1:{ports['kserve']}/v2/health/ready"}
    health_cmd = cfg["Healthcheck"]["Test"]
    assert health_cmd[0] == "CMD", health_cmd
    log_path = tmp_path / "container.log"
    texts = _texts()

    with _running(ctr, cfg["Entrypoint"] + cfg["Cmd"], log_path, health_env["IE_HEALTH_URL"]) as (proc, pid1):
        ns = os.readlink(f"/proc/{pid1}/ns/pid")
        assert _status(pid1, "NSpid")[-1] == "1", "the entrypoint must be PID 1 in its namespace"
        assert _status(pid1, "Uid")[:2] == _status(pid1, "Gid")[:2] == [cfg["User"]] * 2
        healthy = ctr.exec(health_cmd[1:], env=health_env)
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        image_answers = _answers(
            f"127.0.0.1:{ports['rpc']}", f"http://127.0.0.1:{ports['http']}/ie/prediction", texts
        )
        logger.info("serving: %d process(es) in the container's PID namespace", len(_pid_ns_members(ns)))
        os.kill(pid1, signal.SIGTERM)
        code = proc.wait(timeout=90)  # unshare exits with PID 1's status
        assert code == 0, f"exit {code} after SIGTERM:\n{_tail(log_path)}"
        assert _pid_ns_members(ns) == [], "processes left in the container's PID namespace"
    assert "using paddle" in log_path.read_text(encoding="utf-8")

    down = ctr.exec(health_cmd[1:], env=health_env)
    assert down.returncode != 0, "HEALTHCHECK must fail when the service is down"

    # What the service wrote: nothing but its state dir (and /tmp); the config is the test's.
    changes = _run(["podman", "diff", "--format", "json", ctr.cid]).stdout
    changed = {p for paths in json.loads(changes).values() for p in paths}
    config_file = f"{cfg['WorkingDir']}/{cfg['Cmd'][cfg['Cmd'].index('--config') + 1]}"
    allowed = (STATE_DIR, "/tmp", config_file)  # and their parent dirs

    def expected(path: str) -> bool:
        return any(path == a or path.startswith(a + "/") or a.startswith(path + "/") for a in allowed)

    unexpected = {p for p in changed if not expected(p)}
    assert not unexpected, f"the service wrote outside {STATE_DIR}: {sorted(unexpected)}"
    assert {f"{STATE_DIR}/ProcessInfo.json", f"{STATE_DIR}/PipelineServingLogs"} <= changed, sorted(changed)
    logger.info("written at run time: %s", sorted(changed))

    with run_server(tmp_path / "venv", backend="auto") as venv:
        _check_answers(image_answers, _answers(venv.rpc_endpoint, venv.http_url, texts))


def test_image_serves_on_onnx_runtime_like_the_venv_install(container, tmp_path):
    """The image's ONNX Runtime backend (the arm64 image's only one; `--backend onnx` here)."""
    cfg = container.config
    ports = _free_ports_config(container)
    url = f"http://127.0.0.1:{ports['kserve']}/v2/health/ready"
    texts = _texts()
    log_path = tmp_path / "container.log"
    with _running(container, [*cfg["Entrypoint"], *cfg["Cmd"], "--backend", "onnx"], log_path, url) as (
        proc,
        pid1,
    ):
        image_answers = _answers(
            f"127.0.0.1:{ports['rpc']}", f"http://127.0.0.1:{ports['http']}/ie/prediction", texts
        )
        os.kill(pid1, signal.SIGTERM)
        assert proc.wait(timeout=90) == 0, _tail(log_path)
    log = log_path.read_text(encoding="utf-8")
    assert "backend=onnx" in log and "backend=paddle" not in log, log[-4000:]
    with run_server(tmp_path / "venv", backend="onnx") as venv:
        _check_answers(image_answers, _answers(venv.rpc_endpoint, venv.http_url, texts))
