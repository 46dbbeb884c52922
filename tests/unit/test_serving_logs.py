"""Paddle Serving's per-request log lines are dropped by default; its other lines stay; ours go to
stderr only."""

from __future__ import annotations

import logging

import pytest

from client.bench.local_server import SERVING_MODEL, run_server


def test_quiet_logger_drops_per_request_lines_before_a_record_and_keeps_the_rest():
    from pipeline.paddle_serving.logs import _QuietServingLogger

    seen: list[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    real = logging.getLogger("test_serving_logs.framework")
    real.propagate = False
    real.setLevel(logging.DEBUG)
    real.addHandler(_Keep())
    made = []
    factory = logging.getLogRecordFactory()
    logging.setLogRecordFactory(lambda *a, **k: made.append(1) or factory(*a, **k))
    try:
        quiet = _QuietServingLogger(real)
        quiet.warning("(data_id=3 log_id=0) OP=tokenize skip process stage. with_serving=False")
        quiet.info("prometheus inf count +1")
        quiet.info("(data_id=3 log_id=0) Succ predict")
        quiet.info("RequestOp unpack one request. log_id:0, clientip:  name:ie, method:prediction")
        assert made == []  # dropped before any record was built
        quiet.warning("Op(model) reset batch_size=1 (original: %d)", 16)
        quiet.info("[DAG] Succ init")
        quiet.error("(log_id=0) Failed to predict")
        quiet.debug("a debug line")
    finally:
        logging.setLogRecordFactory(factory)
    assert [r.getMessage() for r in seen] == [
        "Op(model) reset batch_size=1 (original: 16)",
        "[DAG] Succ init",
        "(log_id=0) Failed to predict",
        "a debug line",
    ]
    # records name the caller's line, not the stand-in's
    assert {r.funcName for r in seen} == {
        "test_quiet_logger_drops_per_request_lines_before_a_record_and_keeps_the_rest"
    }


def test_quiet_logs_replace_the_framework_loggers_once():
    import importlib

    from pipeline.paddle_serving import compat  # makes the framework importable
    from pipeline.paddle_serving.logs import _QuietServingLogger, quiet_serving_request_logs

    operator = importlib.import_module(compat.Op.__module__)  # paddle_serving_server's operator

    original = operator._LOGGER
    try:
        quiet_serving_request_logs()
        quiet_serving_request_logs()
        assert isinstance(operator._LOGGER, _QuietServingLogger)
        assert isinstance(operator._LOGGER.logger, logging.Logger)
    finally:
        operator._LOGGER = original


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
