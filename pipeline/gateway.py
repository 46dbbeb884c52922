"""Paddle Serving's HTTP route in Python: ``POST /<service>/<method>`` with the Request as JSON.

Paddle Serving's HTTP port is served by ``pipeline/gateway/libproxy_server.so``, an x86-64 Go
binary that forwards to the gRPC port over loopback. This app speaks the same URL and JSON (the
``Request`` message: ``key``, ``value`` and optionally ``logid``, ``clientip``; the answer is the
``Response`` message with proto field names, defaults included) but runs the request through the
pipeline's servicer in this process. Errors before the pipeline come back in grpc-gateway's
shape ``{"error", "code", "message"}`` with the status of :mod:`pipeline.errors`.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from pipeline.errors import IEError, InvalidRequest, MethodNotAllowed, NotFound, grpc_code_of
from pipeline.http.app import HttpApp, HttpLimits, Request, Response
from pipeline.pipeline_call import PipelineCall, as_dict
from pipeline.schemas import loads_json
from pipeline.serving_compat import pipeline_service_pb2

_ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64", 0x03: "i386", 0x28: "arm"}
_HOST_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def go_gateway_runs_here() -> bool:
    """Whether Paddle Serving's Go gateway library is built for this host's CPU (ELF header check)."""
    import importlib.util

    spec = importlib.util.find_spec("paddle_serving_server")
    if spec is None or not spec.submodule_search_locations:
        return False
    lib = Path(spec.submodule_search_locations[0]) / "pipeline" / "gateway" / "libproxy_server.so"
    try:
        header = lib.open("rb").read(20)
    except OSError:
        return False
    if header[:4] != b"\x7fELF":
        return False
    lib_machine = _ELF_MACHINES.get(int.from_bytes(header[18:20], "little"))
    return lib_machine == _HOST_MACHINES.get(platform.machine().lower())


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

    def __init__(self, call: PipelineCall, limits: HttpLimits, max_json_depth: int = 64):
        self._call = call
        self._max_depth = max_json_depth
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
