"""Last op: :meth:`IEService.finish` -> the response's JSON string (per-text results or errors).

With thread ops the model op only hands jobs to their models' lanes: a job its lane has not run
yet goes on as it is, and the response op finishes it in the request's own thread.
"""

from __future__ import annotations

from pipeline.errors import IEError, product_code
from pipeline.paddle_serving.compat import Op
from pipeline.schemas import RESULT_KEY
from pipeline.service import IEService


class DecodeOp(Op):
    """``{"job": [RequestJob]}`` -> ``{"result": "<JSON list>"}``; a failed job ends as its error."""

    def __init__(self, name: str, input_ops: list, service: IEService):
        super().__init__(name=name, input_ops=input_ops)
        self._service = service

    def preprocess(self, input_dicts, data_id=0, log_id=0):
        ((_, data),) = input_dicts.items()
        job = data["job"][0]
        if not job.done.is_set():
            return {"job": data["job"]}, True, None, ""  # the response op waits for it
        try:
            return {RESULT_KEY: self._service.finish(job)}, True, None, ""
        except IEError as e:
            return None, True, product_code(e), e.message
