"""Typed errors of the service, and their one mapping to wire codes.

Every error a client can see is an :class:`IEError` subclass. Each carries the Paddle Serving
pipeline ``err_no`` (the codes of ``paddle_serving_server.pipeline.error_catch``), the HTTP status
and the gRPC status that the edges (RPC, the HTTP gateway, KServe, metrics) use: every edge maps
an error with :func:`http_status_of` / :func:`grpc_code_of` / ``err_no`` and nothing else.
Anything that is not an IEError is an internal error: logged with its traceback where caught, and
the client sees :func:`internal_message` (a short sentence and the request's log id), never the
exception's text, class name or a path.
"""

from __future__ import annotations

from typing import Any, ClassVar

# Paddle Serving pipeline error numbers (error_catch.CustomExceptionCode).
ERR_OK = 0
ERR_PRODUCT = 50
ERR_CLOSED = 3001
ERR_NO_SERVICE = 3002
ERR_CONF = 4000
ERR_INPUT = 5000
ERR_TIMEOUT = 6000
ERR_UNKNOWN = 10000

# gRPC status codes by name (grpc.StatusCode values), for edges that write them as numbers.
GRPC_CODES = {
    "OK": 0,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "RESOURCE_EXHAUSTED": 8,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
}

INTERNAL_MESSAGE = "internal error; see the server log"


def internal_message(log_id: int | str | None = None) -> str:
    """What a client is told of an internal error: no detail, only the id to find it in the log."""
    return INTERNAL_MESSAGE if not log_id else f"{INTERNAL_MESSAGE} (log_id={log_id})"


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
    """One text of a request cannot be processed (empty, not a string, not valid Unicode)."""

    kind = "invalid_text"


class InvalidSchema(InvalidRequest):
    """The UIE schema is missing or malformed."""

    kind = "invalid_schema"


class NestedTooDeeply(InvalidRequest):
    """A JSON document (body, text list, schema, KServe data) nests deeper than the limit."""

    kind = "nested_too_deeply"


class LimitExceeded(InvalidRequest):
    """The request exceeds a configured limit (texts per request, body size, text length)."""

    http_status = 413
    grpc_status = "RESOURCE_EXHAUSTED"
    kind = "limit_exceeded"


class UriTooLong(LimitExceeded):
    """The request target is longer than the HTTP edge accepts."""

    http_status = 414


class HeadersTooLarge(LimitExceeded):
    """The request's header section is larger than the HTTP edge accepts."""

    http_status = 431


class NotFound(InvalidRequest):
    """No such route or model."""

    http_status = 404
    grpc_status = "NOT_FOUND"
    kind = "not_found"


class UnknownModel(NotFound):
    """The request names a model (or a version of one) this server does not serve."""

    kind = "unknown_model"


class ModelControlError(InvalidRequest):
    """A model load or unload was refused (bad dir, failed check, failed warm-up); the old model
    keeps serving."""

    kind = "model_control_error"


class MethodNotAllowed(InvalidRequest):
    """The route exists but not for this HTTP method."""

    http_status = 405
    grpc_status = "UNIMPLEMENTED"
    kind = "method_not_allowed"


class NotImplementedByServer(InvalidRequest):
    """An HTTP feature the server does not implement (e.g. a transfer coding other than chunked)."""

    http_status = 501
    grpc_status = "UNIMPLEMENTED"
    kind = "not_implemented"


class BodyTimeout(InvalidRequest):
    """The client did not send the body it announced within the read timeout."""

    http_status = 408
    grpc_status = "DEADLINE_EXCEEDED"
    kind = "body_timeout"


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


class Unavailable(IEError):
    """The service cannot take the request now (starting, shutting down)."""

    err_no = ERR_CLOSED
    http_status = 503
    grpc_status = "UNAVAILABLE"
    kind = "unavailable"


class RequestTimeout(IEError):
    """The request did not finish within the configured time."""

    err_no = ERR_TIMEOUT
    http_status = 504
    grpc_status = "DEADLINE_EXCEEDED"
    kind = "timeout"


def error_item(exc: BaseException) -> dict[str, Any]:
    """Map any exception to a per-text error object (unknown ones get a short generic message)."""
    if isinstance(exc, IEError):
        return exc.to_item()
    return InferenceError(INTERNAL_MESSAGE).to_item()


def http_status_of(exc: IEError) -> int:
    """The HTTP status an edge answers ``exc`` with."""
    return exc.http_status


def grpc_code_of(exc: IEError) -> int:
    """The numeric gRPC status of ``exc`` (as grpc-gateway writes it in error bodies)."""
    return GRPC_CODES[exc.grpc_status]


_BY_ERR_NO: dict[int, type[IEError]] = {
    ERR_INPUT: InvalidRequest,
    ERR_TIMEOUT: RequestTimeout,
    ERR_CLOSED: Unavailable,
    ERR_NO_SERVICE: NotFound,
}


# The errors a request can end with inside the pipeline. Inside the DAG each travels as a
# Paddle Serving product error code (its range is 51-99) so that its kind is not lost; the
# response op turns it back into the public ``err_no`` plus an ``error_type`` key in the answer.
PIPELINE_ERRORS: tuple[type[IEError], ...] = (
    InvalidRequest,
    InvalidText,
    InvalidSchema,
    NestedTooDeeply,
    LimitExceeded,
    InferenceError,
    RequestTimeout,
    Unavailable,
    UnknownModel,
)
ERROR_TYPE_KEY = "error_type"
_PRODUCT_BASE = 51
_BY_KIND = {cls.kind: cls for cls in PIPELINE_ERRORS}


def product_code(exc: IEError) -> int:
    """The product error code ``exc`` travels through the DAG with."""
    cls = _BY_KIND.get(exc.kind, InferenceError if exc.err_no != ERR_INPUT else InvalidRequest)
    return _PRODUCT_BASE + PIPELINE_ERRORS.index(cls)


def from_product_code(code: int) -> type[IEError] | None:
    """The error class of a product error code (None for codes that are not ours)."""
    index = code - _PRODUCT_BASE
    return PIPELINE_ERRORS[index] if 0 <= index < len(PIPELINE_ERRORS) else None


def error_from_answer(err_no: int, message: str, error_type: str | None = None) -> IEError:
    """The typed error of a pipeline answer (its ``error_type`` when given, else its ``err_no``),
    for edges that speak HTTP statuses."""
    if error_type in _BY_KIND:
        return _BY_KIND[error_type](message)
    return _BY_ERR_NO.get(err_no, InferenceError)(message)
