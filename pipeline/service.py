"""The service's work, framework-free: prepare a request, run a batch of them, finish each.

:class:`IEService` owns the served models (cards, tokenizers) and their engines, loaded once per
process. The Paddle Serving ops are thin adapters over its three stages, and the baselines
(naive server, Triton) call the same methods:

- :meth:`IEService.prepare`: parse and validate a request's key/value pairs, check each text,
  tokenize, and build its :class:`~pipeline.jobs.RequestJob` (whole-request errors raise IEError);
- :meth:`IEService.run`: drive the jobs of one batch of requests through the engines, grouped by
  task, every job's rows of a stage in shared engine calls. A UIE job has several stages (a
  child prompt needs its parent's span), so this loops until no job has rows left: that is why
  UIE's tokenizing and decoding happen partly here and not only in the first and last stage;
- :meth:`IEService.finish`: the job's per-text results (or per-text errors) as the response's
  JSON string; a failed job raises its IEError.

Each stage records its own figures into the request's trace and the metrics, and :meth:`finish`
(or a refused :meth:`prepare`) writes the request's one log line.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from pipeline.backends import Backend, create_backend
from pipeline.config import IESettings
from pipeline.errors import ERR_INPUT, IEError, InferenceError, internal_message
from pipeline.job_factory import build_job
from pipeline.jobs import RequestJob, RequestTrace
from pipeline.metrics import (
    IEMetrics,
    finish_request,
    format_fields,
    get_metrics,
    outcome_of,
    record_model_run,
    record_queue,
    record_rejected,
    request_log_fields,
)
from pipeline.models import ServedModel, load_served_models
from pipeline.runner import run_jobs
from pipeline.schemas import encode_results

logger = logging.getLogger(__name__)


class IEService:
    """The served models of ``settings`` on the ``backend`` kind (``paddle`` or ``onnx``)."""

    def __init__(self, settings: IESettings, backend: str, metrics: IEMetrics | None = None):
        self.settings = settings
        self.backend = backend
        self.models: dict[str, ServedModel] = load_served_models(settings)
        self._metrics = metrics
        self._engines: dict[str, Backend] = {}
        self._engines_pid: int | None = None

    def engine_kind(self, name: str) -> str:
        """The engine model ``name`` runs on: ONNX Runtime for an INT8 model, else the service's."""
        return "onnx" if self.models[name].settings.precision == "int8" else self.backend

    def engine_label(self, name: str) -> str:
        """The engine and precision of model ``name`` as logs and metrics show it (``onnx-int8``)."""
        precision = self.models[name].settings.precision
        kind = self.engine_kind(name)
        return kind if precision == "fp32" else f"{kind}-{precision}"

    @property
    def metrics(self) -> IEMetrics:
        return self._metrics or get_metrics()

    def start_engines(self) -> None:
        """Load every model's engine in this process (again after a fork: engines do not survive
        one). Raises ModelLoadError naming the file that failed."""
        if self._engines and self._engines_pid == os.getpid():
            return
        ie = self.settings
        self._engines = {
            name: create_backend(
                self.engine_kind(name),
                m.dir,
                m.card,
                ie.intra_op_threads,
                ie.use_onednn,
                m.settings.precision,
            )
            for name, m in self.models.items()
        }
        self._engines_pid = os.getpid()
        self.metrics.set_backend(self.backend)

    def close(self) -> None:
        """Release the engines of this process."""
        if self._engines_pid == os.getpid():
            for engine in self._engines.values():
                engine.close()
        self._engines = {}

    # --- the three stages --------------------------------------------------------------------

    def prepare(self, kv: dict[str, Any], log_id: int = 0) -> RequestJob:
        """A validated, tokenized job for one request; raises IEError (logged and counted)."""
        text = kv.get("text") if self.settings.log_requests_text else None
        try:
            job = build_job(kv, self.models, self.settings.limits, log_id)
        except IEError as e:
            self._refused(kv, log_id, text, e, "request_error")
            raise
        except Exception as e:  # a bug of ours: the client learns nothing but the log id
            logger.exception("log_id=%s preparing the request failed", log_id)
            error = InferenceError(internal_message(log_id))
            self._refused(kv, log_id, text, error, "internal")
            raise error from e
        job.trace.text = text
        return job

    def run(self, jobs: Sequence[RequestJob]) -> None:
        """Run ``jobs`` (one batch of requests) to completion; a failure is set on the jobs it hit."""
        self.start_engines()
        record_queue(jobs, time.perf_counter(), self.metrics)
        for task in sorted({job.task for job in jobs}):
            group = [job for job in jobs if job.task == task and job.engine is not None]
            if group:
                self._run_task(task, group)

    def finish(self, job: RequestJob) -> str:
        """The response's JSON string for ``job``; raises the job's IEError if it failed."""
        if job.failure is not None:
            self._log(job, outcome_of(job), job.failure.message)
            raise job.failure
        try:
            results = job.results()
        except Exception as e:
            logger.exception("log_id=%s decoding failed", job.log_id)
            error = InferenceError(internal_message(job.log_id))
            self._log(job, "internal", error.message)
            raise error from e
        self._log(job, outcome_of(job))
        return encode_results(results)

    def answer(self, kv: dict[str, Any], log_id: int = 0) -> str:
        """All three stages for one request (the baselines' path); raises IEError."""
        job = self.prepare(kv, log_id)
        self.run([job])
        return self.finish(job)

    # --- helpers -----------------------------------------------------------------------------

    def _run_task(self, task: str, group: list[RequestJob]) -> None:
        model = self.models[task]
        started = time.perf_counter()
        try:
            stats = run_jobs(
                self._engines[task],
                [job.engine for job in group],
                model.card.inputs,
                model.card.outputs,
                max_batch_rows=self.settings.max_batch_rows,
                pad_id=model.tokenizer.pad_id,
            )
        except IEError as e:  # a client error keeps its message; an engine error is internal
            logger.error("%s batch of %d requests failed: %s", task, len(group), e.message)
            for job in group:
                job.failure = e if e.err_no == ERR_INPUT else InferenceError(internal_message(job.log_id))
        except Exception:
            logger.exception("%s batch of %d requests failed", task, len(group))
            for job in group:
                job.failure = InferenceError(internal_message(job.log_id))
        else:
            elapsed = time.perf_counter() - started
            record_model_run(task, group, stats, elapsed, self.engine_label(task), self.metrics)

    def _refused(self, kv: dict[str, Any], log_id: int, text: Any, error: IEError, outcome: str) -> None:
        task = record_rejected(kv, self.metrics)
        trace = RequestTrace(log_id=log_id, task=task, created=time.perf_counter(), text=text)
        logger.info("request %s", format_fields(request_log_fields(trace, outcome, None, error.message)))

    def _log(self, job: RequestJob, outcome: str, error: str | None = None) -> None:
        now = time.perf_counter()
        trace = finish_request(job, outcome, now, self.metrics)
        fields = request_log_fields(trace, outcome, now - job.created, error)
        level = logging.ERROR if outcome == "internal" else logging.INFO
        logger.log(level, "request %s", format_fields(fields))
