"""Runs a prepared ``PipelineServer`` until SIGTERM/SIGINT, then drains in-flight requests.

``PipelineServer.run_server`` blocks in ``wait_for_termination`` and dies mid-request on SIGTERM.
This does what its non-``build_dag_each_worker`` branch does (one gRPC server with a
``PipelineServicer``, then the Go HTTP gateway) and on a signal stops taking new requests and
waits up to ``grace_s`` for the ones in flight. With process ops it also stops, after a short
drain, when an op worker process dies (:mod:`pipeline.watchdog`). It reads the server's prepared
settings from PipelineServer's attributes, which Paddle Serving 0.9.0 sets in ``prepare_server``.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent import futures

from pipeline.watchdog import WorkerDeath, WorkerWatchdog, op_workers

logger = logging.getLogger(__name__)

_GRPC_OPTIONS = [
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
]


def run_until_signal(
    server,
    grace_s: float = 30.0,
    before_drain: Sequence[Callable[[], None]] = (),
    after_drain: Sequence[Callable[[], None]] = (),
    stop_event: threading.Event | None = None,
    death_grace_s: float = 5.0,
) -> WorkerDeath | None:
    """Serve ``server`` (a prepared PipelineServer); return after a drained shutdown.

    ``before_drain`` callables run first (e.g. report not-ready), ``after_drain`` ones once the
    in-flight requests have finished (e.g. stop the HTTP gateways). Returns None after a signal,
    or the :class:`WorkerDeath` that stopped the server (the drain then lasts ``death_grace_s``:
    requests inside the dead worker never finish).
    """
    import grpc
    from paddle_serving_server.pipeline.pipeline_server import PipelineServicer

    from pipeline.serving_compat import pipeline_service_pb2_grpc

    if server._build_dag_each_worker:
        raise ValueError("build_dag_each_worker: true is not supported; use worker_num threads")
    stop = stop_event or threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    grpc_server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=server._worker_num), options=_GRPC_OPTIONS
    )
    servicer = PipelineServicer(server._name, server._response_op, server._conf)
    pipeline_service_pb2_grpc.add_PipelineServiceServicer_to_server(servicer, grpc_server)
    if grpc_server.add_insecure_port(f"[::]:{server._rpc_port}") == 0:
        raise OSError(f"cannot listen on rpc_port {server._rpc_port}")
    grpc_server.start()
    watchdog = WorkerWatchdog(op_workers(servicer._dag_executor._dag), lambda _: stop.set()).start()
    server._run_grpc_gateway(grpc_port=server._rpc_port, http_port=server._http_port or 0)
    logger.info("ready: RPC on %s", server._rpc_port)
    try:
        stop.wait()
    finally:
        watchdog.stop()
        grace = grace_s if watchdog.death is None else min(grace_s, death_grace_s)
        logger.info("shutting down: draining in-flight requests (up to %.0fs)", grace)
        _run_all(before_drain)
        grpc_server.stop(grace).wait()
        _run_all(after_drain)
        watchdog.terminate_workers()
        proxy = getattr(server, "_proxy_server", None)
        if proxy is not None and proxy.is_alive():
            proxy.terminate()
            proxy.join(5)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        logger.info("stopped")
    return watchdog.death


def _run_all(callbacks: Sequence[Callable[[], None]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:
            logger.exception("shutdown step failed")
