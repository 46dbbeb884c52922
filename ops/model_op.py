"""Second op: run the jobs of one or more requests (auto-batched) through the engine."""

from __future__ import annotations

import logging
import time

from pipeline.backends import Backend, create_backend, resolve_backend
from pipeline.config import IESettings
from pipeline.errors import ERR_INPUT, IEError, InferenceError, internal_message
from pipeline.metrics import CountingEngineJob, get_metrics, record_model_run, record_queue
from pipeline.models import load_served_models
from pipeline.runner import run_jobs
from pipeline.serving_compat import Op

logger = logging.getLogger(__name__)


class ModelOp(Op):
    """Owns one backend per served model; ``process`` gets the merged jobs of a batch."""

    def __init__(self, name: str, input_ops: list, settings: IESettings):
        super().__init__(name=name, input_ops=input_ops)
        self._settings = settings

    def init_op(self) -> None:
        ie = self._settings
        kind = resolve_backend(ie.backend)
        self._models = load_served_models(ie)
        self._backends: dict[str, Backend] = {
            name: create_backend(kind, m.dir, m.card, ie.intra_op_threads, ie.use_onednn)
            for name, m in self._models.items()
        }
        self.backend_kind = kind
        get_metrics().set_backend(kind)
        # Our process() runs local backends, not a Paddle Serving client: tell the framework.
        self.with_serving = True

    def preprocess(self, input_dicts, data_id=0, log_id=0):
        ((_, data),) = input_dicts.items()
        return data, False, None, ""

    def process(self, feed_batch, typical_logid=0):
        jobs = feed_batch[0]["job"]
        record_queue(jobs, time.perf_counter())
        for task in {job.task for job in jobs}:
            group = [job for job in jobs if job.task == task and job.engine is not None]
            if not group:
                continue
            model = self._models[task]
            counted = [CountingEngineJob(job.engine) for job in group]
            started = time.perf_counter()
            try:
                stats = run_jobs(
                    self._backends[task],
                    counted,
                    model.card.inputs,
                    model.card.outputs,
                    max_batch_rows=self._settings.max_batch_rows,
                    pad_id=model.tokenizer.pad_id,
                )
            except IEError as e:  # a client error keeps its message; an engine error is internal
                logger.error("log_id=%s %s batch failed: %s", typical_logid, task, e.message)
                for job in group:
                    job.failure = e if e.err_no == ERR_INPUT else InferenceError(internal_message(job.log_id))
            except Exception:
                logger.exception("log_id=%s %s batch failed", typical_logid, task)
                for job in group:
                    job.failure = InferenceError(internal_message(job.log_id))
            else:
                elapsed = time.perf_counter() - started
                record_model_run(task, group, counted, stats.batches, elapsed, self.backend_kind)
                logger.debug(
                    "log_id=%s %s: %d requests, batches %s, %d tokens",
                    typical_logid,
                    task,
                    len(group),
                    stats.batches,
                    stats.tokens,
                )
        return {"job": jobs}, 0, ""
