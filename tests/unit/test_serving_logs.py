"""Paddle Serving's per-request log lines are dropped by default; its other lines stay; ours go to
stderr only."""

from __future__ import annotations

import logging

import pytest

from client.bench.local_server import SERVING_MODEL, run_server


def _record(name: str, level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, "operator.py", 1, msg, None, None)


def test_filter_drops_per_request_lines_and_keeps_the_rest():
    from pipeline.paddle_serving.logs import _DropServingRequestLines

    drop = _DropServingRequestLines()
    name = "paddle_serving_server.pipeline.operator"
    per_request = [
        "(data_id=3 log_id=0) OP=tokenize skip process stage. with_serving=False, is_skip_process=True",
        "prometheus inf count +1",
        "(data_id=3 log_id=0) Succ predict",
        "RequestOp unpack one request. log_id:0, clientip:  name:ie, method:prediction, time:1.0",
    ]
    assert not any(drop.filter(_record(name, logging.INFO, m)) for m in per_request)
    kept = ["Op(model) reset batch_size=1 (original: 16)", "[DAG] Succ init", "(log_id=0) Failed to predict"]
    assert all(drop.filter(_record(name, logging.WARNING, m)) for m in kept)


@pytest.mark.slow
@pytest.mark.skipif(not (SERVING_MODEL / "parity.json").exists(), reason="demo models not built")
@pytest.mark.parametrize("keep", [False, True])
def test_pipeline_log_holds_serving_request_lines_only_when_asked(tmp_path, keep):
    from client import rpc_client

    with run_server(tmp_path, backend="onnx", serving_request_logs=keep) as srv:
        for _ in range(5):
            rpc_client.predict("spo", "张伟出生于杭州。", endpoint=srv.rpc_endpoint)
    log = (tmp_path / "PipelineServingLogs" / "pipeline.log").read_text(encoding="utf-8", errors="replace")
    # our own line per request is always written, once: to stderr, not also into Paddle Serving's file
    assert srv.log().count("outcome=ok") >= 5 and "outcome=ok" not in log
    assert ("skip process stage" in log) is keep
    assert ("prometheus inf count" in log) is keep
