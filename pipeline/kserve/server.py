"""The KServe v2 HTTP app (Triton's port 8000): health, metadata and infer, on the pipeline in process.

Routes (``/versions/<version>`` may follow ``/v2/models/<model>``: the served version only):

    GET  /v2                          server metadata
    GET  /v2/health/live              200 while the process serves HTTP
    GET  /v2/health/ready             200 once every model answered its warm-up request, else 503
    GET  /v2/models/<model>           model metadata
    GET  /v2/models/<model>/ready     200 / 503
    POST /v2/models/<model>/infer     run through the pipeline (the servicer, no loopback hop)

With ``ie.model_control`` (Triton's model repository extension, :mod:`pipeline.model_control`):

    GET|POST /v2/repository/index                 every known model, its version and state
    POST     /v2/repository/models/<model>/load   body ``{"parameters": {"dir": "..."}}`` optional
    POST     /v2/repository/models/<model>/unload
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipeline.config import Limits
from pipeline.health import Readiness, WarmUp
from pipeline.http.app import HttpApp, Request, Response
from pipeline.kserve.protocol import (
    HEADER_LENGTH,
    KServeError,
    infer_response,
    model_metadata,
    parse_infer_request,
    server_metadata,
)
from pipeline.model_card import ModelCard
from pipeline.pipeline_call import PipelineCall
from pipeline.playground import ASSETS, HEADERS, MODELS_PATH, asset
from pipeline.schemas import loads_json

if TYPE_CHECKING:
    from pipeline.model_control import ModelControl

logger = logging.getLogger(__name__)


Catalog = Callable[[], dict[str, tuple[ModelCard, str]]]  # name -> (card, engine kind), served now


def route(path: str) -> tuple[str, str | None, str | None]:
    """URL path -> (route name, model, version); raises KServeError(404) for anything else."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if parts[:1] != ["v2"]:
        raise KServeError(404, f"no route {path}")
    rest = parts[1:]
    if not rest:
        return "server", None, None
    if rest in (["health", "live"], ["health", "ready"]):
        return f"health_{rest[1]}", None, None
    if rest == ["repository", "index"]:
        return "repo_index", None, None
    if len(rest) == 4 and rest[:2] == ["repository", "models"] and rest[3] in ("load", "unload"):
        return f"repo_{rest[3]}", rest[2], None
    if len(rest) >= 2 and rest[0] == "models":
        model, tail, version = rest[1], rest[2:], None
        if tail[:1] == ["versions"]:
            if len(tail) < 2:
                raise KServeError(404, f"no route {path}")
            version, tail = tail[1], tail[2:]
        if not tail:
            return "model", model, version
        if tail in (["ready"], ["infer"]):
            return f"model_{tail[0]}", model, version
    raise KServeError(404, f"no route {path}")


def load_dir(body: bytes, max_depth: int) -> Any:
    """The ``dir`` a load request names (``parameters.dir``, or ``dir`` in the JSON string
    ``parameters.config`` as tritonclient's ``load_model(config=...)`` sends it), else None."""
    if not body.strip():
        return None
    try:
        request = loads_json(body, max_depth, "the request")
    except ValueError as e:
        raise KServeError(400, "the load request is not valid JSON (UTF-8)") from e
    params = request.get("parameters") if isinstance(request, dict) else None
    if params is None:
        return None
    if not isinstance(params, dict):
        raise KServeError(400, "'parameters' must be an object")
    if any(isinstance(key, str) and key.startswith("file:") for key in params):
        raise KServeError(
            400, "this server takes no model files in a load request; give the 'dir' of a bridge-built model"
        )
    if "dir" in params:
        return params["dir"]
    if isinstance(params.get("config"), str):
        try:
            config = json.loads(params["config"])
        except ValueError as e:
            raise KServeError(400, "'parameters.config' must be a JSON object with 'dir'") from e
        return config.get("dir") if isinstance(config, dict) else None
    return None


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
        catalog: Catalog | None = None,
        control: ModelControl | None = None,
    ):
        self.cards = dict(cards)
        # the engine of each model (a str: every model's); INT8 models run on onnx
        self.backends = backend if isinstance(backend, dict) else dict.fromkeys(self.cards, backend)
        self._catalog = catalog or (lambda: {n: (c, self.backends[n]) for n, c in self.cards.items()})
        self._control = control
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

    def _model(self, model: str | None, version: str | None = None) -> tuple[str, ModelCard, str]:
        """(name, card, engine kind) of a served model (and version); 404 lists the served names."""
        served = self._catalog()
        if model not in served:
            raise KServeError(404, f"unknown model {model!r}; models: {sorted(served)}")
        card, backend = served[model]
        if version is not None and version != card.version:
            raise KServeError(404, f"model '{model}' serves version {card.version}, not {version!r}")
        return model, card, backend

    def attach_control(self, control: ModelControl) -> None:
        """Serve the repository routes over ``control``."""
        self._control = control

    def model_loaded(self, name: str) -> None:
        """Model control served ``name`` (its warm-up answered): ready."""
        self.readiness.mark_ready(name)

    def model_unloaded(self, name: str) -> None:
        self.readiness.forget(name)

    async def handle(self, request: Request) -> Response:
        if self.playground and request.method == "GET" and request.path in (*ASSETS, MODELS_PATH):
            return self._page(request.path)
        name, model, version = route(request.path)
        if name.startswith("repo_"):
            return await self._repository(name, model, request)
        if request.method == "GET":
            return self._get(name, model, version)
        if request.method != "POST":
            raise KServeError(405, f"method {request.method} is not allowed; use GET or POST")
        if name != "model_infer":
            raise KServeError(405, f"{request.path} takes GET")
        return await self._infer(*self._model(model, version), request)

    async def _repository(self, name: str, model: str | None, request: Request) -> Response:
        """Triton's repository extension: index (GET or POST), load, unload (POST)."""
        if self._control is None:
            raise KServeError(404, "model control is off on this server (ie.model_control: false)")
        if name == "repo_index":
            if request.method not in ("GET", "POST"):
                raise KServeError(405, f"method {request.method} is not allowed; use GET or POST")
            return Response.json(200, self._control.index())
        if request.method != "POST":
            raise KServeError(405, f"{request.path} takes POST")
        if name == "repo_load":
            raw_dir = load_dir(request.body, self.limits.max_json_depth)
            await asyncio.to_thread(self._control.load, model, raw_dir)
        else:
            await asyncio.to_thread(self._control.unload, model)
        return Response.json(200, {})

    def _page(self, path: str) -> Response:
        """The playground's files, and what it needs to know of the served models."""
        if path == MODELS_PATH:
            models = {}
            for name, (card, _) in sorted(self._catalog().items()):
                models[name] = {"task": card.task, "ready": self.readiness.model_ready(name)}
                if card.task == "uie":
                    models[name]["schema_example"] = card.example_schema
            response = Response.json(200, {"models": models})
        else:
            body, content_type = asset(path)
            response = Response(200, body, [(b"content-type", content_type.encode())])
        response.headers += [(k.encode(), v.encode()) for k, v in HEADERS.items()]
        return response

    def _get(self, name: str, model: str | None, version: str | None = None) -> Response:
        if name == "server":
            return Response.json(200, server_metadata())
        if name == "health_live":
            return Response.json(200, None)
        if name == "health_ready":
            waiting = [m for m in sorted(self._catalog()) if not self.readiness.model_ready(m)]
            return (
                Response.json(503, {"error": f"warming up: {waiting}"})
                if waiting
                else Response.json(200, None)
            )
        if name == "model":
            served, card, backend = self._model(model, version)
            return Response.json(200, model_metadata(served, backend, card.task, card.version))
        if name == "model_ready":
            served, _, _ = self._model(model, version)
            if self.readiness.model_ready(served):
                return Response.json(200, None)
            return Response.json(503, {"error": f"model '{served}' is warming up"})
        raise KServeError(405, "this route takes POST")

    async def _infer(self, model: str, card: ModelCard, backend: str, request: Request) -> Response:
        body = decoded_body(
            request.body, request.headers.get("content-encoding", ""), self.limits.max_body_bytes
        )
        raw_length = request.headers.get(HEADER_LENGTH.lower())
        header_length = int(raw_length) if raw_length is not None and raw_length.isdigit() else None
        call = parse_infer_request(body, header_length, card.task, self.limits.max_json_depth, model)
        if self._call is None:
            raise KServeError(503, "the pipeline is starting")
        answer = await self._call.kv_async(call.kv, call.log_id, request.client)
        payload, headers = infer_response(model, call, answer, card.version)
        return Response(200, payload, [(k.lower().encode(), v.encode()) for k, v in headers.items()])
