"""Logging for this project's entry points (``web_service.py``, ``python -m conversion.bridge``).

Importing Paddle Serving's pipeline sends the root logger to files only and disables every logger
created before it; an entry point that imports it (at start-up, or later, as the bridge's served
check does) calls :func:`configure_logging` so that this project's loggers still reach stderr.
"""

from __future__ import annotations

import logging

OWN_LOGGERS = ("web_service", "ops", "pipeline", "client", "conversion")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str = "INFO") -> None:
    """This project's loggers to stderr at ``level`` (re-enabled if Paddle Serving disabled them),
    and only there: not also through the root logger into Paddle Serving's rotating
    ``PipelineServingLogs/pipeline.log``, which wrote every request line a second time and checked
    the file for rollover on each (8.5% of the service's samples at concurrency 8, demo UIE)."""
    for name, existing in list(logging.root.manager.loggerDict.items()):
        if isinstance(existing, logging.Logger) and name.split(".")[0] in OWN_LOGGERS:
            existing.disabled = False
    for name in OWN_LOGGERS:
        own = logging.getLogger(name)
        own.setLevel(level)
        own.propagate = False
        if not own.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
            own.addHandler(handler)
    logging.getLogger().setLevel(level)
