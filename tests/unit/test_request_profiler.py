"""The DAG's request profiler: each thread's timestamps are its own request's, in the stock format."""

from __future__ import annotations

import re
import threading

from pipeline.paddle_serving.profiler import RequestProfiler


def test_a_profile_holds_its_own_threads_timestamps_in_order():
    profiler = RequestProfiler()
    other_started = threading.Event()
    other_may_finish = threading.Event()
    profiles: dict[str, str] = {}

    def request(data_id: int, wait: bool) -> None:
        profiler.record(f"call_{data_id}#DAG_0")
        if wait:
            other_started.set()
            other_may_finish.wait(10)
        profiler.record(f"call_{data_id}#DAG_1")
        profiles[str(data_id)] = profiler.gen_profile_str()

    slow = threading.Thread(target=request, args=(1, True))
    slow.start()
    assert other_started.wait(10)
    request(2, False)  # starts and ends while request 1 is in flight
    other_may_finish.set()
    slow.join(10)
    assert set(profiles) == {"1", "2"}
    for data_id, profile in profiles.items():
        assert re.fullmatch(
            rf"\nPROFILE\tpid:\d+\tcall_{data_id}#DAG_0:(\d+) call_{data_id}#DAG_1:(\d+) \n", profile
        ), profile


def test_a_profile_forgets_what_it_reported():
    profiler = RequestProfiler()
    stamp = profiler.record("prepack_3#@DAGExecutor_0")
    assert f"prepack_3#@DAGExecutor_0:{stamp} " in profiler.gen_profile_str()
    assert "prepack_3" not in profiler.gen_profile_str()
