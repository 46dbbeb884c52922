"""The model op's batching on a live server: requests that arrive together share engine calls,
answers do not depend on what they were batched with, and both ``ie.batching`` modes run."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from client import rpc_client
from client.bench.local_server import run_server

TEXTS = [f"张伟{i}出生于杭州，毕业于浙江大学。" for i in range(24)]
SCHEMA = ["人物", "地点"]

pytestmark = pytest.mark.slow  # live servers on the demo models


def _burst(server, task: str) -> list[dict]:
    """All TEXTS at once, one request each, from as many threads."""

    def one(text: str) -> dict:
        schema = SCHEMA if task == "uie" else None
        [result] = rpc_client.predict(task, [text], schema=schema, endpoint=server.rpc_endpoint)
        return result

    with ThreadPoolExecutor(len(TEXTS)) as pool:
        return list(pool.map(one, TEXTS))


def _rounded(value):
    """Results with probabilities to 4 places: rows padded to other lengths differ in the 7th."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return round(value, 4) if isinstance(value, float) else value


def _batch_sizes(log: str, task: str) -> list[int]:
    return [int(n) for n in re.findall(rf"task={task} outcome=ok .*?batch_requests=(\d+)", log)]


@pytest.mark.parametrize("task", ["spo", "uie"])
def test_adaptive_batching_merges_a_burst_and_answers_as_one_at_a_time(shared_server, task) -> None:
    assert shared_server.config()["ie"]["batching"] == "adaptive"
    schema = SCHEMA if task == "uie" else None
    alone = [rpc_client.predict(task, [t], schema, endpoint=shared_server.rpc_endpoint)[0] for t in TEXTS]
    seen = len(_batch_sizes(shared_server.log(), task))
    together = _burst(shared_server, task)
    assert _rounded(together) == _rounded(alone)
    sizes = _batch_sizes(shared_server.log(), task)[seen:]
    assert len(sizes) == len(TEXTS)
    assert max(sizes) > 1, f"no request shared an engine call: {sizes}"


def test_timeout_batching_still_runs(tmp_path) -> None:
    with run_server(
        tmp_path, backend="onnx", batching="timeout", op={"model": {"auto_batching_timeout": 4}}
    ) as server:
        together = _burst(server, "spo")
        assert all("spo_list" in r for r in together)
        assert max(_batch_sizes(server.log(), "spo")) > 1
