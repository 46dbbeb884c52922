"""The KServe v2 HTTP app (Triton's port 8000): health, metadata and infer, on the pipeline in process.

Routes (``/versions/1`` may follow ``/v2/models/<model>``):

    GET  /v2                          server metadata
    GET  /v2/health/live              200 while the process serves HTTP
    GET  /v2/health/ready             200 once every model answered its warm-up request, else 503
    GET  /v2/models/<model>           model metadata
    GET  /v2/models/<model>/ready     200 / 503
    POST /v2/models/<model>/infer     run through the pipeline (the servicer, no loopback hop)
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable

from pipeline.config import Limits
from pipeline.health import Readiness, WarmUp
from pipeline.http.app import HttpApp, Request, Response
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
from pipeline.pipeline_call import PipelineCall
from pipeline.playground import ASSETS, HEADERS, MODELS_PATH, asset

logger = logging.getLogger(__name__)


def route(path: str) -> tuple[str, str | None]:
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


def decoded_body(body: bytes, encoding: str, max_body: int) -> bytes:
    """The body with its ``Content-Encoding`` (identity, gzip, deflate) undone, within ``max_body``."""
    encoding = (encoding or "identity").lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise KServeError(400, f"unsupported Content-Encoding {encoding!r}")
    inflater = zlib.decompressobj(wbits=32 + zlib.MAX_WBITS)  # gzip or zlib header
    try:
        body = inflater.decompress(body, max_body + 1)
    except zlib.error as e:
        raise KServeError(400, f"cannot decompress the {encoding} body") from e
    if len(body) > max_body:
        raise KServeError(413, f"body over {max_body} bytes once decompressed")
    return body


class KServeApp:
    """KServe v2 over a :class:`PipelineCall` (None until the pipeline runs: infer answers 503)."""

    def __init__(
        self,
        cards: dict[str, ModelCard],
        backend: str | dict[str, str],
        limits: Limits,
        call: PipelineCall | None = None,
        on_model_ready: Callable[[str], None] | None = None,
        playground: bool = False,
    ):
        self.cards = dict(cards)
        # the engine of each model (a str: every model's); INT8 models run on onnx
        self.backends = backend if isinstance(backend, dict) else dict.fromkeys(self.cards, backend)
        self.limits = limits
        self.readiness = Readiness(self.cards)
        self.playground = playground
        self._call = call
        self._warmup = (
            WarmUp(call.kv, self.cards, self.readiness, on_ready=on_model_ready) if call is not None else None
        )
        self.asgi = HttpApp(self.handle, limits, lambda e: {"error": e.message}, "KServe")

    def start_warmup(self) -> None:
        if self._warmup is not None:
            self._warmup.start()

    def stop(self) -> None:
        if self._warmup is not None:
            self._warmup.stop()

    def _model(self, model: str | None) -> str:
        if model not in self.cards:
            raise KServeError(404, f"unknown model {model!r}; models: {sorted(self.cards)}")
        return model

    async def handle(self, request: Request) -> Response:
        if self.playground and request.method == "GET" and request.path in (*ASSETS, MODELS_PATH):
            return self._page(request.path)
        name, model = route(request.path)
        if request.method == "GET":
            return self._get(name, model)
        if request.method != "POST":
            raise KServeError(405, f"method {request.method} is not allowed; use GET or POST")
        if name != "model_infer":
            raise KServeError(405, f"{request.path} takes GET")
        return await self._infer(self._model(model), request)

    def _page(self, path: str) -> Response:
        """The playground's files, and what it needs to know of the served models."""
        if path == MODELS_PATH:
            models = {}
            for name, card in self.cards.items():
                models[name] = {"task": card.task, "ready": self.readiness.model_ready(name)}
                if card.task == "uie":
                    models[name]["schema_example"] = card.example_schema
            response = Response.json(200, {"models": models})
        else:
            body, content_type = asset(path)
            response = Response(200, body, [(b"content-type", content_type.encode())])
        response.headers += [(k.encode(), v.encode()) for k, v in HEADERS.items()]
        return response

    def _get(self, name: str, model: str | None) -> Response:
        if name == "server":
            return Response.json(200, server_metadata())
        if name == "health_live":
            return Response.json(200, None)
        if name == "health_ready":
            waiting = [m for m in self.readiness.models if not self.readiness.model_ready(m)]
            return (
                Response.json(503, {"error": f"warming up: {waiting}"})
                if waiting
                else Response.json(200, None)
            )
        if name == "model":
            served = self._model(model)
            return Response.json(200, model_metadata(served, self.backends[served]))
        if name == "model_ready":
            served = self._model(model)
            if self.readiness.model_ready(served):
                return Response.json(200, None)
            return Response.json(503, {"error": f"model '{served}' is warming up"})
        raise KServeError(405, "this route takes POST")

    async def _infer(self, task: str, request: Request) -> Response:
        body = decoded_body(
            request.body, request.headers.get("content-encoding", ""), self.limits.max_body_bytes
        )
        raw_length = request.headers.get(HEADER_LENGTH.lower())
        header_length = int(raw_length) if raw_length is not None and raw_length.isdigit() else None
        call = parse_infer_request(body, header_length, task, self.limits.max_json_depth)
        if self._call is None:
            raise KServeError(503, "the pipeline is starting")
        answer = await self._call.kv_async(call.kv, call.log_id, request.client)
        payload, headers = infer_response(task, call, answer)
        return Response(200, payload, [(k.lower().encode(), v.encode()) for k, v in headers.items()])
