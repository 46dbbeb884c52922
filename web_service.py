"""Entry point: the IE Paddle Serving Pipeline (RPC on rpc_port, HTTP on http_port).

    python web_service.py [--config config.yml] [--backend auto|paddle|onnx]

DAG: request -> tokenize -> model -> decode -> response. HTTP: POST /ie/prediction.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ops.decode_op import DecodeOp
from ops.model_op import ModelOp
from ops.tokenize_op import TokenizeOp
from pipeline.backends import create_backend, resolve_backend
from pipeline.config import ServiceConfig, load_config
from pipeline.errors import ConfigError
from pipeline.gateway import HttpGateway, go_gateway_runs_here
from pipeline.models import load_served_models
from pipeline.serving_compat import Op, PipelineServer, RequestOp, ResponseOp

SERVICE_NAME = "ie"
logger = logging.getLogger("web_service")


def preflight(config: ServiceConfig) -> str:
    """Load every model once before the server starts, so a bad file stops start-up with its name.

    Returns the backend kind in use.
    """
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

    def __init__(self, config: ServiceConfig, name: str = SERVICE_NAME):
        self.config = config
        self._server = PipelineServer(name)
        self._gateway: HttpGateway | None = None

    def get_pipeline_response(self, read_op: Op) -> Op:
        ie = self.config.ie
        tokenize = TokenizeOp(name="tokenize", input_ops=[read_op], settings=ie)
        model = ModelOp(name="model", input_ops=[tokenize], settings=ie)
        return DecodeOp(name="decode", input_ops=[model])

    def prepare_pipeline_config(self) -> None:
        pipeline_conf = dict(self.config.pipeline)
        if use_python_gateway(self.config):
            pipeline_conf["http_port"] = 0  # PipelineServer then starts no Go gateway
            ie = self.config.ie
            self._gateway = HttpGateway(
                self.config.http_port,
                self.config.rpc_port,
                bind=ie.bind_address,
                max_body_bytes=ie.limits.max_body_bytes,
                timeout_s=ie.limits.request_timeout_ms / 1000,
            )
        last_op = self.get_pipeline_response(RequestOp())
        self._server.set_response_op(ResponseOp(input_ops=[last_op]))
        self._server.prepare_server(yml_dict=pipeline_conf)

    def run_service(self) -> None:
        if self._gateway is not None:
            self._gateway.start()
        self._server.run_server()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yml")
    parser.add_argument("--backend", choices=["auto", "paddle", "onnx"], help="overrides ie.backend")
    parser.add_argument("--http-gateway", choices=["auto", "go", "python"], help="overrides ie.http_gateway")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("backend", args.backend), ("http_gateway", args.http_gateway)) if v}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config, overrides)
        logging.getLogger().setLevel(config.ie.log_level)
        preflight(config)
    except ConfigError as e:
        logger.error("cannot start: %s", e.message)
        return 2
    service = IEWebService(config)
    service.prepare_pipeline_config()
    logger.info("serving RPC on %s, HTTP on %s", config.rpc_port, config.http_port)
    service.run_service()
    return 0


if __name__ == "__main__":
    sys.exit(main())
