"""A request in flight: its valid texts go to an engine job, its invalid ones keep their error."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from pipeline.errors import IEError, error_item
from pipeline.tokenizer import Encoded

if TYPE_CHECKING:
    from pipeline.metrics import RequestTrace


class EngineJob(Protocol):
    """What the model op drives: rows per stage until none are left, then results per text."""

    def next_rows(self) -> list[Encoded]: ...

    def consume(self, *outputs: list[np.ndarray]) -> None: ...

    def result(self) -> list[dict]: ...


@dataclass
class RequestJob:
    """One request: ``slots[i]`` is the engine index of text ``i``, or that text's error."""

    task: str
    engine: EngineJob | None
    slots: list[int | IEError]
    log_id: int = 0
    failure: IEError | None = None
    created: float = field(default_factory=time.perf_counter)
    trace: RequestTrace | None = None  # per-request figures for logs and metrics

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
