"""First op: parse and validate the request, tokenize, and hand one job to the model op."""

from __future__ import annotations

import logging
import time

from pipeline.config import IESettings
from pipeline.errors import IEError, InferenceError, internal_message
from pipeline.job_factory import build_job
from pipeline.jobs import job_array
from pipeline.metrics import RequestTrace, format_fields, record_rejected, request_log_fields, start_trace
from pipeline.models import load_served_models
from pipeline.serving_compat import Op

logger = logging.getLogger(__name__)


class TokenizeOp(Op):
    """request key/value -> ``{"job": [RequestJob]}``; whole-request errors end the request here."""

    def __init__(self, name: str, input_ops: list, settings: IESettings):
        super().__init__(name=name, input_ops=input_ops)
        self._settings = settings

    def init_op(self) -> None:
        self._models = load_served_models(self._settings)

    def preprocess(self, input_dicts, data_id=0, log_id=0):
        ((_, kv),) = input_dicts.items()
        text = kv.get("text") if self._settings.log_requests_text else None
        try:
            job = build_job(kv, self._models, self._settings.limits, log_id)
        except IEError as e:
            return self._refuse(kv, log_id, text, e, "request_error")
        except Exception:  # a bug of ours: the client learns nothing but the log id
            logger.exception("log_id=%s preparing the request failed", log_id)
            return self._refuse(kv, log_id, text, InferenceError(internal_message(log_id)), "internal")
        start_trace(job, text)
        return {"job": job_array(job)}, True, None, ""

    @staticmethod
    def _refuse(kv, log_id: int, text, error: IEError, outcome: str):
        """End the request here with ``error``, after its log line and metrics."""
        task = record_rejected(kv)
        trace = RequestTrace(log_id=log_id, task=task, created=time.perf_counter(), text=text)
        logger.info("request %s", format_fields(request_log_fields(trace, outcome, None, error.message)))
        return None, True, error.err_no, error.message
