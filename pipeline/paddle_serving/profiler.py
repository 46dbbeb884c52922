"""The DAG's request timestamps, kept per request instead of in one queue for all requests.

Paddle Serving's ``DAGExecutor.call`` records six timestamps per request on one shared
``TimeProfiler`` and ends with its ``gen_profile_str``, whether or not anyone asked for a profile.
That profiler keeps every request's timestamps in one queue under one lock, and each
``gen_profile_str`` takes out, and puts back, the open timestamps of every other request in
flight: per request 23 us alone and 100 us with 32 in flight (timeit, docs/benchmark.md), with
every gRPC handler thread waiting on the one lock; and the profile a client asks for
(``pipeline.profile``) holds other requests' timestamps. A DAG call runs in one thread from its
first timestamp to its profile, so a thread's own list is that request's.
"""

from __future__ import annotations

import os
import threading
import time


class _ThreadRecords(threading.local):
    """One thread's timestamps, as profile text pieces."""

    def __init__(self) -> None:
        self.records: list[str] = []


class RequestProfiler:
    """What ``DAGExecutor`` calls on its ``_profiler``: ``record`` and ``gen_profile_str``, in the
    stock text format (``PROFILE<TAB>pid:N<TAB>name_tag:microseconds ...``)."""

    def __init__(self) -> None:
        self._head = f"PROFILE\tpid:{os.getpid()}\t"
        self._local = _ThreadRecords()

    def enable(self, enable: bool) -> None:
        """Kept for the stock interface: the DAG always enables its profiler."""

    def record(self, name_with_tag: str) -> int:
        """Note ``name_with_tag`` (``call_7#DAG_0``) now; the timestamp in microseconds."""
        stamp = time.time_ns() // 1000
        self._local.records.append(f"{name_with_tag}:{stamp} ")
        return stamp

    def gen_profile_str(self) -> str:
        """This thread's timestamps since its last profile, as one profile line; then forgets them."""
        records, self._local.records = self._local.records, []
        return f"\n{self._head}{''.join(records)}\n"
