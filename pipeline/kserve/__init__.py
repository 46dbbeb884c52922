"""KServe v2 (Open Inference Protocol) over HTTP, beside Paddle Serving's JSON route."""

from pipeline.kserve.server import KServeApp

__all__ = ["KServeApp"]
