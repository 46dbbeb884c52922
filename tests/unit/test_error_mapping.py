"""The one error mapping: every pipeline error class keeps its kind through the DAG's product
codes, and the guard answers every error with its kind and no internals."""

from __future__ import annotations

import logging

import pytest

from pipeline.errors import (
    ERROR_TYPE_KEY,
    PIPELINE_ERRORS,
    error_from_answer,
    from_product_code,
    grpc_code_of,
    http_status_of,
    product_code,
)
from pipeline.paddle_serving.compat import GuardedServicer, guard_answer, pipeline_service_pb2


@pytest.mark.parametrize("cls", PIPELINE_ERRORS)
def test_every_pipeline_error_round_trips(cls):
    code = product_code(cls("m"))
    assert 51 <= code <= 99 and from_product_code(code) is cls
    again = error_from_answer(cls.err_no, "m", cls.kind)
    assert type(again) is cls and http_status_of(again) == cls.http_status
    assert grpc_code_of(again) >= 0


def test_codes_that_are_not_ours_map_to_none():
    assert from_product_code(5000) is None and from_product_code(50) is None


@pytest.mark.parametrize(
    ("err_no", "message", "kind", "shown"),
    [
        (5000, "bad schema", "invalid_schema", "bad schema"),
        (6000, "Raise_msg: timeout in op ClassName", None, "the request timed out inside the pipeline"),
        (8000, "rpc package error: list index out of range", None, "internal error; see the server log"),
        (10000, "Traceback ... /work/x.py", None, "internal error; see the server log"),
    ],
)
def test_the_guard_keeps_kinds_and_drops_internals(err_no, message, kind, shown):
    response = pipeline_service_pb2.Response(err_no=err_no, err_msg=message)
    if kind:
        response.key.append(ERROR_TYPE_KEY)
        response.value.append(kind)
    answer = guard_answer(response, log_id=7)
    assert answer.err_no == err_no and answer.err_msg.startswith(shown)
    assert list(answer.key) == [ERROR_TYPE_KEY] and answer.value[0] == (
        kind or error_from_answer(err_no, "").kind
    )


class _BrokenPipeline(GuardedServicer):
    """The guarded servicer over a pipeline that fails inside (its DAG was never built)."""

    def __init__(self) -> None:
        pass


@pytest.fixture
def compat_log(caplog):
    logger = logging.getLogger("pipeline.paddle_serving.compat")
    logger.disabled = False
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


@pytest.mark.parametrize("sent", [0, 4242])
def test_an_internal_error_answer_names_the_log_id_of_its_log_line(compat_log, sent):
    request = pipeline_service_pb2.Request(key=["task", "text"], value=["spo", "x"], name="ie", logid=sent)
    answer = _BrokenPipeline().inference(request, None)
    assert answer.err_no == 10000 and request.logid != 0
    assert sent in (0, request.logid)  # a client's id is kept; a request without one gets one
    assert answer.err_msg == f"internal error; see the server log (log_id={request.logid})"
    errors = [r.getMessage() for r in compat_log.records if r.levelno >= logging.ERROR]
    assert errors and all(f"log_id={request.logid} " in m for m in errors), errors
