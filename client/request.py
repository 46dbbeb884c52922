"""Builds the service's key/value request and reads its response (shared by both clients)."""

from __future__ import annotations

import json
from typing import Any


class ServiceError(RuntimeError):
    """The service answered with a non-zero ``err_no`` for the whole request."""

    def __init__(self, err_no: int, err_msg: str):
        super().__init__(f"err_no={err_no}: {err_msg}")
        self.err_no = err_no
        self.err_msg = err_msg


def build_request(
    task: str, texts: str | list[str], schema: Any = None, position_prob: float | None = None
) -> dict[str, str]:
    """The request's key/value pairs; a list of texts travels as one JSON string."""
    kv = {"task": task, "text": texts if isinstance(texts, str) else json.dumps(texts, ensure_ascii=False)}
    if schema is not None:
        kv["schema"] = schema if isinstance(schema, str) else json.dumps(schema, ensure_ascii=False)
    if position_prob is not None:
        kv["position_prob"] = str(position_prob)
    return kv


def parse_response(err_no: int, err_msg: str, keys: list[str], values: list[str]) -> list[dict]:
    """The per-text result list; raises ServiceError for a whole-request error."""
    if err_no != 0:
        raise ServiceError(err_no, err_msg)
    data = dict(zip(keys, values, strict=True))
    return json.loads(data["result"])
