"""Readiness: a model is ready once a real request for its task went through the whole pipeline.

The KServe app starts a :class:`WarmUp` thread once the pipeline runs (after every fork the
server makes). It sends one small request per served task through the pipeline (tokenize ->
model -> decode, the path clients use) until each answers with ``err_no`` 0, and marks that model
ready. ``/v2/health/ready`` is true when every served model is; ``/v2/health/live`` only needs
the process to answer HTTP.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from pipeline.model_card import ModelCard

logger = logging.getLogger(__name__)

WARMUP_TEXT = "张伟出生于杭州。"


class Readiness:
    """Thread-safe ready flags, one per served model."""

    def __init__(self, models: Iterable[str]):
        self._flags = dict.fromkeys(models, False)
        self._lock = threading.Lock()

    def forget(self, model: str) -> None:
        """An unloaded model: no longer served, so not waited for."""
        with self._lock:
            self._flags.pop(model, None)

    @property
    def models(self) -> list[str]:
        return list(self._flags)

    def mark_ready(self, model: str) -> None:
        with self._lock:
            self._flags[model] = True

    def mark_all_not_ready(self) -> None:
        """On shutdown: report not ready so that load balancers stop sending requests."""
        with self._lock:
            self._flags = dict.fromkeys(self._flags, False)

    def model_ready(self, model: str) -> bool:
        with self._lock:
            return self._flags.get(model, False)

    def ready(self) -> bool:
        with self._lock:
            return bool(self._flags) and all(self._flags.values())


def warmup_request(name: str, card: ModelCard) -> dict[str, str]:
    """A small valid request for model ``name`` (the UIE schema is the card's example or first
    type)."""
    kv = {"task": card.task, "model": name, "text": WARMUP_TEXT}
    if card.task == "uie":
        schema = card.example_schema
        kv["schema"] = schema if isinstance(schema, str) else json.dumps(schema, ensure_ascii=False)
    return kv


class WarmUp:
    """Sends each model's warm-up request through ``forward`` (key/value pairs -> answer dict)
    until it succeeds; then the model is ready."""

    def __init__(
        self,
        forward: Callable[[dict[str, str]], dict[str, Any]],
        cards: dict[str, ModelCard],
        readiness: Readiness,
        interval_s: float = 0.5,
        on_ready: Callable[[str], None] | None = None,
    ):
        self._forward = forward
        self._cards = cards
        self._readiness = readiness
        self._interval = interval_s
        self._on_ready = on_ready
        self._stop = threading.Event()
        self._warned: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="warm-up", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _try(self, task: str) -> bool:
        kv = warmup_request(task, self._cards[task])
        try:
            answer = self._forward(kv)
        except Exception as e:  # the DAG is still loading
            logger.debug("warm-up %s: %s", task, e)
            return False
        if int(answer.get("err_no", 0)) != 0:
            level = logging.DEBUG if task in self._warned else logging.WARNING
            self._warned.add(task)
            logger.log(level, "warm-up %s: err_no=%s %s", task, answer.get("err_no"), answer.get("err_msg"))
            return False
        return True

    def _run(self) -> None:
        pending = [m for m in self._readiness.models if not self._readiness.model_ready(m)]
        while pending and not self._stop.is_set():
            pending = [m for m in pending if m in self._readiness.models]  # not waited for once unloaded
            for task in list(pending):
                if self._readiness.model_ready(task) or self._try(task):
                    self._readiness.mark_ready(task)
                    if self._on_ready is not None:
                        self._on_ready(task)
                    logger.info("model %s ready (warm-up request answered)", task)
                    pending.remove(task)
            if pending:
                self._stop.wait(self._interval)
        if not pending:
            logger.info("all models ready")
