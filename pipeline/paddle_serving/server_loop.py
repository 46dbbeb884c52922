"""Runs a prepared ``PipelineServer`` until SIGTERM/SIGINT, then drains in-flight requests.

``PipelineServer.run_server`` blocks in ``wait_for_termination``, dies mid-request on SIGTERM,
binds gRPC to every address and leaves its HTTP gateway process running. This does what its
non-``build_dag_each_worker`` branch does (one gRPC server with the pipeline's servicer, then
optionally the Go HTTP gateway) with our :class:`~pipeline.paddle_serving.compat.GuardedServicer`, on
``bind_address``; on a signal it stops taking new requests and waits up to ``grace_s`` for the
ones in flight. With process ops it also stops, after a short drain, when an op worker process
dies (:mod:`pipeline.paddle_serving.watchdog`). It reads the server's prepared settings from PipelineServer's
attributes, which Paddle Serving 0.9.0 sets in ``prepare_server``.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent import futures

from pipeline.paddle_serving.compat import GuardedServicer, add_servicer_to_server, start_go_gateway
from pipeline.paddle_serving.watchdog import (
    WorkerDeath,
    WorkerWatchdog,
    channel_manager,
    op_workers,
    stop_manager,
    stop_processes,
)

logger = logging.getLogger(__name__)


def grpc_options(max_receive_bytes: int, max_send_bytes: int) -> list[tuple[str, int]]:
    """The gRPC server's options: message limits (a larger message is refused with
    RESOURCE_EXHAUSTED) and no port sharing."""
    return [
        ("grpc.max_receive_message_length", max_receive_bytes),
        ("grpc.max_send_message_length", max_send_bytes),
        ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
    ]


_SHUTDOWN_SLACK_S = 5.0  # after the grace period, how long cancelled calls get to end
# A signal the kernel hands to another thread (gRPC's, the engines') only marks its Python handler
# as pending; the handler runs when the main thread next wakes, so the main thread must not block
# without a timeout (a SIGTERM once went unanswered for 30 s that way).
_SIGNAL_POLL_S = 0.5


def grpc_address(host: str, port: int) -> str:
    """``host:port`` as gRPC writes it (IPv6 addresses in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run_until_signal(
    server,
    bind_address: str = "0.0.0.0",
    grace_s: float = 30.0,
    on_started: Callable[[GuardedServicer], None] | None = None,
    before_drain: Sequence[Callable[[], None]] = (),
    while_draining: Sequence[Callable[[float], None]] = (),
    go_gateway_port: int | None = None,
    stop_event: threading.Event | None = None,
    death_grace_s: float = 5.0,
    max_receive_bytes: int = 4 * 2**20,
    max_send_bytes: int = 64 * 2**20,
) -> WorkerDeath | None:
    """Serve ``server`` (a prepared PipelineServer); return after a drained shutdown.

    ``on_started`` gets the servicer once gRPC listens and every helper process is forked (start
    in-process HTTP edges there). On a signal, ``before_drain`` callables run first (e.g. report
    not-ready), then gRPC refuses new calls and ``while_draining`` callables get the seconds left
    (e.g. stop the HTTP servers once their requests are answered). Returns None after a signal,
    or the :class:`WorkerDeath` that stopped the server (the drain then lasts ``death_grace_s``:
    requests inside the dead worker never finish). ``max_receive_bytes`` / ``max_send_bytes``
    bound one gRPC message each way.
    """
    import grpc

    if server._build_dag_each_worker:
        raise ValueError("build_dag_each_worker: true is not supported; use worker_num threads")
    stop = stop_event or threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    # Every fork (op worker processes, the Go gateway) happens before gRPC creates its threads:
    # a child forked while gRPC threads run gets gRPC's fork handlers skipped ("Other threads are
    # currently calling into gRPC") and can leave the parent's gRPC unable to finish shutting down.
    servicer = GuardedServicer(server._name, server._response_op, server._conf)
    dag = servicer._dag_executor._dag
    watchdog = WorkerWatchdog(op_workers(dag), lambda _: stop.set()).start()
    gateway = start_go_gateway(server._rpc_port, go_gateway_port) if go_gateway_port else None
    grpc_server = None
    drained = None
    try:
        options = grpc_options(max_receive_bytes, max_send_bytes)
        grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=server._worker_num), options=options)
        add_servicer_to_server(servicer, grpc_server)
        if grpc_server.add_insecure_port(grpc_address(bind_address, server._rpc_port)) == 0:
            raise OSError(f"cannot listen on {bind_address}:{server._rpc_port} (rpc_port)")
        grpc_server.start()
        if on_started is not None:
            on_started(servicer)
        logger.info("ready: RPC on %s", grpc_address(bind_address, server._rpc_port))
        while not stop.wait(_SIGNAL_POLL_S):
            pass
    finally:
        watchdog.stop()
        grace = grace_s if watchdog.death is None else min(grace_s, death_grace_s)
        logger.info("shutting down: draining in-flight requests (up to %.0fs)", grace)
        _run_all(before_drain)
        if grpc_server is not None:
            drained = grpc_server.stop(grace)
        _run_all([lambda step=step: step(grace) for step in while_draining])
        if drained is not None and not drained.wait(grace + _SHUTDOWN_SLACK_S):
            logger.warning("gRPC did not finish shutting down %.0fs after the drain; exiting anyway", grace)
        watchdog.terminate_workers()
        _run_all([lambda: stop_manager(channel_manager(dag))])
        if gateway is not None:
            stop_processes([gateway])
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
