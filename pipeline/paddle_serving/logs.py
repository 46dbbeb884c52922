"""Paddle Serving's own per-request log lines, dropped (``ie.serving_request_logs: false``).

Paddle Serving logs about seven lines per request into PipelineServingLogs/; the service logs one
line per request instead. Its start-up, warning and error lines stay. The framework offers no
switch for these, so they are recognised by their text. Its modules format every line before
calling their logger, so the text is known at the call: :class:`_QuietServingLogger` stands in
for each module's logger and drops a per-request line there, before the logging machinery builds
a record for it (a filter on the logger ran only after that: 4.7-6.3 us a line against 0.8-0.9 us,
and 3% of the GIL's samples at concurrency 8, demo UIE; docs/benchmark.md).
"""

from __future__ import annotations

import logging
from typing import Any

_SERVING_REQUEST_LINES = (
    "inference request name:",
    "RequestOp unpack one request",
    "Succ Generate ID",
    "skip process stage",
    "prometheus inf count",
    "Auto-batching is On",
    "Succ predict",
)
_SERVING_MODULES = ("pipeline_server", "operator", "dag")


def is_serving_request_line(msg: object) -> bool:
    """Whether ``msg`` is one of Paddle Serving's per-request lines."""
    return isinstance(msg, str) and any(marker in msg for marker in _SERVING_REQUEST_LINES)


class _QuietServingLogger:
    """A Paddle Serving module's logger minus its per-request ``info`` and ``warning`` lines;
    every other call goes to the logger itself (records name the framework's call site)."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self.debug = logger.debug
        self.error = logger.error
        self.critical = logger.critical
        self.exception = logger.exception

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._unless_request_line(logging.INFO, msg, args, kwargs)

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._unless_request_line(logging.WARNING, msg, args, kwargs)

    def _unless_request_line(self, level: int, msg: object, args: tuple, kwargs: dict) -> None:
        if not is_serving_request_line(msg):
            # +2: the record names the framework's line, not info/warning or this method
            kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 2
            self.logger.log(level, msg, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.logger, name)


def quiet_serving_request_logs() -> None:
    """Put :class:`_QuietServingLogger` in place of the loggers of Paddle Serving's pipeline
    modules that log per request (once; a second call changes nothing)."""
    import importlib

    import pipeline.paddle_serving.compat  # noqa: F401  (makes the framework importable)

    for name in _SERVING_MODULES:
        module = importlib.import_module(f"paddle_serving_server.pipeline.{name}")
        if not isinstance(module._LOGGER, _QuietServingLogger):
            module._LOGGER = _QuietServingLogger(module._LOGGER)
