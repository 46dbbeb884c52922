"""Typed errors of the service, and their one mapping to wire codes.

Every error a client can see is an :class:`IEError` subclass. Each carries the Paddle Serving
pipeline ``err_no`` (the codes of ``paddle_serving_server.pipeline.error_catch``), the HTTP status
and the gRPC status name that the edges (RPC, HTTP gateways, KServe endpoints) use. Anything else
is an internal error: logged with its traceback where caught, and the client sees a short message.
"""

from __future__ import annotations

from typing import Any, ClassVar

# Paddle Serving pipeline error numbers (error_catch.CustomExceptionCode).
ERR_OK = 0
ERR_PRODUCT = 50
ERR_CONF = 4000
ERR_INPUT = 5000
ERR_TIMEOUT = 6000
ERR_UNKNOWN = 10000


class IEError(Exception):
    """Base class: an error with a client-facing message and wire codes."""

    err_no: ClassVar[int] = ERR_UNKNOWN
    http_status: ClassVar[int] = 500
    grpc_status: ClassVar[str] = "INTERNAL"
    kind: ClassVar[str] = "internal_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def to_item(self) -> dict[str, Any]:
        """The per-text error object placed in a response list."""
        return {"error": {"code": self.err_no, "type": self.kind, "message": self.message}}


class InvalidRequest(IEError):
    """The request as a whole is malformed (missing key, bad JSON, unknown task, bad option)."""

    err_no = ERR_INPUT
    http_status = 400
    grpc_status = "INVALID_ARGUMENT"
    kind = "invalid_request"


class InvalidText(InvalidRequest):
    """One text of a request cannot be processed (empty, not a string, too long)."""

    kind = "invalid_text"


class InvalidSchema(InvalidRequest):
    """The UIE schema is missing or malformed."""

    kind = "invalid_schema"


class LimitExceeded(InvalidRequest):
    """The request exceeds a configured limit (texts per request, body size, text length)."""

    http_status = 413
    grpc_status = "RESOURCE_EXHAUSTED"
    kind = "limit_exceeded"


class ConfigError(IEError):
    """``config.yml`` or the model directory is invalid; raised at start-up."""

    err_no = ERR_CONF
    kind = "config_error"


class ModelLoadError(ConfigError):
    """A model file is missing or cannot be loaded; the message names the file."""

    kind = "model_load_error"


class InferenceError(IEError):
    """The engine failed on a batch."""

    kind = "inference_error"


class RequestTimeout(IEError):
    """The request did not finish within the configured time."""

    err_no = ERR_TIMEOUT
    http_status = 504
    grpc_status = "DEADLINE_EXCEEDED"
    kind = "timeout"


INTERNAL_MESSAGE = "internal error; see the server log"


def error_item(exc: BaseException) -> dict[str, Any]:
    """Map any exception to a per-text error object (unknown ones get a short generic message)."""
    if isinstance(exc, IEError):
        return exc.to_item()
    return InferenceError(INTERNAL_MESSAGE).to_item()
