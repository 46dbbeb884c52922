"""A model's lane: its workers (engine instances) take queued jobs, side by side when there are
several, and all end after what was queued before ``stop``."""

from __future__ import annotations

import threading
import time

from pipeline.jobs import RequestJob
from pipeline.lanes import ModelLane


def _job(i: int) -> RequestJob:
    return RequestJob(task="uie", engine=None, slots=[0], log_id=i)


def _most_at_once(workers: int, jobs: int = 4) -> int:
    """Batches of one job each that sleep 50 ms; the most running at one time."""
    running, most, lock = 0, 0, threading.Lock()

    def run_batch(batch: list[RequestJob]) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    lane = ModelLane("m", run_batch, max_batch_requests=1, workers=workers)
    queued = [_job(i) for i in range(jobs)]
    lane.submit(queued)
    assert all(job.done.wait(5) for job in queued)
    lane.stop()
    return most


def test_one_worker_runs_one_batch_at_a_time():
    assert _most_at_once(workers=1) == 1


def test_each_instance_runs_a_batch_side_by_side():
    assert _most_at_once(workers=2) == 2


def test_stop_ends_every_worker_after_what_was_queued():
    ran: list[int] = []
    lane = ModelLane("m", lambda batch: ran.extend(j.log_id for j in batch), workers=3)
    queued = [_job(i) for i in range(20)]
    lane.submit(queued)
    lane.stop()
    assert lane.join(5)
    assert sorted(ran) == list(range(20)) and all(job.done.is_set() for job in queued)
