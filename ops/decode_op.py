"""Last op: turn a finished job into the response's JSON string (per-text results or errors)."""

from __future__ import annotations

import logging
import time

from pipeline.errors import INTERNAL_MESSAGE, InferenceError
from pipeline.schemas import RESULT_KEY, encode_results
from pipeline.serving_compat import Op

logger = logging.getLogger(__name__)


class DecodeOp(Op):
    """``{"job": [RequestJob]}`` -> ``{"result": "<JSON list>"}``."""

    def preprocess(self, input_dicts, data_id=0, log_id=0):
        ((_, data),) = input_dicts.items()
        job = data["job"][0]
        if job.failure is not None:
            return None, True, job.failure.err_no, job.failure.message
        try:
            results = job.results()
        except Exception:
            logger.exception("log_id=%s decoding failed", log_id)
            return None, True, InferenceError.err_no, INTERNAL_MESSAGE
        logger.info(
            "log_id=%s task=%s texts=%d errors=%d ms=%.1f",
            log_id,
            job.task,
            len(job.slots),
            sum(isinstance(s, BaseException) for s in job.slots),
            (time.perf_counter() - job.created) * 1000,
        )
        return {RESULT_KEY: encode_results(results)}, True, None, ""
