"""Read a serving model's ``serving_server_conf.prototxt`` (Paddle Serving's GeneralModelConfig)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from pipeline.errors import ModelLoadError

CONF_NAME = "serving_server_conf.prototxt"


@dataclass(frozen=True)
class ServingVars:
    """Alias (logical) name -> variable name inside the Paddle model, for feeds and fetches."""

    feeds: dict[str, str]
    fetches: dict[str, str]


def read_serving_conf(serving_server_dir: str | Path) -> ServingVars:
    """Parse ``serving_server_conf.prototxt`` in ``serving_server_dir``."""
    from pipeline.paddle_serving.compat import general_model_config_pb2

    path = Path(serving_server_dir) / CONF_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ModelLoadError(f"cannot read {path}: {e.strerror or e}") from e
    conf = general_model_config_pb2.GeneralModelConfig()
    try:
        text_format.Parse(text, conf)
    except text_format.ParseError as e:
        raise ModelLoadError(f"{path} is not a valid GeneralModelConfig: {e}") from e
    feeds = {v.alias_name or v.name: v.name for v in conf.feed_var}
    fetches = {v.alias_name or v.name: v.name for v in conf.fetch_var}
    if not feeds or not fetches:
        raise ModelLoadError(f"{path} lists no feed_var or no fetch_var")
    return ServingVars(feeds=feeds, fetches=fetches)
