"""A model's own lane: its jobs queue here and its worker threads run what is queued.

Each served model has a lane, so rows of different models never share an engine call, a model's
batch limits and engine threads are its own, and a slow model holds only its own worker: the
model op hands jobs to their lanes and returns (thread ops), and each request waits for its own
job where it is answered. A lane has one worker per engine instance (``ie.engine_instances``):
each free worker takes what is queued, so instances run batches side by side.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from pipeline.jobs import RequestJob

logger = logging.getLogger(__name__)

_STOP = None


class ModelLane:
    """Runs ``run_batch`` over batches of queued jobs (at most ``max_batch_requests``), taken in
    order by ``workers`` threads; sets each job's ``done`` after its batch. ``stop`` ends the
    workers once the queue is empty."""

    def __init__(
        self,
        name: str,
        run_batch: Callable[[list[RequestJob]], None],
        max_batch_requests: int = 16,
        workers: int = 1,
    ):
        self.name = name
        self._run_batch = run_batch
        self._max = max(1, max_batch_requests)
        self._queue: queue.SimpleQueue[RequestJob | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"lane-{name}-{i}", daemon=True)
            for i in range(max(1, workers))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, jobs: Sequence[RequestJob]) -> None:
        for job in jobs:
            self._queue.put(job)

    def stop(self) -> None:
        """Finish what is queued, then end the worker threads (one stop mark each)."""
        for _ in self._threads:
            self._queue.put(_STOP)

    def join(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the workers to end (after :meth:`stop`); True if they did."""
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _next_job(self) -> RequestJob | None:
        """Block until a job (or the stop mark) is queued; profiles name this wait."""
        return self._queue.get()

    def _work(self) -> None:
        while True:
            first = self._next_job()
            if first is _STOP:
                return
            batch, stopping = [first], False
            while len(batch) < self._max:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stopping = True
                    break
                batch.append(job)
            try:
                self._run_batch(batch)
            except Exception:  # run_batch sets failures on jobs; this is a bug of ours
                logger.exception("model %s: a batch of %d requests failed", self.name, len(batch))
            finally:
                for job in batch:
                    job.done.set()
            if stopping:
                return
