"""Prometheus metrics of the service, and the one structured log line per request.

The service core records into one process-wide :class:`IEMetrics` (:func:`get_metrics`), which the metrics
app (:func:`metrics_app`) serves as Prometheus text. That assumes thread ops
(``dag.is_thread_op: true``, the default): with process ops each op process would count on its own
and the server would see none of it.

A request's numbers travel with its job as a :class:`~pipeline.jobs.RequestTrace`:
:class:`~pipeline.service.IEService` starts it when it prepares the job, adds queue time, rows,
tokens, batch and backend when it runs it, and finishes it (metrics and the log line). Names and
labels are listed in README's "Operations" section.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)

from pipeline.config import Limits
from pipeline.errors import InvalidRequest, MethodNotAllowed, NotFound
from pipeline.http.app import HttpApp, Request, Response
from pipeline.jobs import RequestJob, RequestTrace
from pipeline.runner import RunStats

logger = logging.getLogger(__name__)

TASKS = ("uie", "spo")
OUTCOMES = ("ok", "request_error", "text_error", "internal")
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def task_label(task: Any) -> str:
    """The ``task`` label: a served task name, or ``unknown`` (keeps label cardinality bounded)."""
    return task if task in TASKS else "unknown"


class IEMetrics:
    """The service's metric families, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ie_requests", "Requests by task and outcome.", ["task", "outcome"], registry=r
        )
        self.request_latency = Histogram(
            "ie_request_latency_seconds",
            "From the tokenize op's job creation to the decode op's answer.",
            ["task"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "ie_queue_seconds",
            "From job creation (tokenize op) to the start of its model's lane batch.",
            ["task"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.model_time = Histogram(
            "ie_model_execution_seconds",
            "Engine time of one lane batch (one model's jobs).",
            ["task"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "ie_engine_batch_rows", "Rows per engine call.", ["task"], buckets=COUNT_BUCKETS, registry=r
        )
        self.batch_requests = Histogram(
            "ie_batch_requests",
            "Requests of one model in one lane batch.",
            ["task"],
            buckets=COUNT_BUCKETS,
            registry=r,
        )
        self.texts = Counter(
            "ie_texts", "Texts processed, by per-text outcome (ok, error).", ["task", "outcome"], registry=r
        )
        self.tokens = Counter(
            "ie_tokens", "Tokens run through the engine (no padding).", ["task"], registry=r
        )
        self.backend = Info("ie_backend", "The inference backend in use.", registry=r)
        self.model_ready = Gauge(
            "ie_model_ready", "1 once the model answered its warm-up request.", ["model"], registry=r
        )
        self.model_requests = Counter(
            "ie_model_requests",
            "Requests by served model name and outcome.",
            ["model", "outcome"],
            registry=r,
        )
        self.model_latency = Histogram(
            "ie_model_request_latency_seconds",
            "Request latency by served model name.",
            ["model"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.model_memory = Gauge(
            "ie_model_resident_memory_bytes",
            "Resident memory the model's engine load added to the process (RSS delta at load).",
            ["model"],
            registry=r,
        )
        self.model_loads = Counter(
            "ie_model_loads",
            "Model loads and unloads (model control) by outcome.",
            ["model", "action", "outcome"],
            registry=r,
        )
        for task in TASKS:
            for outcome in OUTCOMES:
                self.requests.labels(task, outcome)
            for outcome in ("ok", "error"):
                self.texts.labels(task, outcome)
            self.tokens.labels(task)

    def set_backend(self, kind: str) -> None:
        """Record the backend in use (``ie_backend_info{backend=...} 1``)."""
        self.backend.info({"backend": kind})


_metrics: IEMetrics | None = None
_metrics_lock = threading.Lock()


def get_metrics() -> IEMetrics:
    """The process-wide metrics, created on first use."""
    global _metrics
    with _metrics_lock:
        if _metrics is None:
            _metrics = IEMetrics()
        return _metrics


def model_ready_setter(models: Sequence[str], metrics: IEMetrics | None = None) -> Callable[[str], None]:
    """Set ``ie_model_ready`` to 0 for ``models``; the returned callable sets one to 1."""
    m = metrics or get_metrics()
    for name in models:
        m.model_ready.labels(name).set(0)
    return lambda name: m.model_ready.labels(name).set(1)


def metrics_app(limits: Limits, metrics: IEMetrics | None = None) -> HttpApp:
    """The ASGI app of ``GET /metrics`` (Prometheus text)."""
    disable_created_metrics()  # no *_created series beside each counter and histogram
    registry = (metrics or get_metrics()).registry

    async def handle(request: Request) -> Response:
        if request.path != "/metrics":
            raise NotFound(f"no route {request.path}; metrics are at /metrics")
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed(f"method {request.method} is not allowed; use GET")
        return Response(200, generate_latest(registry), [(b"content-type", CONTENT_TYPE_LATEST.encode())])

    return HttpApp(handle, limits, lambda e: {"error": e.message}, "metrics")


def record_model_memory(model: str, rss: int, metrics: IEMetrics | None = None) -> None:
    """At a model's load: the resident memory its engine added."""
    (metrics or get_metrics()).model_memory.labels(model).set(rss)


def forget_model(model: str, metrics: IEMetrics | None = None) -> None:
    """After an unload: the model's gauges go (its counters stay, as Prometheus expects)."""
    m = metrics or get_metrics()
    for gauge in (m.model_memory, m.model_ready):
        with contextlib.suppress(KeyError):
            gauge.remove(model)


def record_queue(jobs: Sequence[RequestJob], started: float, metrics: IEMetrics | None = None) -> None:
    """Model op, start of ``process``: each job's wait since its creation."""
    m = metrics or get_metrics()
    for job in jobs:
        wait = max(started - job.created, 0.0)
        job.trace.queue_s = wait
        m.queue_time.labels(task_label(job.task)).observe(wait)


def record_model_run(
    task: str,
    jobs: Sequence[RequestJob],
    stats: RunStats,
    elapsed_s: float,
    backend: str,
    metrics: IEMetrics | None = None,
) -> None:
    """After one task's ``run_jobs`` over ``jobs``: batch sizes, engine time, tokens, per-job numbers."""
    m = metrics or get_metrics()
    label = task_label(task)
    m.model_time.labels(label).observe(elapsed_s)
    m.batch_requests.labels(label).observe(len(jobs))
    for rows in stats.batches:
        m.batch_rows.labels(label).observe(rows)
    for job, rows, tokens in zip(jobs, stats.job_rows, stats.job_tokens, strict=True):
        trace = job.trace
        trace.rows, trace.tokens = rows, tokens
        trace.batch_requests, trace.engine_calls = len(jobs), len(stats.batches)
        trace.model_s, trace.backend = elapsed_s, backend
        m.tokens.labels(label).inc(tokens)


def outcome_of(job: RequestJob) -> str:
    """``ok``, ``text_error`` (some texts failed), ``request_error`` or ``internal``."""
    if job.failure is not None:
        return "request_error" if isinstance(job.failure, InvalidRequest) else "internal"
    if any(isinstance(s, BaseException) for s in job.slots):
        return "text_error"
    return "ok"


def finish_request(
    job: RequestJob, outcome: str, now: float | None = None, metrics: IEMetrics | None = None
) -> RequestTrace:
    """Decode op: count the request and its texts, observe its latency; returns its trace."""
    m = metrics or get_metrics()
    trace = job.trace
    label = task_label(job.task)
    latency = max((now if now is not None else time.perf_counter()) - job.created, 0.0)
    m.requests.labels(label, outcome).inc()
    m.request_latency.labels(label).observe(latency)
    if job.model:
        m.model_requests.labels(job.model, outcome).inc()
        m.model_latency.labels(job.model).observe(latency)
    if outcome in ("ok", "text_error"):
        m.texts.labels(label, "error").inc(trace.text_errors)
        m.texts.labels(label, "ok").inc(trace.texts - trace.text_errors)
    return trace


def record_rejected(
    kv: Mapping[str, Any],
    metrics: IEMetrics | None = None,
    task: str | None = None,
    model: str | None = None,
) -> str:
    """Tokenize op: count a whole-request error (under ``model`` when it resolved to one);
    returns the task label it was counted under."""
    m = metrics or get_metrics()
    label = task_label(task or kv.get("task"))
    m.requests.labels(label, "request_error").inc()
    if model:
        m.model_requests.labels(model, "request_error").inc()
    return label


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.1f}"
    if isinstance(v, int):
        return str(v)
    s = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
    if s and not any(c.isspace() or c in '"=' for c in s):
        return s
    return json.dumps(s, ensure_ascii=False)


def format_fields(fields: Mapping[str, Any]) -> str:
    """``key=value`` pairs in order; values with spaces, quotes or ``=`` are JSON-quoted, None skipped."""
    return " ".join(f"{k}={_value(v)}" for k, v in fields.items() if v is not None)


def request_log_fields(
    trace: RequestTrace, outcome: str, latency_s: float | None, error: str | None = None
) -> dict[str, Any]:
    """The fields of a request's log line (the text only if the trace kept it)."""
    return {
        "log_id": trace.log_id,
        "task": trace.task,
        "outcome": outcome,
        "model": trace.model or None,
        "texts": trace.texts,
        "text_errors": trace.text_errors,
        "tokens": trace.tokens,
        "rows": trace.rows,
        "batch_requests": trace.batch_requests,
        "engine_calls": trace.engine_calls,
        "backend": trace.backend or None,
        "queue_ms": None if trace.queue_s is None else trace.queue_s * 1000,
        "model_ms": None if trace.model_s is None else trace.model_s * 1000,
        "latency_ms": None if latency_s is None else latency_s * 1000,
        "error": error,
        "text": trace.text,
    }
