"""KServe v2 (Open Inference Protocol) over HTTP, beside Paddle Serving's JSON route."""

from pipeline.kserve.server import KServeServer

__all__ = ["KServeServer"]
