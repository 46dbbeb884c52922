"""The Triton baseline: the same engines and work behind NVIDIA Triton's dynamic batcher (PyTriton).

build/bench/triton-venv/bin/python -m client.bench.triton_server --models serving_model --backend onnx \\
    --http-port 8000

One Triton model ``ie`` takes the service's request body as a BYTES tensor ``request`` and answers
Paddle Serving's JSON in ``response``: ``POST /v2/models/ie/infer``. Triton's dynamic batcher
merges concurrent requests (``--max-batch-size``, ``--queue-delay-us``) into one call of the
infer function, which validates, tokenizes, runs the engine over all their rows and decodes, as
the service's tokenize -> model -> decode ops do (seed 003's ensemble in one Python model).
Benchmark only: run it with the interpreter of ``build/bench/triton-venv`` (made by
``client.bench.benchmark``'s Triton setup); the service never needs PyTriton.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import sysconfig
from pathlib import Path

import numpy as np

from client.bench.common import ENGINES, INPUT, MODEL_NAME, OUTPUT

logger = logging.getLogger(__name__)


def make_infer_func(service):
    """A PyTriton infer function over ``service`` (a :class:`client.bench.naive_server.NaiveService`)."""
    from pytriton.decorators import batch

    @batch
    def infer(request: np.ndarray) -> dict[str, np.ndarray]:
        bodies = []
        for raw in request[:, 0]:
            try:
                bodies.append(json.loads(raw))
            except ValueError as e:
                bodies.append({"invalid": str(e)})  # answered as a bad request below
        answers = service.answer_many(bodies)
        encoded = [json.dumps(a, ensure_ascii=False).encode("utf-8") for a in answers]
        return {OUTPUT: np.array(encoded, dtype=np.object_).reshape(-1, 1)}

    return infer


def serve(args: argparse.Namespace) -> None:
    """Bind the model and block serving it."""
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    from client.bench.common import bench_settings
    from client.bench.naive_server import NaiveService

    # each Triton instance's call runs at once (a lane worker per instance), on the rows Triton merged
    settings = bench_settings(args.models, args.backend, args.threads, instances=args.instances)
    service = NaiveService(settings, batch_requests=args.max_batch_size)
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        log_verbose=0,
    )
    batcher = DynamicBatcher(max_queue_delay_microseconds=args.queue_delay_us)
    with Triton(config=config) as triton:
        triton.bind(
            model_name=MODEL_NAME,
            infer_func=[make_infer_func(service) for _ in range(args.instances)],
            inputs=[Tensor(name=INPUT, dtype=bytes, shape=(1,))],
            outputs=[Tensor(name=OUTPUT, dtype=bytes, shape=(1,))],
            config=ModelConfig(max_batch_size=args.max_batch_size, batcher=batcher),
            strict=False,
        )
        logger.info(
            "Triton serving %s on %s (max_batch_size %d, max_queue_delay %d us, %s, %d instances)",
            MODEL_NAME,
            args.http_port,
            args.max_batch_size,
            args.queue_delay_us,
            args.backend,
            args.instances,
        )
        triton.serve()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True, help="folder with uie/ and spo/")
    parser.add_argument("--backend", choices=ENGINES, required=True, help="onnx-int8: the INT8 file")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=0, help="0: any free port")
    parser.add_argument("--metrics-port", type=int, default=0, help="0: any free port")
    parser.add_argument("--threads", type=int, default=2, help="engine intra-op threads")
    parser.add_argument("--instances", type=int, default=1, help="model instances (infer functions)")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--queue-delay-us", type=int, default=4000)
    args = parser.parse_args(argv)
    # Triton's Python backend stub embeds this interpreter and must find its libpython; the
    # tritonserver binary needs the wheel's vendored libs, which PyTriton looks for only in a
    # site-packages layout it recognises (it takes a venv's lib folder for an editable install).
    import pytriton

    vendored = Path(pytriton.__file__).resolve().parent.parent / "nvidia_pytriton.libs"
    libdirs = [sysconfig.get_config_var("LIBDIR") or "", str(vendored), os.environ.get("LD_LIBRARY_PATH", "")]
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libdirs if p)
    from client.bench.local_server import free_port

    args.grpc_port = args.grpc_port or free_port()
    args.metrics_port = args.metrics_port or free_port()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
