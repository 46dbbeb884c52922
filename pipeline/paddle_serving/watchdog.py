"""Watches the op worker processes of a process-op DAG (``dag.is_thread_op: false``).

Paddle Serving starts each process op as ``concurrency`` daemon processes joined by queues; when
one dies (OOM killer, a crash in a native library, ``kill -9``) its queue is never read again and
every request routed through it hangs. Paddle Serving does not notice. The watchdog does: it
reports the dead worker and asks the server to stop, so that the supervisor (Docker, Kubernetes,
systemd) starts a fresh one, instead of a live process that never answers.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.managers
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpWorker:
    """One worker process of a process op."""

    op: str
    index: int
    process: multiprocessing.Process

    @property
    def pid(self) -> int | None:
        return self.process.pid


@dataclass(frozen=True)
class WorkerDeath:
    """A worker found dead, with how it ended."""

    op: str
    pid: int | None
    exitcode: int | None

    def describe(self) -> str:
        """One sentence for the log: which op, which pid, how it ended."""
        code = self.exitcode
        if code is not None and code < 0:
            try:
                how = f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        return f"op worker '{self.op}' (pid {self.pid}) {how}"


def op_workers(dag) -> list[OpWorker]:
    """The worker processes of a started Paddle Serving ``DAG`` (empty with thread ops).

    ``DAG.start`` appends each op's ``concurrency`` processes in the order of ``_actual_ops``.
    """
    started = list(getattr(dag, "_threads_or_proces", None) or [])
    if not started or not all(isinstance(p, multiprocessing.Process) for p in started):
        return []
    workers: list[OpWorker] = []
    for op in dag._actual_ops:
        for index in range(op.concurrency):
            workers.append(OpWorker(op.name, index, started[len(workers)]))
    return workers


def channel_manager(dag) -> multiprocessing.managers.SyncManager | None:
    """The manager process a process-op ``DAG``'s channels live in (None with thread ops).

    ``DAG.__init__`` starts it for process ops. It is not a worker, so the watchdog does not watch
    it, but it is a child like them: the server stops it after the workers (:func:`stop_manager`).
    """
    return getattr(dag, "_manager", None)


def stop_manager(manager: multiprocessing.managers.SyncManager | None) -> None:
    """Shut a started manager's process down and reap it (it is SIGTERMed after 1 s)."""
    if manager is not None:
        manager.shutdown()


def stop_processes(processes: list[multiprocessing.Process], timeout_s: float = 5.0) -> None:
    """SIGTERM the child processes still alive, SIGKILL those that do not stop in ``timeout_s``,
    and reap them."""
    alive = [p for p in processes if p.is_alive()]
    for p in alive:
        p.terminate()
    for p in alive:
        p.join(timeout_s)
        if p.is_alive():
            p.kill()
            p.join(timeout_s)


class WorkerWatchdog:
    """Polls ``workers`` every ``interval_s`` and calls ``on_death`` once, for the first dead one."""

    def __init__(
        self,
        workers: list[OpWorker],
        on_death: Callable[[WorkerDeath], None],
        interval_s: float = 0.5,
    ):
        self.workers = workers
        self.on_death = on_death
        self.interval_s = interval_s
        self.death: WorkerDeath | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="op-worker-watchdog", daemon=True)

    def start(self) -> WorkerWatchdog:
        """Start polling (does nothing without workers)."""
        if self.workers:
            summary = ", ".join(f"{w.op}[{w.index}] pid {w.pid}" for w in self.workers)
            logger.info("watching op worker processes: %s", summary)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling (the server is shutting down on purpose)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def terminate_workers(self, timeout_s: float = 5.0) -> None:
        """SIGTERM the workers still alive and reap them (they are daemons of this process)."""
        stop_processes([w.process for w in self.workers], timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for w in self.workers:
                if not w.process.is_alive():
                    self.death = WorkerDeath(w.op, w.pid, w.process.exitcode)
                    logger.error("%s: requests through it cannot finish; stopping", self.death.describe())
                    self.on_death(self.death)
                    return
