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

Import the pipeline classes from here, never from ``paddle_serving_server`` directly.
"""

from __future__ import annotations

import importlib.util
import sys
import types


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
    stub.__doc__ = "Stand-in registered by pipeline.serving_compat; see that module."
    stub.Client = _UnavailableClient  # type: ignore[attr-defined]
    sys.modules["paddle_serving_client"] = stub


def _register_bare_package() -> None:
    if "paddle_serving_server" in sys.modules:
        return
    spec = importlib.util.find_spec("paddle_serving_server")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("paddle-serving-server is not installed: run ./setup.sh")
    package = types.ModuleType("paddle_serving_server")
    package.__doc__ = "Registered without its __init__ by pipeline.serving_compat; see that module."
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
from paddle_serving_server.pipeline.proto import (  # noqa: E402
    pipeline_service_pb2,
    pipeline_service_pb2_grpc,
)
from paddle_serving_server.proto import general_model_config_pb2  # noqa: E402


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
    "Op",
    "PipelineClient",
    "PipelineServer",
    "RequestOp",
    "ResponseOp",
    "general_model_config_pb2",
    "pipeline_service_pb2",
    "pipeline_service_pb2_grpc",
]
