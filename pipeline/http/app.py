"""A minimal ASGI app: checks every request against the limits, reads its body, calls a handler.

A handler is ``async (Request) -> Response`` and raises :class:`~pipeline.errors.IEError` for
anything the client got wrong; the app turns that into the status of the one error mapping and a
JSON body in the app's own shape (``error_body``). Anything else a handler raises is logged and
answered with a 500 that says no more than :func:`~pipeline.errors.internal_message`.

The limits are ``ie.limits`` (:class:`pipeline.config.Limits`). Checked before the handler runs:
the request target's length (414), the header section's size (431), ``Content-Length`` together
with ``Transfer-Encoding`` (400), the body's size (413, also while a chunked body streams in) and
how long the body takes to arrive (408). Error answers that leave a body unread close the
connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import Limits
from pipeline.errors import (
    BodyTimeout,
    HeadersTooLarge,
    IEError,
    InvalidRequest,
    LimitExceeded,
    UriTooLong,
    internal_message,
)

logger = logging.getLogger(__name__)

JSON = [(b"content-type", b"application/json")]


@dataclass
class Request:
    """One HTTP request, its body read in full."""

    method: str
    path: str
    headers: dict[str, str]
    client: str
    body: bytes = b""


@dataclass
class Response:
    """What a handler answers."""

    status: int
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=lambda: list(JSON))
    close: bool = False

    @classmethod
    def json(cls, status: int, payload: Any) -> Response:
        body = b"" if payload is None else json.dumps(payload, ensure_ascii=False).encode("utf-8")
        return cls(status, body)


Handler = Callable[[Request], Awaitable[Response]]


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in raw:
        name = key.decode("latin-1").lower()
        text = value.decode("latin-1")
        out[name] = f"{out[name]},{text}" if name in out else text
    return out


class HttpApp:
    """ASGI app around one handler; ``error_body`` shapes the JSON of an error answer."""

    def __init__(
        self,
        handler: Handler,
        limits: Limits,
        error_body: Callable[[IEError], dict[str, Any]],
        name: str,
    ):
        self.handler = handler
        self.limits = limits
        self.error_body = error_body
        self.name = name

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":  # lifespan and websocket: nothing to do
            return
        try:
            request = await self._read(scope, receive)
            response = await self.handler(request)
        except IEError as e:
            response = Response.json(e.http_status, self.error_body(e))
            response.close = e.http_status in (400, 408, 413, 414, 431)
        except Exception:
            logger.exception("%s %s %s failed", self.name, scope.get("method"), scope.get("path"))
            response = Response.json(500, self.error_body(IEError(internal_message())))
        headers = list(response.headers)
        if response.close:
            headers.append((b"connection", b"close"))
        headers.append((b"content-length", str(len(response.body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    async def _read(self, scope: dict, receive: Callable) -> Request:
        limits = self.limits
        target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        if target > limits.max_url_bytes:
            raise UriTooLong(f"the request target is over {limits.max_url_bytes} bytes")
        raw_headers = scope.get("headers") or []
        if sum(len(k) + len(v) + 4 for k, v in raw_headers) > limits.max_header_bytes:
            raise HeadersTooLarge(f"the headers are over {limits.max_header_bytes} bytes")
        headers = _headers(raw_headers)
        if "content-length" in headers and "transfer-encoding" in headers:
            raise InvalidRequest("a request may not have both Content-Length and Transfer-Encoding")
        client = scope.get("client") or ("", 0)
        request = Request(scope["method"], scope["path"], headers, client[0])
        if request.method in ("POST", "PUT"):
            request.body = await self._body(headers, receive)
        return request

    async def _body(self, headers: dict[str, str], receive: Callable) -> bytes:
        limit = self.limits.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise LimitExceeded(f"body of {declared} bytes; the limit is {limit} (ie.limits.max_body_bytes)")
        loop = asyncio.get_running_loop()
        timeout_s = self.limits.read_timeout_ms / 1000
        deadline = loop.time() + timeout_s
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except TimeoutError as e:
                raise BodyTimeout(f"the body did not arrive within {timeout_s:g} s") from e
            if message["type"] == "http.disconnect":
                raise BodyTimeout("the client closed the connection before sending its body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise LimitExceeded(f"body over {limit} bytes (ie.limits.max_body_bytes)")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
