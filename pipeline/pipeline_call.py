"""Requests from the HTTP edges run through the pipeline's servicer in this process.

The servicer's ``inference`` blocks until the DAG answers, so async callers hand it to a thread
pool and wait at most ``timeout_s`` (then 504; the request itself finishes in the DAG). Answers
are dicts with the Response message's field names, as Paddle Serving's Go gateway writes them.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from google.protobuf import json_format

from pipeline.errors import RequestTimeout
from pipeline.paddle_serving.compat import GuardedServicer, call_pipeline, pipeline_service_pb2


def as_dict(response) -> dict[str, Any]:
    """A Response message as the gateway's JSON object (proto field names, defaults included)."""
    return json_format.MessageToDict(
        response, preserving_proto_field_name=True, including_default_value_fields=True
    )


def kv_request(kv: dict[str, str], log_id: int = 0, client_ip: str = "", name: str = "ie"):
    """A Request message for the key/value pairs ``kv``."""
    return pipeline_service_pb2.Request(
        key=list(kv),
        value=list(kv.values()),
        logid=log_id,
        clientip=client_ip,
        name=name,
        method="prediction",
    )


class PipelineCall:
    """Calls into one servicer from any thread or event loop."""

    def __init__(self, servicer: GuardedServicer, workers: int, timeout_s: float):
        self._servicer = servicer
        self._timeout = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="http-pipeline")

    def kv(self, kv: dict[str, str], log_id: int = 0) -> dict[str, Any]:
        """Blocking: run ``kv`` through the pipeline, return the answer dict."""
        return as_dict(call_pipeline(self._servicer, kv_request(kv, log_id)))

    async def request(self, request) -> Any:
        """Run a Request message; the Response message. Raises RequestTimeout."""
        future = asyncio.get_running_loop().run_in_executor(
            self._pool, call_pipeline, self._servicer, request
        )
        try:
            return await asyncio.wait_for(asyncio.shield(future), self._timeout)
        except TimeoutError as e:
            raise RequestTimeout(
                f"no answer within {self._timeout:g} s (ie.limits.request_timeout_ms)"
            ) from e

    async def kv_async(self, kv: dict[str, str], log_id: int = 0, client_ip: str = "") -> dict[str, Any]:
        """Async: run ``kv`` through the pipeline, return the answer dict."""
        return as_dict(await self.request(kv_request(kv, log_id, client_ip)))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
