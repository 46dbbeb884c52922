"""First op: parse and validate the request, tokenize, and hand one job to the model op."""

from __future__ import annotations

import logging

from pipeline.config import IESettings
from pipeline.errors import IEError
from pipeline.job_factory import build_job
from pipeline.jobs import job_array
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
        try:
            job = build_job(kv, self._models, self._settings.limits, log_id)
        except IEError as e:
            logger.info("log_id=%s rejected: %s", log_id, e.message)
            return None, True, e.err_no, e.message
        return {"job": job_array(job)}, True, None, ""
