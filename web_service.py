"""Entry point: the IE Paddle Serving Pipeline (RPC on rpc_port, HTTP on http_port).

    python web_service.py [--config config.yml] [--backend auto|paddle|onnx]

DAG: request -> tokenize -> model -> decode -> response. HTTP: POST /ie/prediction.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import socket

from ops.decode_op import DecodeOp
from ops.model_op import ModelOp
from ops.tokenize_op import TokenizeOp
from pipeline.backends import resolve_backend
from pipeline.config import ServiceConfig, load_config, models_from_cli
from pipeline.errors import ConfigError
from pipeline.gateway import GatewayApp
from pipeline.http.servers import HttpServers, bind
from pipeline.kserve import KServeApp
from pipeline.log_setup import configure_logging
from pipeline.metrics import metrics_app, model_ready_setter
from pipeline.model_control import ModelControl
from pipeline.paddle_serving.compat import (
    IERequestOp,
    IEResponseOp,
    Op,
    PipelineServer,
    go_gateway_runs_here,
)
from pipeline.paddle_serving.logs import quiet_serving_request_logs
from pipeline.paddle_serving.server_loop import run_until_signal
from pipeline.pipeline_call import PipelineCall
from pipeline.process_guard import guard_children
from pipeline.service import IEService
from pipeline.tokenizer import tokenize_in_calling_threads

SERVICE_NAME = "ie"
EXIT_WORKER_DIED = 3  # an op worker process died (process ops); a supervisor should restart us
logger = logging.getLogger("web_service")


def _port_keys(config: ServiceConfig) -> list[tuple[str, int]]:
    ie = config.ie
    keys = [("rpc_port", config.rpc_port), ("http_port", config.http_port)]
    keys += [("ie.kserve_http_port", ie.kserve_http_port), ("ie.metrics_port", ie.metrics_port)]
    return [(key, port) for key, port in keys if port]


def bind_port(config: ServiceConfig, key: str, port: int) -> socket.socket:
    """Bind ``port`` on ``ie.bind_address``; a port held by a live socket stops start-up with its key.

    SO_REUSEADDR, as every real server sets it: sockets of a stopped server in TIME_WAIT do not
    count as taken, so a restart right after a stop succeeds.
    """
    try:
        return bind(config.ie.bind_address, port)
    except OSError as e:
        raise ConfigError(
            f"port {port} ({key} in {config.path.name}) is already in use: {e.strerror}; "
            "stop the other server or choose another port"
        ) from e


def preflight(config: ServiceConfig) -> tuple[IEService, dict[str, socket.socket]]:
    """Check every port and load every model before the server starts, so that a taken port or a
    bad file stops start-up with its name.

    Returns the service core (its engines loaded: with thread ops the model op uses them, process
    ops load their own) and the bound sockets of the HTTP ports this process serves.
    """
    sockets = {key: bind_port(config, key, port) for key, port in _port_keys(config)}
    for key in ("rpc_port", "http_port"):  # gRPC and the Go gateway bind their own
        if key in sockets and (key == "rpc_port" or not use_python_gateway(config)):
            sockets.pop(key).close()
    if config.ie.model_control and not config.is_thread_op:
        raise ConfigError("ie.model_control needs thread ops (dag.is_thread_op: true)")
    if config.ie.model_control and not config.ie.kserve_http_port:
        raise ConfigError(
            "ie.model_control needs the KServe port (ie.kserve_http_port), where its routes are"
        )
    batch_requests = int(config.op_conf("model").get("batch_size", 1))
    service = IEService(config.ie, resolve_backend(config.ie.backend), batch_requests=batch_requests)
    service.start_engines()
    defaults = service.registry.defaults()
    for name, model in service.models.items():
        default = " (default of its task)" if defaults.get(model.task) == name else ""
        logger.info(
            "model %s: task %s, version %s, %s ok%s", name, model.task, model.version, model.dir, default
        )
    if not config.is_thread_op:
        service.close()  # each op process loads its own
    return service, sockets


def use_python_gateway(config: ServiceConfig) -> bool:
    """The Python gateway serves HTTP unless the config asks for Paddle Serving's Go one."""
    if not config.http_port:
        return False
    if config.ie.http_gateway == "go" and not go_gateway_runs_here():
        raise ConfigError(
            "ie.http_gateway is 'go' but Paddle Serving's Go gateway is not built for this host"
        )
    return config.ie.http_gateway != "go"


class IEWebService:
    """Builds the DAG and runs it, as Paddle Serving's WebService does, with our edges around it."""

    def __init__(
        self,
        config: ServiceConfig,
        service: IEService,
        name: str = SERVICE_NAME,
        sockets: dict[str, socket.socket] | None = None,
    ):
        self.config = config
        self.service = service
        self._server = PipelineServer(name)
        self._sockets = dict(sockets or {})
        ie = config.ie
        self._limits = ie.limits
        self._http = HttpServers(ie.limits)
        self._kserve: KServeApp | None = None
        self._call: PipelineCall | None = None

    def get_pipeline_response(self, read_op: Op) -> Op:
        tokenize = TokenizeOp(name="tokenize", input_ops=[read_op], service=self.service)
        adaptive = self.config.ie.batching == "adaptive"
        wait = not self.config.is_thread_op  # a job pickled to the decode process must be done
        model = ModelOp(
            name="model", input_ops=[tokenize], service=self.service, adaptive=adaptive, wait=wait
        )
        return DecodeOp(name="decode", input_ops=[model], service=self.service)

    def prepare_pipeline_config(self) -> None:
        pipeline_conf = dict(self.config.pipeline)
        pipeline_conf.pop("http_port", None)  # the HTTP port is ours (or our Go gateway process)
        last_op = self.get_pipeline_response(IERequestOp())
        finish = None
        if self.config.is_thread_op:  # a job its lane has not run yet is finished in the request's thread
            timeout_s = self.config.ie.limits.request_timeout_ms / 1000
            finish = lambda job: self.service.finish(job, timeout_s)  # noqa: E731
        self._server.set_response_op(IEResponseOp(input_ops=[last_op], finish=finish))
        self._server.prepare_server(yml_dict=pipeline_conf)
        if self.config.ie.metrics_port and not self.config.is_thread_op:
            logger.warning("metrics count thread ops only (dag.is_thread_op: true); process ops go uncounted")

    def _start_http(self, servicer) -> None:
        """Once the pipeline runs: the HTTP apps on their bound sockets, then the warm-up."""
        ie = self.config.ie
        self._call = PipelineCall(servicer, self.config.worker_num, ie.limits.request_timeout_ms / 1000)
        if "http_port" in self._sockets:
            self._http.add("gateway", self._sockets["http_port"], GatewayApp(self._call, self._limits).asgi)
        if "ie.kserve_http_port" in self._sockets:
            cards = {name: m.card for name, m in self.service.models.items()}
            ready = model_ready_setter(sorted(ie.models))
            registry = self.service.registry
            self._kserve = KServeApp(
                cards,
                {name: self.service.engine_kind(name) for name in cards},
                self._limits,
                self._call,
                ready,
                playground=ie.playground,
                catalog=lambda: {n: (m.served.card, m.engine_kind) for n, m in registry.snapshot().items()},
            )
            if ie.model_control:
                kserve = self._kserve
                kserve.attach_control(
                    ModelControl(
                        self.service,
                        self.config.path.parent,
                        on_loaded=lambda name: (kserve.model_loaded(name), ready(name)),
                        on_unloaded=kserve.model_unloaded,
                    )
                )
                logger.warning(
                    "model control is on (ie.model_control): /v2/repository/* on %s:%s loads and unloads "
                    "models; keep that port to trusted operators",
                    ie.bind_address,
                    ie.kserve_http_port,
                )
            self._http.add("KServe v2", self._sockets["ie.kserve_http_port"], self._kserve.asgi)
        if "ie.metrics_port" in self._sockets:
            self._http.add("metrics", self._sockets["ie.metrics_port"], metrics_app(self._limits))
        self._http.start()
        if self._kserve is not None:
            self._kserve.start_warmup()

    def _not_ready(self) -> None:
        model_ready_setter(sorted(self.service.models))  # the gauge back to 0
        if self._kserve is not None:
            self._kserve.stop()
            self._kserve.readiness.mark_all_not_ready()

    def _stop_http(self, grace_s: float) -> None:
        self._http.stop(grace_s)
        if self._call is not None:
            self._call.close()

    def run_service(self) -> int:
        """Serve until SIGTERM/SIGINT (return 0) or an op worker process dies (return 3)."""
        go_port = self.config.http_port if "http_port" not in self._sockets else None
        death = run_until_signal(
            self._server,
            bind_address=self.config.ie.bind_address,
            grace_s=self.config.ie.limits.request_timeout_ms / 1000,
            on_started=self._start_http,
            before_drain=[self._not_ready],
            while_draining=[self._stop_http],
            go_gateway_port=go_port,
            max_receive_bytes=self.config.ie.limits.max_body_bytes,
            max_send_bytes=self.config.ie.limits.max_response_bytes,
        )
        if death is not None:
            logger.error("stopped because %s; restart the service", death.describe())
            return EXIT_WORKER_DIED
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yml")
    parser.add_argument("--backend", choices=["auto", "paddle", "onnx"], help="overrides ie.backend")
    parser.add_argument("--http-gateway", choices=["auto", "go", "python"], help="overrides ie.http_gateway")
    parser.add_argument(
        "--model",
        action="append",
        metavar="NAME=DIR",
        help="serve the bridge-built DIR as model NAME (repeatable; replaces ie.models)",
    )
    args = parser.parse_args(argv)
    overrides: dict[str, object] = {
        k: v for k, v in (("backend", args.backend), ("http_gateway", args.http_gateway)) if v
    }
    configure_logging()
    tokenize_in_calling_threads()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: every stack to the log
    try:
        if args.model:
            overrides["models"] = models_from_cli(args.model)
        config = load_config(args.config, overrides)
        configure_logging(config.ie.log_level)
        if not config.ie.serving_request_logs:
            quiet_serving_request_logs()
        guard_children()
        core, sockets = preflight(config)
        service = IEWebService(config, core, sockets=sockets)
        service.prepare_pipeline_config()
    except ConfigError as e:
        logger.error("cannot start: %s", e.message)
        return 2
    logger.info(
        "serving RPC on %s, HTTP on %s (%s gateway), KServe v2 HTTP on %s, metrics on %s",
        config.rpc_port,
        config.http_port,
        "python" if use_python_gateway(config) else "go",
        config.ie.kserve_http_port or "off",
        config.ie.metrics_port or "off",
    )
    return service.run_service()


if __name__ == "__main__":
    code = main()
    # After the drain, gRPC handler threads of requests that outlived the grace period may still
    # wait on the DAG; do not let interpreter shutdown wait for them.
    logging.shutdown()
    os._exit(code)
