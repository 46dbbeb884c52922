"""A model's own lane: its jobs queue here and its one worker thread runs what is queued.

Each served model has a lane, so rows of different models never share an engine call, a model's
batch limits and engine threads are its own, and a slow model holds only its own worker: the
model op hands jobs to their lanes and returns (thread ops), and each request waits for its own
job where it is answered.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence

from pipeline.jobs import RequestJob

logger = logging.getLogger(__name__)

_STOP = None


class ModelLane:
    """Runs ``run_batch`` over batches of queued jobs (at most ``max_batch_requests``), in order;
    sets each job's ``done`` after its batch. ``stop`` ends the worker once the queue is empty."""

    def __init__(
        self, name: str, run_batch: Callable[[list[RequestJob]], None], max_batch_requests: int = 16
    ):
        self.name = name
        self._run_batch = run_batch
        self._max = max(1, max_batch_requests)
        self._queue: queue.SimpleQueue[RequestJob | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=f"lane-{name}", daemon=True)
        self._thread.start()

    def submit(self, jobs: Sequence[RequestJob]) -> None:
        for job in jobs:
            self._queue.put(job)

    def stop(self) -> None:
        """Finish what is queued, then end the worker thread."""
        self._queue.put(_STOP)

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
