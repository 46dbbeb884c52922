"""Entry point: the IE Paddle Serving Pipeline (RPC on rpc_port, HTTP on http_port).

    python web_service.py [--config config.yml] [--backend auto|paddle|onnx]

DAG: request -> tokenize -> model -> decode -> response. HTTP: POST /ie/prediction.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket

from ops.decode_op import DecodeOp
from ops.model_op import ModelOp
from ops.tokenize_op import TokenizeOp
from pipeline.backends import create_backend, resolve_backend
from pipeline.config import ServiceConfig, load_config
from pipeline.errors import ConfigError
from pipeline.gateway import HttpGateway, go_gateway_runs_here
from pipeline.kserve import KServeServer
from pipeline.metrics import model_ready_setter, start_metrics_server
from pipeline.models import load_served_models
from pipeline.server_runner import run_until_signal
from pipeline.serving_compat import Op, PipelineServer, RequestOp, ResponseOp

SERVICE_NAME = "ie"
EXIT_WORKER_DIED = 3  # an op worker process died (process ops); a supervisor should restart us
OWN_LOGGERS = ("web_service", "ops", "pipeline", "client")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
logger = logging.getLogger("web_service")


def configure_logging(level: str = "INFO") -> None:
    """This project's loggers to stderr at ``level``, beside Paddle Serving's PipelineServingLogs/.

    Importing Paddle Serving's pipeline sends the root logger to files only and disables the
    loggers created before it; ours are re-enabled here.
    """
    for name, existing in list(logging.root.manager.loggerDict.items()):
        if isinstance(existing, logging.Logger) and name.split(".")[0] in OWN_LOGGERS:
            existing.disabled = False
    for name in OWN_LOGGERS:
        own = logging.getLogger(name)
        own.setLevel(level)
        if not own.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
            own.addHandler(handler)
    logging.getLogger().setLevel(level)


# Paddle Serving logs about seven lines per request into PipelineServingLogs/ (request unpacked,
# ID generated, "skip process stage" warnings for ops without a model client, "prometheus inf count
# +1", "Auto-batching is On", "Succ predict"). Our decode op logs one line per request instead.
_SERVING_REQUEST_LINES = (
    "inference request name:",
    "RequestOp unpack one request",
    "Succ Generate ID",
    "skip process stage",
    "prometheus inf count",
    "Auto-batching is On",
    "Succ predict",
)
_SERVING_LOGGERS = ("pipeline_server", "operator", "dag")


class _DropServingRequestLines(logging.Filter):
    """Drops Paddle Serving's per-request lines; its start-up, warning and error lines stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg if isinstance(record.msg, str) else ""
        return not any(marker in msg for marker in _SERVING_REQUEST_LINES)


def quiet_serving_request_logs() -> None:
    """Install :class:`_DropServingRequestLines` on Paddle Serving's pipeline loggers."""
    for name in _SERVING_LOGGERS:
        logging.getLogger(f"paddle_serving_server.pipeline.{name}").addFilter(_DropServingRequestLines())


def check_ports(config: ServiceConfig) -> None:
    """Fail start-up with the config key when a port is taken (Paddle Serving exits with a typo)."""
    for key, port in (("rpc_port", config.rpc_port), ("http_port", config.http_port)):
        if not port:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError as e:
                raise ConfigError(
                    f"port {port} ({key} in {config.path.name}) is already in use: {e.strerror}; "
                    "stop the other server or choose another port"
                ) from e


def preflight(config: ServiceConfig) -> str:
    """Load every model once before the server starts, so a bad file stops start-up with its name.

    Returns the backend kind in use.
    """
    check_ports(config)
    kind = resolve_backend(config.ie.backend)
    for name, model in load_served_models(config.ie).items():
        create_backend(kind, model.dir, model.card, threads=1, use_onednn=False).close()
        logger.info("model %s: %s ok", name, model.dir)
    return kind


def use_python_gateway(config: ServiceConfig) -> bool:
    """The python gateway serves HTTP when asked, or on hosts where the Go one cannot run."""
    if not config.http_port:
        return False
    choice = config.ie.http_gateway
    if choice == "auto":
        runs = go_gateway_runs_here()
        logger.info(
            "http gateway auto: %s",
            "go (paddle serving)" if runs else "python (go binary is not for this host)",
        )
        return not runs
    return choice == "python"


class IEWebService:
    """Builds the DAG and runs it in a PipelineServer, as Paddle Serving's WebService does."""

    def __init__(self, config: ServiceConfig, name: str = SERVICE_NAME, backend: str | None = None):
        self.config = config
        self.backend = backend or resolve_backend(config.ie.backend)
        self._server = PipelineServer(name)
        self._gateway: HttpGateway | None = None
        self._kserve: KServeServer | None = None

    def get_pipeline_response(self, read_op: Op) -> Op:
        ie = self.config.ie
        tokenize = TokenizeOp(name="tokenize", input_ops=[read_op], settings=ie)
        model = ModelOp(name="model", input_ops=[tokenize], settings=ie)
        return DecodeOp(name="decode", input_ops=[model])

    def prepare_pipeline_config(self) -> None:
        pipeline_conf = dict(self.config.pipeline)
        if use_python_gateway(self.config):
            pipeline_conf.pop("http_port", None)  # PipelineServer then starts no Go gateway
            ie = self.config.ie
            self._gateway = HttpGateway(
                self.config.http_port,
                self.config.rpc_port,
                bind=ie.bind_address,
                max_body_bytes=ie.limits.max_body_bytes,
                timeout_s=ie.limits.request_timeout_ms / 1000,
            )
        self.prepare_operations()
        last_op = self.get_pipeline_response(RequestOp())
        self._server.set_response_op(ResponseOp(input_ops=[last_op]))
        self._server.prepare_server(yml_dict=pipeline_conf)

    def prepare_operations(self) -> None:
        """Bind the metrics (ie.metrics_port) and KServe v2 (ie.kserve_http_port) ports; 0 = off."""
        ie = self.config.ie
        models = sorted(ie.models)
        if ie.metrics_port:
            if not self.config.is_thread_op:
                logger.warning(
                    "metrics count thread ops only (dag.is_thread_op: true); process ops go uncounted"
                )
            try:
                start_metrics_server(ie.metrics_port, ie.bind_address)
            except OSError as e:
                raise ConfigError(
                    f"cannot serve metrics on port {ie.metrics_port} (ie.metrics_port): {e}"
                ) from e
        if ie.kserve_http_port:
            cards = {name: m.card for name, m in load_served_models(ie).items()}
            go_gateway = self._gateway is None and bool(self.config.http_port)
            try:
                self._kserve = KServeServer(
                    ie.kserve_http_port,
                    self.config.rpc_port,
                    cards,
                    self.backend,
                    bind=ie.bind_address,
                    max_body_bytes=ie.limits.max_body_bytes,
                    timeout_s=ie.limits.request_timeout_ms / 1000,
                    # Paddle Serving's Go gateway listens once its process has forked.
                    wait_ports=[self.config.http_port] if go_gateway else [],
                    on_model_ready=model_ready_setter(models),
                )
            except OSError as e:
                raise ConfigError(
                    f"cannot serve KServe on port {ie.kserve_http_port} (ie.kserve_http_port): {e}"
                ) from e

    def run_service(self) -> int:
        """Serve until SIGTERM/SIGINT (return 0) or an op worker process dies (return 3)."""
        models = sorted(self.config.ie.models)
        before_drain = [lambda: model_ready_setter(models)]  # the gauge back to 0
        after_drain = []
        if self._gateway is not None:
            self._gateway.start()
            after_drain.append(self._gateway.stop)
        if self._kserve is not None:
            self._kserve.start()
            before_drain.append(self._kserve.readiness.mark_all_not_ready)
            after_drain.append(self._kserve.stop)
        death = run_until_signal(
            self._server,
            grace_s=self.config.ie.limits.request_timeout_ms / 1000,
            before_drain=before_drain,
            after_drain=after_drain,
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
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("backend", args.backend), ("http_gateway", args.http_gateway)) if v}
    configure_logging()
    try:
        config = load_config(args.config, overrides)
        configure_logging(config.ie.log_level)
        if not config.ie.serving_request_logs:
            quiet_serving_request_logs()
        backend = preflight(config)
        service = IEWebService(config, backend=backend)
        service.prepare_pipeline_config()
    except ConfigError as e:
        logger.error("cannot start: %s", e.message)
        return 2
    logger.info(
        "serving RPC on %s, HTTP on %s, KServe v2 HTTP on %s, metrics on %s",
        config.rpc_port,
        config.http_port,
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
