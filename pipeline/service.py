"""The service's work, framework-free: prepare a request, run a batch of them, finish each.

:class:`IEService` owns the served models (cards, tokenizers, engines) in a
:class:`~pipeline.registry.ModelRegistry`, by name. Each model has its own
:class:`~pipeline.lanes.ModelLane` (its engine calls, batch limits and threads). The Paddle
Serving ops are thin adapters over its three stages, and the baselines (naive server, Triton)
call the same methods:

- :meth:`IEService.prepare`: parse and validate a request's key/value pairs, pick its model (the
  ``model`` key, else the task's default), check each text, tokenize, and build its
  :class:`~pipeline.jobs.RequestJob` (whole-request errors raise IEError);
- :meth:`IEService.submit` hands jobs to their models' lanes and returns; :meth:`IEService.run`
  also waits for them. A lane drives its jobs through the engine, every job's rows of a stage in
  shared engine calls. A UIE job has several stages (a child prompt needs its parent's span), so
  this loops until no job has rows left: that is why UIE's tokenizing and decoding happen partly
  there and not only in the first and last stage;
- :meth:`IEService.finish`: the job's per-text results (or per-text errors) as the response's
  JSON string, once its lane ran it; a failed job raises its IEError.

Each stage records its own figures into the request's trace and the metrics, and :meth:`finish`
(or a refused :meth:`prepare`) writes the request's one log line.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from pipeline.backends import create_backend
from pipeline.config import IESettings
from pipeline.errors import ERR_INPUT, IEError, InferenceError, RequestTimeout, internal_message
from pipeline.job_factory import build_model_job
from pipeline.jobs import RequestJob, RequestTrace
from pipeline.lanes import ModelLane
from pipeline.memory import rss_bytes
from pipeline.metrics import (
    IEMetrics,
    finish_request,
    format_fields,
    get_metrics,
    outcome_of,
    record_model_memory,
    record_model_run,
    record_queue,
    record_rejected,
    request_log_fields,
)
from pipeline.models import ServedModel, load_served_models
from pipeline.registry import LoadedModel, ModelRegistry
from pipeline.runner import RunBounds, run_jobs
from pipeline.schemas import encode_results

logger = logging.getLogger(__name__)


class IEService:
    """The served models of ``settings`` on the ``backend`` kind (``paddle`` or ``onnx``).

    ``batch_requests``: at most this many requests in one lane batch (``op.model.batch_size``).
    """

    def __init__(
        self,
        settings: IESettings,
        backend: str,
        metrics: IEMetrics | None = None,
        batch_requests: int = 16,
    ):
        self.settings = settings
        self.backend = backend
        self.batch_requests = batch_requests
        self._metrics = metrics
        served = load_served_models(settings)
        self.registry = ModelRegistry({name: self.loaded_model(m) for name, m in served.items()})
        self._engines_pid: int | None = None

    @property
    def models(self) -> dict[str, ServedModel]:
        """The models served now, by name."""
        return self.registry.served()

    def loaded_model(self, served: ServedModel) -> LoadedModel:
        """``served`` as the registry holds it, its engine not started."""
        return LoadedModel(served, self._kind(served))

    def _kind(self, served: ServedModel) -> str:
        return "onnx" if served.settings.precision == "int8" else self.backend

    def engine_kind(self, name: str) -> str:
        """The engine model ``name`` runs on: ONNX Runtime for an INT8 model, else the service's."""
        return self.registry.get(name).engine_kind

    def engine_label(self, name: str) -> str:
        """The engine and precision of model ``name`` as logs and metrics show it (``onnx-int8``)."""
        return self.registry.get(name).engine_label

    @property
    def metrics(self) -> IEMetrics:
        return self._metrics or get_metrics()

    def start_engines(self) -> None:
        """Load every model's engine in this process (again after a fork: engines do not survive
        one). Raises ModelLoadError naming the file that failed."""
        if self._engines_pid == os.getpid():
            return
        self.registry.each(self.start_model)
        self._engines_pid = os.getpid()
        self.metrics.set_backend(self.backend)

    def start_model(self, model: LoadedModel) -> None:
        """Load ``model``'s engine and start its lane in this process; its memory is measured."""
        if model.pid == os.getpid() and model.engine is not None:
            return
        m, ie = model.served, self.settings
        threads, instances = ie.threads_of(m.settings), ie.instances_of(m.settings)
        before = rss_bytes()
        engine = create_backend(
            model.engine_kind,
            m.dir,
            m.card,
            threads,
            ie.use_onednn,
            m.settings.precision,
            spin_wait=ie.onnx_spin_wait,
        )
        model.rss_bytes = max(rss_bytes() - before, 0)
        model.engine, model.pid = engine, os.getpid()
        model.lane = ModelLane(
            m.name,
            lambda jobs: self._run_model(model, jobs),
            self.batch_requests,
            workers=instances,
        )
        record_model_memory(m.name, model.rss_bytes, self.metrics)
        logger.info(
            "model %s (task %s, version %s, %s, threads %d, instances %d): loaded from %s, "
            "resident memory +%.1f MiB",
            m.name,
            m.task,
            m.version,
            model.engine_label,
            threads,
            instances,
            m.dir,
            model.rss_bytes / 2**20,
        )

    def close(self) -> None:
        """Release the engines of this process."""
        if self._engines_pid == os.getpid():
            self.registry.each(lambda m: m.stop_engine())
        self._engines_pid = None

    # --- the three stages --------------------------------------------------------------------

    def prepare(self, kv: dict[str, Any], log_id: int = 0) -> RequestJob:
        """A validated, tokenized job for one request; raises IEError (logged and counted)."""
        text = kv.get("text") if self.settings.log_requests_text else None
        model = None
        try:
            model = self.registry.acquire(kv)
            job = build_model_job(kv, model.served, self.settings.limits, log_id)
        except IEError as e:
            self._refused(kv, log_id, text, e, "request_error", model)
            raise
        except Exception as e:  # a bug of ours: the client learns nothing but the log id
            logger.exception("log_id=%s preparing the request failed", log_id)
            error = InferenceError(internal_message(log_id))
            self._refused(kv, log_id, text, error, "internal", model)
            raise error from e
        job.handle = model
        job.trace.text = text
        return job

    def prepare_for(self, model: LoadedModel, kv: dict[str, Any]) -> RequestJob:
        """A job of ``kv`` on ``model`` whether or not it is served yet (a warm-up request)."""
        model.acquire()
        try:
            job = build_model_job(kv, model.served, self.settings.limits)
        except BaseException:
            model.release()
            raise
        job.handle = model
        return job

    def submit(self, jobs: Sequence[RequestJob]) -> None:
        """Hand ``jobs`` to their models' lanes; returns at once (``job.done`` is set later)."""
        self.start_engines()
        by_lane: dict[int, tuple[LoadedModel, list[RequestJob]]] = {}
        for job in jobs:
            model = job.handle
            if model is None:  # pickled from another op process: the model of this one
                try:
                    model = job.handle = self.registry.acquire_name(job.model)
                except IEError as e:
                    job.failure = e
            if model is not None and (job.engine is None or job.failure is not None):
                job.handle = None
                model.release()
                model = None
            if model is None:
                job.done.set()
                continue
            if model.lane is None or model.pid != os.getpid():
                self.start_model(model)
            by_lane.setdefault(id(model), (model, []))[1].append(job)
        for model, group in by_lane.values():
            model.lane.submit(group)

    def run(self, jobs: Sequence[RequestJob]) -> None:
        """Run ``jobs`` to completion; a failure is set on the jobs it hit."""
        self.submit(jobs)
        for job in jobs:
            job.done.wait()

    def finish(self, job: RequestJob, wait_s: float | None = None) -> str:
        """The response's JSON string for ``job`` (waiting up to ``wait_s`` for its lane); raises
        the job's IEError if it failed."""
        if not job.done.wait(wait_s):
            job.failure = RequestTimeout(f"no answer within {wait_s:g} s (ie.limits.request_timeout_ms)")
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

    def _run_model(self, model: LoadedModel, group: list[RequestJob]) -> None:
        """A lane's batch: the jobs of one model through its engine (then each lets go of it)."""
        served = model.served
        record_queue(group, time.perf_counter(), self.metrics)
        started = time.perf_counter()
        try:
            limits = self.settings.limits
            bounds = RunBounds(
                max_batch_rows=self.settings.batch_rows_of(served.settings),
                max_output_bytes=limits.max_output_bytes_per_call,
                row_output_bytes=served.card.output_bytes_per_row,
                max_job_rows=limits.max_rows_per_request,
            )
            stats = run_jobs(
                model.engine,
                [job.engine for job in group],
                served.card.inputs,
                served.card.outputs,
                pad_id=served.tokenizer.pad_id,
                bounds=bounds,
            )
            for index, error in stats.refused.items():
                group[index].failure = error
        except IEError as e:  # a client error keeps its message; an engine error is internal
            logger.error("model %s: batch of %d requests failed: %s", served.name, len(group), e.message)
            for job in group:
                job.failure = e if e.err_no == ERR_INPUT else InferenceError(internal_message(job.log_id))
        except Exception:
            logger.exception("model %s: batch of %d requests failed", served.name, len(group))
            for job in group:
                job.failure = InferenceError(internal_message(job.log_id))
        else:
            elapsed = time.perf_counter() - started
            record_model_run(served.task, group, stats, elapsed, model.engine_label, self.metrics)
        finally:
            for job in group:
                if job.handle is model:
                    job.handle = None
                    model.release()

    def _refused(
        self,
        kv: dict[str, Any],
        log_id: int,
        text: Any,
        error: IEError,
        outcome: str,
        model: LoadedModel | None,
    ) -> None:
        if model is not None:
            model.release()
        name = model.name if model is not None else None
        task = record_rejected(kv, self.metrics, model.served.task if model is not None else None, name)
        trace = RequestTrace(
            log_id=log_id, task=task, created=time.perf_counter(), text=text, model=name or ""
        )
        logger.info("request %s", format_fields(request_log_fields(trace, outcome, None, error.message)))

    def _log(self, job: RequestJob, outcome: str, error: str | None = None) -> None:
        now = time.perf_counter()
        trace = finish_request(job, outcome, now, self.metrics)
        fields = request_log_fields(trace, outcome, now - job.created, error)
        level = logging.ERROR if outcome == "internal" else logging.INFO
        logger.log(level, "request %s", format_fields(fields))
