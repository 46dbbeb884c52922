"""Last op: turn a finished job into the response's JSON string (per-text results or errors)."""

from __future__ import annotations

import logging
import time

from pipeline.errors import InferenceError, internal_message
from pipeline.metrics import finish_request, format_fields, outcome_of, request_log_fields
from pipeline.schemas import RESULT_KEY, encode_results
from pipeline.serving_compat import Op

logger = logging.getLogger(__name__)


class DecodeOp(Op):
    """``{"job": [RequestJob]}`` -> ``{"result": "<JSON list>"}``."""

    def preprocess(self, input_dicts, data_id=0, log_id=0):
        ((_, data),) = input_dicts.items()
        job = data["job"][0]
        if job.failure is not None:
            self._log_request(job, outcome_of(job), job.failure.message)
            return None, True, job.failure.err_no, job.failure.message
        try:
            results = job.results()
        except Exception:
            logger.exception("log_id=%s decoding failed", log_id)
            message = internal_message(log_id)
            self._log_request(job, "internal", message)
            return None, True, InferenceError.err_no, message
        self._log_request(job, outcome_of(job))
        return {RESULT_KEY: encode_results(results)}, True, None, ""

    @staticmethod
    def _log_request(job, outcome: str, error: str | None = None) -> None:
        """The request's one log line (and its metrics)."""
        now = time.perf_counter()
        trace = finish_request(job, outcome, now)
        fields = request_log_fields(trace, outcome, now - job.created, error)
        logger.log(
            logging.ERROR if outcome == "internal" else logging.INFO, "request %s", format_fields(fields)
        )
