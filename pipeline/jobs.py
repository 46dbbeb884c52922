"""A request in flight: its valid texts go to an engine job, its invalid ones keep their error."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from pipeline.errors import IEError, error_item
from pipeline.tokenizer import Encoded


class EngineJob(Protocol):
    """What the model op drives: rows per stage until none are left, then results per text.

    Each row's outputs are handed over as soon as its engine call returns (``row_done``, in any
    order), so a job keeps only what it needs of them and no stage holds every row's tensors."""

    def next_rows(self) -> list[Encoded]: ...

    def row_done(self, index: int, *outputs: np.ndarray) -> None: ...

    def stage_done(self) -> None: ...

    def result(self) -> list[dict]: ...


@dataclass
class RequestTrace:
    """What the log line and the metrics of one request need; filled stage by stage."""

    log_id: int
    task: str
    created: float
    model: str = ""
    texts: int = 0
    text_errors: int = 0
    rows: int = 0
    tokens: int = 0
    batch_requests: int = 0
    engine_calls: int = 0
    backend: str = ""
    queue_s: float | None = None
    model_s: float | None = None
    text: Any = None  # the request's texts, kept only with ie.log_requests_text


@dataclass
class RequestJob:
    """One request: ``slots[i]`` is the engine index of text ``i``, or that text's error.

    ``model`` is the served model's name; ``handle`` the loaded model it was prepared against (a
    swap does not move a request in flight); ``done`` is set once its model ran it."""

    task: str
    engine: EngineJob | None
    slots: list[int | IEError]
    log_id: int = 0
    failure: IEError | None = None
    created: float = field(default_factory=time.perf_counter)
    trace: RequestTrace | None = None  # per-request figures for logs and metrics
    model: str = ""
    handle: Any = field(default=None, repr=False, compare=False)
    done: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.model = self.model or self.task
        if self.trace is None:
            errors = sum(isinstance(s, BaseException) for s in self.slots)
            self.trace = RequestTrace(
                self.log_id, self.task, self.created, texts=len(self.slots), text_errors=errors
            )
        self.trace.model = self.model

    def __getstate__(self) -> dict[str, Any]:
        """Pickled between op processes (process ops): without the handle and the event."""
        state = dict(self.__dict__)
        state["handle"] = None
        state["done"] = self.done.is_set()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        done = threading.Event()
        if state.pop("done"):
            done.set()
        self.__dict__.update(state, done=done)

    def results(self) -> list[dict[str, Any]]:
        """Per input text, its result or its error object, in request order."""
        engine_results = self.engine.result() if self.engine is not None else []
        out: list[dict[str, Any]] = []
        for slot in self.slots:
            out.append(error_item(slot) if isinstance(slot, BaseException) else engine_results[slot])
        return out


def job_array(job: RequestJob) -> np.ndarray:
    """Wrap a job in a one-element object array, the unit the pipeline's auto-batching merges."""
    arr = np.empty(1, dtype=object)
    arr[0] = job
    return arr
