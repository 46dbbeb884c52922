"""The one place that makes Paddle Serving's pipeline framework importable on Python 3.11.

``paddle_serving_server.pipeline.operator`` does ``from paddle_serving_client import Client`` at
import time. ``paddle_serving_client`` has wheels only for CPython 3.6-3.9 and its ``io`` module
needs ``paddle.fluid``, which Paddle 3 removed. Our ops never use that client (they run their own
backends), so when the real package is missing we register a stand-in module whose ``Client``
raises on use. Everything else of the framework is used as shipped.

The package's own ``__init__`` imports the launcher of the C++ server and an environment check
that imports pytest; none of it is used by the pipeline. Unless the package is already imported,
we register it as a bare package (its submodules import as usual) so that a slim, Paddle-free
install needs neither.

``PipelineClient`` is the stock one without the timing lines its ``predict`` prints to stdout.

The edge of the framework is ours too:

- :class:`IERequestOp` unpacks a request's ``key``/``value`` strings and nothing else. The stock
  request op also decodes request ``tensors``, with ``np.load(..., allow_pickle=True)`` for
  ``elem_type`` 13: whoever reaches the port could make the server run code. Requests carrying
  tensors are refused with ``err_no`` 5000 before any of their bytes are read.
- :class:`GuardedServicer` is the gRPC servicer whose answers never carry the framework's
  exception texts: client errors (``err_no`` 5000) keep their message, anything else is logged
  and answered with a short message and the log id. The HTTP edges call the same servicer in
  process (:func:`call_pipeline`), so every route gets the same guard. Its DAG keeps each
  request's timestamps apart (:mod:`~pipeline.paddle_serving.profiler`).
- :func:`start_go_gateway` starts Paddle Serving's Go HTTP gateway in a child process, as
  ``PipelineServer`` does, but under our name so that the server can stop it.

Import the pipeline classes from here, never from ``paddle_serving_server`` directly.
"""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import platform
import random
import sys
import types
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import (
    ERR_CLOSED,
    ERR_INPUT,
    ERR_NO_SERVICE,
    ERR_OK,
    ERR_TIMEOUT,
    ERR_UNKNOWN,
    ERROR_TYPE_KEY,
    IEError,
    InvalidRequest,
    error_from_answer,
    from_product_code,
    internal_message,
    product_code,
)
from pipeline.paddle_serving.profiler import RequestProfiler
from pipeline.schemas import RESULT_KEY, first_names

logger = logging.getLogger(__name__)


class _UnavailableClient:
    """Stands in for ``paddle_serving_client.Client`` (brpc client), which this project never uses."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError(
            "paddle_serving_client is not installed (no wheels for Python > 3.9); "
            "ops of this project use client_type 'local' backends, not brpc"
        )


def _install_client_stub() -> None:
    if "paddle_serving_client" in sys.modules:
        return
    if importlib.util.find_spec("paddle_serving_client") is not None:
        return
    stub = types.ModuleType("paddle_serving_client")
    stub.__doc__ = "Stand-in registered by pipeline.paddle_serving.compat; see that module."
    stub.Client = _UnavailableClient  # type: ignore[attr-defined]
    sys.modules["paddle_serving_client"] = stub


def _register_bare_package() -> None:
    if "paddle_serving_server" in sys.modules:
        return
    spec = importlib.util.find_spec("paddle_serving_server")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("paddle-serving-server is not installed: run ./setup.sh")
    package = types.ModuleType("paddle_serving_server")
    package.__doc__ = "Registered without its __init__ by pipeline.paddle_serving.compat; see that module."
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules["paddle_serving_server"] = package


_install_client_stub()
_register_bare_package()

from paddle_serving_server.pipeline import (  # noqa: E402
    Op,
    PipelineServer,
    RequestOp,
    ResponseOp,
)
from paddle_serving_server.pipeline import PipelineClient as _StockPipelineClient  # noqa: E402
from paddle_serving_server.pipeline.channel import ChannelTimeoutError  # noqa: E402
from paddle_serving_server.pipeline.pipeline_server import PipelineServicer  # noqa: E402
from paddle_serving_server.pipeline.proto import (  # noqa: E402
    pipeline_service_pb2,
    pipeline_service_pb2_grpc,
)
from paddle_serving_server.proto import general_model_config_pb2  # noqa: E402


def request_refusal(request) -> str | None:
    """Why a ``Request`` message is refused before it enters the DAG, or None."""
    if len(request.tensors):
        return (
            "the field 'tensors' is not accepted by this service; "
            "send the request as 'key' and 'value' string lists"
        )
    if len(request.key) != len(request.value):
        return (
            f"'key' has {len(request.key)} entries and 'value' {len(request.value)}; "
            "give exactly one value per key"
        )
    counts = Counter(request.key)
    if len(counts) != len(request.key):
        twice = sorted(k for k, n in counts.items() if n > 1)
        return f"keys given more than once: {first_names(twice)}"
    return None


class IERequestOp(RequestOp):
    """The DAG's request op: ``key``/``value`` strings in, refusals as ``err_no`` 5000."""

    def unpack_request_package(self, request):
        """``Request`` -> (dict of key/value strings, log id, error number or None, message)."""
        refusal = request_refusal(request)
        if refusal is not None:
            return {}, request.logid, product_code(InvalidRequest(refusal)), refusal
        return dict(zip(request.key, request.value, strict=True)), request.logid, None, ""


class IEResponseOp(ResponseOp):
    """The DAG's response op: an error that travelled as one of our product codes is answered
    with its public ``err_no`` and its kind under the key ``error_type``.

    With ``finish`` (thread ops), a request whose job its model's lane has not run yet arrives
    here as the job itself (``{"job": [job]}``): this op runs in the request's own thread (gRPC or
    HTTP), so waiting here for the job holds no op thread and a slow model stalls no other."""

    def __init__(self, input_ops, finish: Callable[[Any], str] | None = None):
        super().__init__(input_ops=input_ops)
        self._finish = finish

    def pack_response_package(self, channeldata):
        job = self._pending_job(channeldata)
        if job is not None:
            return self._finished(job)
        response = super().pack_response_package(channeldata)
        cls = from_product_code(response.err_no)
        if cls is not None:
            response.err_no = cls.err_no
            response.key.append(ERROR_TYPE_KEY)
            response.value.append(cls.kind)
        return response

    def _pending_job(self, channeldata) -> Any:
        if self._finish is None or channeldata.error_code != 0:
            return None
        data = channeldata.dictdata if channeldata.dictdata is not None else channeldata.npdata
        return data["job"][0] if isinstance(data, dict) and "job" in data else None

    def _finished(self, job):
        response = pipeline_service_pb2.Response()
        try:
            result = self._finish(job)
        except IEError as e:  # answered as the product-code path would answer it
            response.err_no = e.err_no
            response.err_msg = e.message
            response.key.append(ERROR_TYPE_KEY)
            response.value.append(from_product_code(product_code(e)).kind)
            return response
        response.key.append(RESULT_KEY)
        response.value.append(result)
        return response


# Pipeline error numbers whose message a client may read as it is.
_CLIENT_READABLE = {ERR_OK, ERR_INPUT, ERR_NO_SERVICE}
_FIXED_MESSAGES = {
    ERR_TIMEOUT: "the request timed out inside the pipeline (op timeout)",
    ERR_CLOSED: "the service is shutting down",
}


def guard_answer(response, log_id: int = 0):
    """``response`` with any message that is not for clients replaced (and logged); an error
    answer always says its kind under ``error_type``."""
    err_no = response.err_no
    if err_no == ERR_OK:
        return response
    kinds = dict(zip(response.key, response.value, strict=False))
    kind = kinds.get(ERROR_TYPE_KEY) or error_from_answer(err_no, "").kind
    if err_no in _CLIENT_READABLE:
        message = response.err_msg
    else:
        message = _FIXED_MESSAGES.get(err_no) or internal_message(log_id)
        if response.err_msg != message:
            logger.error("log_id=%s pipeline answered err_no=%s: %s", log_id, err_no, response.err_msg)
    answer = pipeline_service_pb2.Response()
    answer.err_no = err_no
    answer.err_msg = message
    answer.key.append(ERROR_TYPE_KEY)
    answer.value.append(kind)
    return answer


SERVICE_NAME = "baidu.paddle_serving.pipeline_serving.PipelineService"  # its .proto's service
MALFORMED_MESSAGE = "the message is not a Paddle Serving pipeline Request (protobuf)"


class Malformed:
    """What a gRPC body that does not parse as a ``Request`` becomes (see :func:`parse_request`)."""


def parse_request(data: bytes):
    """A gRPC body as a ``Request``, or :class:`Malformed` (gRPC would answer INTERNAL)."""
    from google.protobuf.message import DecodeError

    try:
        return pipeline_service_pb2.Request.FromString(data)
    except DecodeError:
        return Malformed()


def add_servicer_to_server(servicer: GuardedServicer, server) -> None:
    """Register ``servicer`` as the pipeline service, malformed messages parsed to :class:`Malformed`."""
    import grpc

    handler = grpc.unary_unary_rpc_method_handler(
        servicer.inference,
        request_deserializer=parse_request,
        response_serializer=pipeline_service_pb2.Response.SerializeToString,
    )
    generic = grpc.method_handlers_generic_handler(SERVICE_NAME, {"inference": handler})
    server.add_generic_rpc_handlers((generic,))


_log_ids = random.SystemRandom()


class GuardedServicer(PipelineServicer):
    """``PipelineServicer`` whose answers pass :func:`guard_answer` and which never raises; its
    DAG keeps each request's timestamps apart (:class:`RequestProfiler`). A request without a
    ``logid`` gets one, so that an internal error's answer and log line name the same id."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._dag_executor._profiler = RequestProfiler()

    def inference(self, request, context):
        if isinstance(request, Malformed):
            import grpc

            context.abort(grpc.StatusCode.INVALID_ARGUMENT, MALFORMED_MESSAGE)
        if not request.logid:
            request.logid = _log_ids.getrandbits(48) or 1
        try:
            response = super().inference(request, context)
        except Exception:
            logger.exception("log_id=%s the pipeline failed", request.logid)
            response = pipeline_service_pb2.Response()
            response.err_no = ERR_UNKNOWN
            response.err_msg = internal_message(request.logid)
        return guard_answer(response, request.logid)


def call_pipeline(servicer: GuardedServicer, request):
    """Run one ``Request`` through the servicer in this process (blocks until it is answered)."""
    return servicer.inference(request, None)


_ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64", 0x03: "i386", 0x28: "arm"}
_HOST_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def _go_gateway_library() -> Path | None:
    """Paddle Serving's Go gateway library (found without importing the package), or None."""
    spec = importlib.util.find_spec("paddle_serving_server")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / "pipeline" / "gateway" / "libproxy_server.so"


def go_gateway_runs_here() -> bool:
    """Whether Paddle Serving's Go gateway library is built for this host's CPU (ELF header check)."""
    lib = _go_gateway_library()
    if lib is None:
        return False
    try:
        header = lib.open("rb").read(20)
    except OSError:
        return False
    if header[:4] != b"\x7fELF":
        return False
    lib_machine = _ELF_MACHINES.get(int.from_bytes(header[18:20], "little"))
    return lib_machine == _HOST_MACHINES.get(platform.machine().lower())


def _run_go_gateway(rpc_port: int, http_port: int) -> None:
    from ctypes import cdll

    cdll.LoadLibrary(str(_go_gateway_library())).run_proxy_server(rpc_port, http_port)


def start_go_gateway(rpc_port: int, http_port: int) -> multiprocessing.Process:
    """Paddle Serving's Go gateway (HTTP ``http_port`` -> gRPC ``localhost:rpc_port``), started."""
    proc = multiprocessing.Process(
        target=_run_go_gateway, args=(rpc_port, http_port), name="go-http-gateway", daemon=True
    )
    proc.start()
    return proc


class PipelineClient(_StockPipelineClient):
    """Paddle Serving's ``PipelineClient``, minus the two timing lines its ``predict`` prints.

    The stock ``predict`` prints ``PipelineClient::predict pack_data time:...`` and ``... before
    time:...`` to stdout on every call, which garbles the output of any command line using it.
    The synchronous path is the stock one without the prints (0.9.0's own pack and unpack
    helpers); ``asyn=True`` is left to the stock method.
    """

    def predict(
        self,
        feed_dict: dict,
        fetch: list | None = None,
        asyn: bool = False,
        pack_tensor_format: bool = False,
        use_tensor_bytes: bool = False,
        profile: bool = False,
        log_id: int = 0,
    ):
        """Send one request and return the unpacked response (as the stock client does)."""
        if asyn:
            return super().predict(
                feed_dict, fetch, asyn, pack_tensor_format, use_tensor_bytes, profile, log_id
            )
        if not isinstance(feed_dict, dict):
            raise TypeError("feed must be dict type with format: {name: value}.")
        if fetch is not None and not isinstance(fetch, list):
            raise TypeError("fetch must be list type with format: [name].")
        req = self._pack_request_package(feed_dict, pack_tensor_format, use_tensor_bytes, profile)
        req.logid = log_id
        return self._unpack_response_package(self._stub.inference(req), fetch)


__all__ = [
    "ChannelTimeoutError",
    "GuardedServicer",
    "IERequestOp",
    "IEResponseOp",
    "Malformed",
    "Op",
    "PipelineClient",
    "PipelineServer",
    "RequestOp",
    "ResponseOp",
    "add_servicer_to_server",
    "call_pipeline",
    "general_model_config_pb2",
    "go_gateway_runs_here",
    "guard_answer",
    "pipeline_service_pb2",
    "pipeline_service_pb2_grpc",
    "request_refusal",
    "start_go_gateway",
]
