"""Listening sockets and the one event-loop thread that serves every HTTP port with uvicorn.

Sockets are bound at start-up (:func:`bind`), so a taken port stops the server with its config
key before anything else starts; they are closed in forked children. The servers run in one
daemon thread (uvicorn installs no signal handlers outside the main thread: the main thread's
SIGTERM handler drains the pipeline first, then calls :meth:`HttpServers.stop`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading

import uvicorn

from pipeline.config import Limits
from pipeline.http.protocol import protocol_class

logger = logging.getLogger(__name__)

BACKLOG = 2048


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (SO_REUSEADDR: TIME_WAIT does not count as taken).

    Raises OSError when a live socket holds the port.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when the protocol says
    # TCP; without it Nagle holds each answer's body until the client's delayed ACK (40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6 and host == "::":
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    os.register_at_fork(after_in_child=sock.close)  # forked helpers must not hold our ports
    return sock


class HttpServers:
    """uvicorn servers for ``(name, socket, ASGI app)`` triples, in one background thread, with
    the timeouts and head size of ``limits`` (``ie.limits``)."""

    def __init__(self, limits: Limits):
        self._limits = limits
        self._servers: list[tuple[str, socket.socket, uvicorn.Server]] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()

    def add(self, name: str, sock: socket.socket, app) -> None:
        config = uvicorn.Config(
            app,
            http=protocol_class(self._limits.read_timeout_ms / 1000),
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            date_header=True,
            backlog=BACKLOG,
            timeout_keep_alive=max(1, round(self._limits.keepalive_timeout_ms / 1000)),
            # beyond the app's own URL and header limits, h11 refuses the head itself (431)
            h11_max_incomplete_event_size=self._limits.max_url_bytes + self._limits.max_header_bytes,
        )
        self._servers.append((name, sock, uvicorn.Server(config)))

    def start(self) -> None:
        """Serve every added socket; returns once all of them accept connections."""
        if not self._servers:
            return
        self._thread = threading.Thread(target=self._run, name="http-servers", daemon=True)
        self._thread.start()
        if not self._started.wait(30):
            raise RuntimeError("the HTTP servers did not start within 30 s")
        for name, sock, _ in self._servers:
            logger.info("%s HTTP on %s:%d", name, *sock.getsockname()[:2])

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def serve_all() -> None:
            tasks = [asyncio.create_task(s.serve(sockets=[sock])) for _, sock, s in self._servers]
            while not all(s.started for _, _, s in self._servers):
                if any(t.done() for t in tasks):
                    break
                await asyncio.sleep(0.01)
            self._started.set()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            loop.run_until_complete(serve_all())
        finally:
            self._started.set()
            loop.close()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop accepting, finish the answers being written, close every connection."""
        for _, _, server in self._servers:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                for _, _, server in self._servers:
                    server.force_exit = True
                self._thread.join(timeout_s)
        for _, sock, _ in self._servers:
            sock.close()
