"""First op: :meth:`IEService.prepare` (parse, validate, tokenize) -> one job per request.

Whole-request errors end the request here, with the error's ``err_no`` and message.
"""

from __future__ import annotations

from pipeline.errors import IEError, product_code
from pipeline.jobs import job_array
from pipeline.paddle_serving.compat import Op
from pipeline.service import IEService


class TokenizeOp(Op):
    """request key/value -> ``{"job": [RequestJob]}``."""

    def __init__(self, name: str, input_ops: list, service: IEService):
        super().__init__(name=name, input_ops=input_ops)
        self._service = service

    def preprocess(self, input_dicts, data_id=0, log_id=0):
        ((_, kv),) = input_dicts.items()
        try:
            job = self._service.prepare(kv, log_id)
        except IEError as e:
            return None, True, product_code(e), e.message
        return {"job": job_array(job)}, True, None, ""
