"""Paddle Serving's HTTP route in Python: ``POST /<service>/<method>`` with the Request as JSON.

Paddle Serving's HTTP port is served by ``pipeline/gateway/libproxy_server.so``, an x86-64 Go
binary that forwards to the gRPC port over loopback (``ie.http_gateway: go``, started by
:func:`pipeline.paddle_serving.compat.start_go_gateway`). This app speaks the same URL and JSON (the
``Request`` message: ``key``, ``value`` and optionally ``logid``, ``clientip``; the answer is the
``Response`` message with proto field names, defaults included) but runs the request through the
pipeline's servicer in this process. Errors before the pipeline come back in grpc-gateway's
shape ``{"error", "code", "message"}`` with the status of :mod:`pipeline.errors`.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from pipeline.config import Limits
from pipeline.errors import IEError, InvalidRequest, MethodNotAllowed, NotFound, grpc_code_of
from pipeline.http.app import HttpApp, Request, Response
from pipeline.paddle_serving.compat import pipeline_service_pb2
from pipeline.pipeline_call import PipelineCall, as_dict
from pipeline.schemas import loads_json


def gateway_error(exc: IEError) -> dict[str, Any]:
    """grpc-gateway's error body."""
    return {"error": exc.message, "code": grpc_code_of(exc), "message": exc.message}


def parse_request_body(body: bytes, max_depth: int):
    """The JSON body as a Request message; raises InvalidRequest (or NestedTooDeeply)."""
    try:
        data = loads_json(body or b"{}", max_depth, "the body")
    except ValueError as e:
        raise InvalidRequest("invalid JSON body: not a JSON document in UTF-8") from e
    if not isinstance(data, dict):
        raise InvalidRequest("invalid JSON body: the body must be a JSON object")
    message = pipeline_service_pb2.Request()
    try:
        json_format.ParseDict(data, message)
    except json_format.ParseError as e:
        raise InvalidRequest(
            "invalid JSON body: expected the Request message "
            "(key, value: lists of strings; logid: an integer; clientip: a string)"
        ) from e
    return message


class GatewayApp:
    """``/<service>/<method>`` over a :class:`PipelineCall`."""

    def __init__(self, call: PipelineCall, limits: Limits):
        self._call = call
        self._max_depth = limits.max_json_depth
        self.asgi = HttpApp(self.handle, limits, gateway_error, "gateway")

    async def handle(self, request: Request) -> Response:
        parts = [p for p in request.path.split("/") if p]
        if len(parts) != 2:
            raise NotFound("Not Found")
        if request.method != "POST":
            raise MethodNotAllowed(f"method {request.method} is not allowed; use POST")
        message = parse_request_body(request.body, self._max_depth)
        message.name, message.method = parts
        if not message.clientip:
            message.clientip = request.client
        return Response.json(200, as_dict(await self._call.request(message)))
