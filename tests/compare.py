"""Structural equality of JSON-like results, floats compared with a tolerance."""

from __future__ import annotations

import math


def close(a, b, tol: float = 1e-4) -> bool:
    """Equal keys, lengths, strings and ints; floats within ``tol``."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, abs_tol=tol)
    return a == b
