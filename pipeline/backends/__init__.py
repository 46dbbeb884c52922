"""Engines behind one interface; :func:`create_backend` turns the config's choice into one."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from pipeline.backends.base import Backend
from pipeline.errors import ConfigError
from pipeline.model_card import ModelCard

logger = logging.getLogger(__name__)

__all__ = ["Backend", "create_backend", "engine_label", "paddle_available", "resolve_backend"]


def engine_label(kind: str, precision: str) -> str:
    """How logs, metrics and the benchmark name an engine: ``onnx``, ``paddle``, ``onnx-int8``."""
    return kind if precision == "fp32" else f"{kind}-{precision}"


def paddle_available() -> bool:
    """Whether the ``paddle`` package is installed (without importing it)."""
    return importlib.util.find_spec("paddle") is not None


def resolve_backend(kind: str) -> str:
    """``auto`` -> ``paddle`` where Paddle is installed, else ``onnx``; others are checked."""
    if kind == "auto":
        chosen = "paddle" if paddle_available() else "onnx"
        logger.info("backend auto: using %s (paddle installed: %s)", chosen, paddle_available())
        return chosen
    if kind == "paddle" and not paddle_available():
        raise ConfigError("ie.backend is 'paddle' but paddlepaddle is not installed; use 'onnx' or 'auto'")
    if kind not in ("paddle", "onnx"):
        raise ConfigError(f"unknown backend {kind!r}; use paddle, onnx or auto")
    return kind


def create_backend(
    kind: str,
    model_dir: Path,
    card: ModelCard,
    threads: int = 2,
    use_onednn: bool = False,
    precision: str = "fp32",
    spin_wait: bool = True,
) -> Backend:
    """Create and load the backend ``kind`` (already resolved: ``paddle`` or ``onnx``) at
    ``precision`` (``int8``: ONNX Runtime only; Paddle serves the FP32 model). ``spin_wait``:
    ONNX Runtime's intra-op threads keep spinning after a call, waiting for the next (its
    default); they spin within a call either way."""
    if precision not in ("fp32", "int8"):
        raise ConfigError(f"unknown precision {precision!r}; use fp32 or int8")
    if kind == "paddle" and precision != "fp32":
        raise ConfigError("the paddle backend serves FP32 only; serve INT8 with backend onnx")
    if kind == "paddle":
        from pipeline.backends.paddle_backend import PaddleBackend

        backend: Backend = PaddleBackend(threads=threads, use_onednn=use_onednn)
    elif kind == "onnx":
        from pipeline.backends.onnx_backend import OnnxBackend

        backend = OnnxBackend(threads=threads, precision=precision, spin_wait=spin_wait)
    else:
        raise ConfigError(f"unknown backend {kind!r}")
    backend.load(model_dir, card)
    return backend
