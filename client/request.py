"""Builds the service's key/value request and reads its response (shared by both clients)."""

from __future__ import annotations

import json
import math
from typing import Any


class ServiceError(RuntimeError):
    """The service answered with a non-zero ``err_no`` for the whole request."""

    def __init__(self, err_no: int, err_msg: str, error_type: str | None = None):
        super().__init__(f"err_no={err_no} ({error_type or 'error'}): {err_msg}")
        self.err_no = err_no
        self.err_msg = err_msg
        self.error_type = error_type  # e.g. invalid_schema, limit_exceeded, nested_too_deeply


def build_request(
    task: str,
    texts: str | list[str],
    schema: Any = None,
    position_prob: float | None = None,
    model: str | None = None,
) -> dict[str, str]:
    """The request's key/value pairs; a list of texts travels as one JSON string. ``model`` names
    a served model (else the server gives the task's default)."""
    kv = {"task": task, "text": texts if isinstance(texts, str) else json.dumps(texts, ensure_ascii=False)}
    if model is not None:
        kv["model"] = model
    if schema is not None:
        kv["schema"] = schema if isinstance(schema, str) else json.dumps(schema, ensure_ascii=False)
    if position_prob is not None:
        kv["position_prob"] = str(position_prob)
    return kv


def parse_response(err_no: int, err_msg: str, keys: list[str], values: list[str]) -> list[dict]:
    """The per-text result list; raises ServiceError for a whole-request error."""
    data = dict(zip(keys, values, strict=True))
    if err_no != 0:
        raise ServiceError(err_no, err_msg, data.get("error_type"))
    return json.loads(data["result"])


def results_close(a: Any, b: Any, tol: float = 1e-4) -> bool:
    """Equal JSON-like results (keys, lengths, strings, ints), floats within ``tol``.

    Probabilities of the same text may differ in the last float digits between batches padded to
    different lengths; spans and texts must not.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(results_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(results_close(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, abs_tol=tol)
    return a == b
