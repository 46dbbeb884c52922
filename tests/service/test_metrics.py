"""Metrics and the per-request log line: the recording functions on real jobs, the metrics server
on loopback, and the real service's counters after known traffic."""

from __future__ import annotations

import json
import shlex
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from client.bench.local_server import SERVING_MODEL, free_port, run_server, serving
from client.request import build_request
from client.rpc_client import connect
from pipeline.config import Limits
from pipeline.errors import InferenceError, InvalidRequest, InvalidText
from pipeline.jobs import RequestJob
from pipeline.metrics import (
    IEMetrics,
    finish_request,
    format_fields,
    metrics_app,
    outcome_of,
    record_model_run,
    record_queue,
    record_rejected,
    request_log_fields,
)
from pipeline.runner import RunStats
from pipeline.spo_job import SPOJob
from pipeline.tokenizer import SPECIAL_TOKENS, IETokenizer
from tests.service.test_kserve import wait_http_ready

TEXT = "张伟出生于杭州。"


def _tokenizer() -> IETokenizer:
    return IETokenizer({t: i for i, t in enumerate([*SPECIAL_TOKENS, *sorted(set(TEXT))])})


def _spo_job(slots: list) -> RequestJob:
    engine = SPOJob([TEXT], _tokenizer(), ["出生地"], max_seq_len=64)
    return RequestJob(task="spo", engine=engine, slots=slots, log_id=5)


def test_format_fields_quotes_what_needs_it():
    line = format_fields({"a": 1, "b": "x y", "c": None, "d": 1.25, "e": True, "f": 'q"'})
    assert line.split(" ", 1)[0] == "a=1"
    assert shlex.split(line) == ["a=1", "b=x y", "d=1.2", "e=true", 'f=q"']


def test_outcomes():
    assert outcome_of(_spo_job([0])) == "ok"
    assert outcome_of(_spo_job([0, InvalidText("empty")])) == "text_error"
    failed = _spo_job([0])
    failed.failure = InferenceError("engine")
    assert outcome_of(failed) == "internal"
    failed.failure = InvalidRequest("bad")
    assert outcome_of(failed) == "request_error"


def test_a_request_through_the_recorders():
    m = IEMetrics()
    job = _spo_job([0, InvalidText("empty")])
    record_queue([job], job.created + 0.25, m)
    rows = job.engine.next_rows()
    stats = RunStats(batches=[len(rows)], job_rows=[len(rows)], job_tokens=[sum(len(r) for r in rows)])
    record_model_run("spo", [job], stats, 0.1, "onnx", m)
    trace = finish_request(job, outcome_of(job), job.created + 0.5, m)

    def value(name: str, **labels: str) -> float | None:
        return m.registry.get_sample_value(name, labels)

    assert value("ie_requests_total", task="spo", outcome="text_error") == 1
    assert value("ie_requests_total", task="uie", outcome="ok") == 0  # series exist from the start
    assert value("ie_texts_total", task="spo", outcome="ok") == 1
    assert value("ie_texts_total", task="spo", outcome="error") == 1
    assert value("ie_tokens_total", task="spo") == len(TEXT) + 2 == stats.job_tokens[0]
    assert value("ie_queue_seconds_sum", task="spo") == pytest.approx(0.25)
    assert value("ie_request_latency_seconds_sum", task="spo") == pytest.approx(0.5)
    assert value("ie_model_execution_seconds_count", task="spo") == 1
    assert value("ie_engine_batch_rows_sum", task="spo") == 1
    assert value("ie_batch_requests_sum", task="spo") == 1
    fields = request_log_fields(trace, "text_error", 0.5)
    assert fields["tokens"] == len(TEXT) + 2 and fields["backend"] == "onnx" and fields["text"] is None
    assert "latency_ms=500.0" in format_fields(fields)


def test_rejected_requests_keep_labels_bounded():
    m = IEMetrics()
    assert record_rejected({"task": "ner"}, m) == "unknown"
    assert record_rejected({"task": "uie"}, m) == "uie"
    assert (
        m.registry.get_sample_value("ie_requests_total", {"task": "unknown", "outcome": "request_error"}) == 1
    )


def test_metrics_server_serves_prometheus_text():
    m = IEMetrics()
    m.set_backend("onnx")
    with (
        serving(metrics_app(Limits(), m)) as port,
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r,
    ):
        families = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
    assert families["ie_backend_info"].samples[0].labels == {"backend": "onnx"}
    assert {"ie_requests", "ie_request_latency_seconds", "ie_queue_seconds", "ie_tokens"} <= set(families)


# --- the real service ---------------------------------------------------------------------------


def scrape(port: int) -> dict[tuple, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    kserve, metrics = free_port(), free_port()
    with run_server(
        tmp_path_factory.mktemp("metrics"),
        backend="onnx",
        kserve_http_port=kserve,
        metrics_port=metrics,
        log_requests_text=True,
    ) as srv:
        wait_http_ready(f"http://127.0.0.1:{kserve}/v2/health/ready")
        srv.metrics_port = metrics
        yield srv


@pytest.mark.slow
@pytest.mark.skipif(not (SERVING_MODEL / "parity.json").exists(), reason="demo models not built")
def test_counters_move_by_exactly_the_traffic(service):
    client = connect(service.rpc_endpoint)
    schema = json.dumps({"人物": ["出生地"]}, ensure_ascii=False)
    before = scrape(service.metrics_port)
    sent = [
        ("spo", [TEXT], None),
        ("spo", ["陈静毕业于北辰大学。"], None),
        ("spo", [TEXT, ""], None),  # one bad text
        ("uie", [TEXT], schema),
        ("uie", ["陈静毕业于北辰大学。"], schema),
    ]
    for i, (task, texts, sch) in enumerate(sent):
        resp = client.predict(feed_dict=build_request(task, texts, sch), fetch=None, log_id=880000 + i)
        assert resp.err_no == 0, resp
    resp = client.predict(feed_dict=build_request("uie", [TEXT]), fetch=None, log_id=880009)  # no schema
    assert resp.err_no == 5000
    time.sleep(0.3)
    after = scrape(service.metrics_port)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("ie_requests_total", task="spo", outcome="ok") == 2
    assert delta("ie_requests_total", task="spo", outcome="text_error") == 1
    assert delta("ie_requests_total", task="uie", outcome="ok") == 2
    assert delta("ie_requests_total", task="uie", outcome="request_error") == 1
    assert delta("ie_requests_total", task="spo", outcome="internal") == 0
    assert delta("ie_texts_total", task="spo", outcome="ok") == 3
    assert delta("ie_texts_total", task="spo", outcome="error") == 1
    assert delta("ie_texts_total", task="uie", outcome="ok") == 2
    assert delta("ie_request_latency_seconds_count", task="spo") == 3
    assert delta("ie_request_latency_seconds_count", task="uie") == 2
    assert delta("ie_queue_seconds_count", task="spo") == 3
    assert delta("ie_batch_requests_sum", task="uie") == 2
    spo_tokens = sum(
        IETokenizer.from_file(SERVING_MODEL / "spo" / "vocab.txt").count_tokens(t) + 2
        for t in (TEXT, "陈静毕业于北辰大学。", TEXT)
    )
    assert delta("ie_tokens_total", task="spo") == spo_tokens
    assert delta("ie_tokens_total", task="uie") > 0
    assert after[("ie_backend_info", (("backend", "onnx"),))] == 1
    assert after[("ie_model_ready", (("model", "uie"),))] == 1

    log = service.log().splitlines()
    [bad] = [line for line in log if "log_id=880002 " in line]
    assert (
        "outcome=text_error" in bad and "texts=2" in bad and "text_errors=1" in bad and "backend=onnx" in bad
    )
    assert TEXT in bad  # log_requests_text: true
    [rejected] = [line for line in log if "log_id=880009 " in line]
    assert "outcome=request_error" in rejected and "schema" in rejected
