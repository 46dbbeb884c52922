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
from pipeline.config import ServiceConfig, load_config
from pipeline.errors import ConfigError
from pipeline.serving_compat import Op, PipelineServer, RequestOp, ResponseOp

SERVICE_NAME = "ie"
logger = logging.getLogger("web_service")


class IEWebService:
    """Builds the DAG and runs it in a PipelineServer, as Paddle Serving's WebService does."""

    def __init__(self, config: ServiceConfig, name: str = SERVICE_NAME):
        self.config = config
        self._server = PipelineServer(name)

    def get_pipeline_response(self, read_op: Op) -> Op:
        ie = self.config.ie
        tokenize = TokenizeOp(name="tokenize", input_ops=[read_op], settings=ie)
        model = ModelOp(name="model", input_ops=[tokenize], settings=ie)
        return DecodeOp(name="decode", input_ops=[model])

    def prepare_pipeline_config(self) -> None:
        last_op = self.get_pipeline_response(RequestOp())
        self._server.set_response_op(ResponseOp(input_ops=[last_op]))
        self._server.prepare_server(yml_dict=dict(self.config.pipeline))

    def run_service(self) -> None:
        self._server.run_server()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yml")
    parser.add_argument("--backend", choices=["auto", "paddle", "onnx"], help="overrides ie.backend")
    args = parser.parse_args(argv)
    overrides = {"backend": args.backend} if args.backend else {}
    try:
        config = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"config error: {e.message}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.ie.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = IEWebService(config)
    service.prepare_pipeline_config()
    logger.info("serving RPC on %s, HTTP on %s", config.rpc_port, config.http_port)
    service.run_service()
    return 0


if __name__ == "__main__":
    sys.exit(main())
