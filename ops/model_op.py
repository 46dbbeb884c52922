"""Second op: the jobs of the requests auto-batching merged, to their models' lanes.

This op owns the engines (loaded in its own process with process ops). With thread ops it hands
each job to its model's lane (:meth:`IEService.submit`) and returns: each model batches and runs
its own jobs, and a slow model holds no op thread. With process ops the job must be done before
it is pickled to the decode process, so it waits (:meth:`IEService.run`). A UIE job has several
stages, so its later tokenizing (child prompts built from parent spans) and partial decoding
happen in the lane, stage after stage, until no job has rows left.
"""

from __future__ import annotations

from pipeline.paddle_serving.batching import AdaptiveBatchingOp
from pipeline.service import IEService


class ModelOp(AdaptiveBatchingOp):
    """``process`` gets the merged jobs of a batch; failures are set on the jobs they hit.

    Batches are what is queued when the engine is free (``adaptive``, ``ie.batching: adaptive``)
    or Paddle Serving's ``auto_batching_timeout`` batches.
    """

    def __init__(
        self, name: str, input_ops: list, service: IEService, adaptive: bool = True, wait: bool = False
    ):
        super().__init__(name=name, input_ops=input_ops, adaptive=adaptive)
        self._service = service
        self._wait = wait

    def init_op(self) -> None:
        self._service.start_engines()
        # Our process() runs local backends, not a Paddle Serving client: tell the framework.
        self.with_serving = True

    def preprocess(self, input_dicts, data_id=0, log_id=0):
        ((_, data),) = input_dicts.items()
        return data, False, None, ""

    def process(self, feed_batch, typical_logid=0):
        jobs = feed_batch[0]["job"]
        if self._wait:
            self._service.run(list(jobs))
        else:
            self._service.submit(list(jobs))
        return {"job": jobs}, 0, ""
