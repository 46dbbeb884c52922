"""Paddle Serving's own per-request log lines, dropped (``ie.serving_request_logs: false``).

Paddle Serving logs about seven lines per request into PipelineServingLogs/; the service logs one
line per request instead. Its start-up, warning and error lines stay. The framework offers no
switch for these, so they are recognised by their text.
"""

from __future__ import annotations

import logging

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
