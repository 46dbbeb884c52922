"""HTTP -> gRPC gateway in Python, speaking the same URL and JSON as Paddle Serving's Go gateway.

Paddle Serving's HTTP port is served by ``pipeline/gateway/libproxy_server.so``, an x86-64 Go
binary: on other hosts there is no HTTP port. This gateway takes its place there (or anywhere the
config asks for it): ``POST /<service>/<method>`` with ``{"key": [...], "value": [...]}`` (and
optionally ``logid``, ``clientip``), forwarded to ``PipelineService.inference`` on the RPC port;
the answer is the Response message as JSON (proto field names, defaults included).
"""

from __future__ import annotations

import json
import logging
import platform
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

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


class GrpcForwarder:
    """One channel to the pipeline's RPC port, shared by the handler threads of both gateways
    (this one and the KServe server in ``pipeline/kserve.py``)."""

    def __init__(self, rpc_endpoint: str, timeout_s: float):
        import grpc

        from pipeline.serving_compat import pipeline_service_pb2, pipeline_service_pb2_grpc

        self._pb2 = pipeline_service_pb2
        self._timeout = timeout_s
        self._channel = grpc.insecure_channel(
            rpc_endpoint,
            options=[
                ("grpc.max_send_message_length", 256 * 1024 * 1024),
                ("grpc.max_receive_message_length", 256 * 1024 * 1024),
            ],
        )
        self._stub = pipeline_service_pb2_grpc.PipelineServiceStub(self._channel)

    def inference(
        self, body: dict[str, Any], name: str = "ie", method: str = "prediction", client_ip: str = ""
    ) -> dict[str, Any]:
        """Send ``{"key", "value"[, "logid", "clientip"]}``; the Response as a dict (proto names).

        Raises ``grpc.RpcError`` when the pipeline does not answer.
        """
        from google.protobuf import json_format

        request = self._pb2.Request(
            key=[str(k) for k in body.get("key", [])],
            value=[str(v) for v in body.get("value", [])],
            name=name,
            method=method,
            logid=int(body.get("logid", 0) or 0),
            clientip=str(body.get("clientip", client_ip)),
        )
        response = self._stub.inference(request, timeout=self._timeout)
        return json_format.MessageToDict(
            response, preserving_proto_field_name=True, including_default_value_fields=True
        )

    def close(self) -> None:
        self._channel.close()


def _handler(forwarder: GrpcForwarder, max_body: int) -> type[BaseHTTPRequestHandler]:
    import grpc

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: HTTPStatus, grpc_code: int, message: str) -> None:
            # The shape grpc-gateway gives errors that never reached the service.
            self._reply(status, {"error": message, "code": grpc_code, "message": message})

        def do_POST(self) -> None:
            parts = [p for p in self.path.split("?")[0].split("/") if p]
            if len(parts) != 2:
                self._error(HTTPStatus.NOT_FOUND, 5, "Not Found")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > max_body:
                self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, 8, f"body over {max_body} bytes")
                self.close_connection = True
                return
            try:
                body = json.loads(self.rfile.read(length).decode("utf-8")) if length else {}
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
                if not isinstance(body.get("key", []), list) or not isinstance(body.get("value", []), list):
                    raise ValueError("'key' and 'value' must be lists")
            except (ValueError, UnicodeDecodeError) as e:
                self._error(HTTPStatus.BAD_REQUEST, 3, f"invalid JSON body: {e}")
                return
            try:
                answer = forwarder.inference(body, parts[0], parts[1], self.client_address[0])
            except grpc.RpcError as e:
                code = e.code()
                status = (
                    HTTPStatus.GATEWAY_TIMEOUT
                    if code == grpc.StatusCode.DEADLINE_EXCEEDED
                    else (HTTPStatus.SERVICE_UNAVAILABLE)
                )
                self._error(status, code.value[0], e.details() or code.name)
                return
            self._reply(HTTPStatus.OK, answer)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("%s " + format, self.client_address[0], *args)

    return Handler


class HttpGateway:
    """The gateway server; ``start`` serves in a daemon thread, ``stop`` shuts it down."""

    def __init__(
        self,
        http_port: int,
        rpc_port: int,
        bind: str = "0.0.0.0",
        max_body_bytes: int = 4 * 1024 * 1024,
        timeout_s: float = 60.0,
    ):
        self._forwarder = GrpcForwarder(f"127.0.0.1:{rpc_port}", timeout_s)
        self._server = ThreadingHTTPServer((bind, http_port), _handler(self._forwarder, max_body_bytes))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-gateway", daemon=True)
        self._thread.start()
        logger.info("python HTTP gateway on port %d", self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._forwarder.close()
