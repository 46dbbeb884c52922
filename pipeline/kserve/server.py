"""The KServe v2 HTTP server (Triton's port 8000): health, metadata and infer, over the pipeline's RPC.

Routes (``/versions/1`` may follow ``/v2/models/<model>``):

    GET  /v2                          server metadata
    GET  /v2/health/live              200 while the process serves HTTP
    GET  /v2/health/ready             200 once every model answered its warm-up request, else 503
    GET  /v2/models/<model>           model metadata
    GET  /v2/models/<model>/ready     200 / 503
    POST /v2/models/<model>/infer     forwarded to the pipeline (``pipeline/gateway.py``'s forwarder)
"""

from __future__ import annotations

import json
import logging
import os
import threading
import zlib
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pipeline.errors import INTERNAL_MESSAGE
from pipeline.gateway import GrpcForwarder
from pipeline.health import Readiness, WarmUp
from pipeline.kserve.protocol import (
    HEADER_LENGTH,
    MODEL_VERSION,
    KServeError,
    infer_response,
    model_metadata,
    parse_infer_request,
    server_metadata,
)
from pipeline.model_card import ModelCard

logger = logging.getLogger(__name__)


def _route(path: str) -> tuple[str, str | None]:
    """URL path -> (route name, model); raises KServeError(404) for anything else."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if parts[:1] != ["v2"]:
        raise KServeError(404, f"no route {path}")
    rest = parts[1:]
    if not rest:
        return "server", None
    if rest in (["health", "live"], ["health", "ready"]):
        return f"health_{rest[1]}", None
    if len(rest) >= 2 and rest[0] == "models":
        model, tail = rest[1], rest[2:]
        if tail[:1] == ["versions"]:
            if len(tail) < 2 or tail[1] != MODEL_VERSION:
                raise KServeError(404, f"model '{model}' has only version {MODEL_VERSION}")
            tail = tail[2:]
        if not tail:
            return "model", model
        if tail in (["ready"], ["infer"]):
            return f"model_{tail[0]}", model
    raise KServeError(404, f"no route {path}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {"Content-Type": "application/json"}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict[str, Any] | None) -> None:
        body = b"" if payload is None else json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self._send(status, body)

    def _model(self, model: str | None) -> str:
        app = self.server.app
        if model not in app.cards:
            raise KServeError(404, f"unknown model {model!r}; models: {sorted(app.cards)}")
        return model

    def do_GET(self) -> None:
        app = self.server.app
        try:
            route, model = _route(self.path)
            if route == "server":
                self._json(200, server_metadata())
            elif route == "health_live":
                self._json(200, None)
            elif route == "health_ready":
                waiting = [m for m in app.readiness.models if not app.readiness.model_ready(m)]
                if waiting:
                    self._json(503, {"error": f"warming up: {waiting}"})
                else:
                    self._json(200, None)
            elif route == "model":
                self._json(200, model_metadata(self._model(model), app.backend))
            elif route == "model_ready":
                name = self._model(model)
                if app.readiness.model_ready(name):
                    self._json(200, None)
                else:
                    self._json(503, {"error": f"model '{name}' is warming up"})
            else:
                raise KServeError(405, f"{self.path} takes POST")
        except KServeError as e:
            self._json(e.status, e.body())
        except Exception:
            logger.exception("KServe GET %s failed", self.path)
            self._json(500, {"error": INTERNAL_MESSAGE})

    def do_POST(self) -> None:
        app = self.server.app
        try:
            body = self._read_body(app.max_body_bytes)
            route, model = _route(self.path)
            if route != "model_infer":
                raise KServeError(405, f"{self.path} takes GET")
            task = self._model(model)
            raw_length = self.headers.get(HEADER_LENGTH)
            header_length = int(raw_length) if raw_length is not None and raw_length.isdigit() else None
            call = parse_infer_request(body, header_length, task)
            answer = app.forward(call.kv, call.log_id, self.client_address[0])
            payload, headers = infer_response(task, call, answer)
            self._send(200, payload, headers)
        except KServeError as e:
            self._json(e.status, e.body())
        except Exception:
            logger.exception("KServe POST %s failed", self.path)
            self._json(500, {"error": INTERNAL_MESSAGE})

    def _read_body(self, max_body: int) -> bytes:
        raw_length = self.headers.get("Content-Length") or "0"
        if not raw_length.isdigit():
            self.close_connection = True
            raise KServeError(400, f"bad Content-Length {raw_length!r}")
        length = int(raw_length)
        if length > max_body:
            self.close_connection = True
            raise KServeError(
                413, f"body of {length} bytes; the limit is {max_body} (ie.limits.max_body_bytes)"
            )
        body = self.rfile.read(length) if length else b""
        encoding = (self.headers.get("Content-Encoding") or "identity").lower()
        if encoding == "identity":
            return body
        if encoding not in ("gzip", "deflate"):
            raise KServeError(400, f"unsupported Content-Encoding {encoding!r}")
        inflater = zlib.decompressobj(wbits=32 + zlib.MAX_WBITS)  # gzip or zlib header
        try:
            body = inflater.decompress(body, max_body + 1)
        except zlib.error as e:
            raise KServeError(400, f"cannot decompress the {encoding} body: {e}") from e
        if len(body) > max_body:
            raise KServeError(413, f"body over {max_body} bytes once decompressed")
        return body

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.client_address[0], *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: KServeServer


class KServeServer:
    """KServe v2 HTTP in a daemon thread; readiness comes from a warm-up request per model."""

    def __init__(
        self,
        port: int,
        rpc_port: int,
        cards: dict[str, ModelCard],
        backend: str,
        bind: str = "0.0.0.0",
        max_body_bytes: int = 4 * 1024 * 1024,
        timeout_s: float = 30.0,
        wait_ports: Sequence[int] = (),
        on_model_ready: Callable[[str], None] | None = None,
    ):
        """``wait_ports``: ports besides ``rpc_port`` that must accept connections before the first
        call to the pipeline (Paddle Serving's HTTP port: it is open once its proxy has forked)."""
        self.cards = dict(cards)
        self.backend = backend
        self.max_body_bytes = max_body_bytes
        self.readiness = Readiness(self.cards)
        self._rpc_endpoint = f"127.0.0.1:{rpc_port}"
        self._timeout = timeout_s
        self._forwarder: GrpcForwarder | None = None
        self._forwarder_lock = threading.Lock()
        self._warmup = WarmUp(
            self._inference, self.cards, self.readiness, [rpc_port, *wait_ports], on_ready=on_model_ready
        )
        self._server = _Server((bind, port), _Handler)  # binds now: a busy port fails start-up
        self._server.app = self
        # Paddle Serving forks (its HTTP proxy, process ops): children must not hold our port.
        os.register_at_fork(after_in_child=self._server.socket.close)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def _inference(self, body: dict[str, Any], client_ip: str = "") -> dict[str, Any]:
        with self._forwarder_lock:  # made on first use: no gRPC client exists before the fork
            if self._forwarder is None:
                self._forwarder = GrpcForwarder(self._rpc_endpoint, self._timeout)
        return self._forwarder.inference(body, client_ip=client_ip)

    def forward(self, kv: dict[str, str], log_id: int = 0, client_ip: str = "") -> dict[str, Any]:
        """Send one request to the pipeline; raises KServeError(503/504) if it does not answer."""
        import grpc

        if not self._warmup.pipeline_up.is_set():
            raise KServeError(503, "the pipeline is starting")
        body = {"key": list(kv), "value": list(kv.values()), "logid": log_id}
        try:
            return self._inference(body, client_ip)
        except grpc.RpcError as e:
            code = e.code()
            status = 504 if code == grpc.StatusCode.DEADLINE_EXCEEDED else 503
            raise KServeError(status, f"pipeline: {e.details() or code.name}") from e

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="kserve-http", daemon=True)
        self._thread.start()
        self._warmup.start()
        logger.info("KServe v2 HTTP on port %d", self.port)

    def stop(self) -> None:
        self._warmup.stop()
        self._server.shutdown()
        self._server.server_close()
        if self._forwarder is not None:
            self._forwarder.close()
