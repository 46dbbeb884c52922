"""The HTTP/1.1 connection: uvicorn's h11 protocol, with two changes made for an exposed port.

- A request whose framing h11 refuses (conflicting ``Content-Length``, a transfer coding other
  than chunked, a header section over the limit, bytes that are not HTTP) is answered with the
  status h11 suggests (400, 431, 501) and a JSON body, then the connection is closed. uvicorn
  answers them with a plain-text 400.
- The request head must arrive within ``read_timeout_s`` of the connection opening or of the
  previous answer. uvicorn arms its keep-alive timer only after a response and cancels it on any
  byte received, so a client that trickles a header a byte at a time holds a connection forever.

This module is the only one that subclasses uvicorn's protocol or h11's connection.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from pipeline.errors import (
    HeadersTooLarge,
    IEError,
    InvalidRequest,
    NotImplementedByServer,
    grpc_code_of,
)


class _Connection(h11.Connection):
    """h11's server connection that remembers the protocol error it raised and calls back on
    each request head."""

    def __init__(self, *args: Any, on_request=None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.last_error: h11.RemoteProtocolError | None = None
        self._on_request = on_request

    def next_event(self):
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as e:
            self.last_error = e
            raise
        if isinstance(event, h11.Request) and self._on_request is not None:
            self._on_request()
        return event


def framing_error(exc: h11.RemoteProtocolError | None) -> IEError:
    """The typed error for a request h11 could not parse (h11's own text, which can quote the
    request's bytes as a Python repr, is not passed on)."""
    hint = getattr(exc, "error_status_hint", 400)
    if hint == 431:
        return HeadersTooLarge("the request head is larger than this server accepts")
    if hint == 501:
        return NotImplementedByServer("only the chunked transfer coding is supported")
    return InvalidRequest(
        "invalid HTTP/1.1 request (request line, header syntax or conflicting Content-Length)"
    )


def error_json(exc: IEError) -> bytes:
    """The JSON body of an error answered below the apps (the same keys as the gateway's)."""
    body = {"error": exc.message, "code": grpc_code_of(exc), "message": exc.message}
    return json.dumps(body).encode("utf-8")


class IEH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with JSON framing errors and a deadline for the request head.

    ``read_timeout_s`` is a class attribute: :func:`protocol_class` makes the subclass a server
    uses (uvicorn builds protocols from a class).
    """

    read_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        limit = self.config.h11_max_incomplete_event_size
        sizes = {} if limit is None else {"max_incomplete_event_size": limit}
        self.conn = _Connection(h11.SERVER, on_request=self._cancel_head_deadline, **sizes)
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        self._arm_head_deadline()  # before the next pipelined request's head is read
        super().on_response_complete()

    def _arm_head_deadline(self) -> None:
        self._cancel_head_deadline()
        self._head_deadline = self.loop.call_later(self.read_timeout_s, self._head_too_slow)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """Answer a framing error with its status and a JSON body; close the connection."""
        exc = framing_error(self.conn.last_error)
        body = error_json(exc)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        try:
            self.transport.write(self.conn.send(h11.Response(status_code=exc.http_status, headers=headers)))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:  # h11 cannot write a response in this state
            pass
        self.transport.close()


def protocol_class(read_timeout_s: float) -> type[IEH11Protocol]:
    """An :class:`IEH11Protocol` subclass with the given head deadline."""
    return type("IEH11Protocol", (IEH11Protocol,), {"read_timeout_s": read_timeout_s})
