"""The models a server holds now, by name: each with its engine, lane and reference count.

A request takes its model from the registry when it is prepared (:meth:`ModelRegistry.acquire`)
and keeps that model until its lane ran it, so swapping a model for a new version, or unloading
it, never moves or drops a request in flight: the old model's engine closes once its last
request ran.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.backends import Backend, engine_label
from pipeline.errors import UnknownModel
from pipeline.job_factory import resolve_model
from pipeline.lanes import ModelLane
from pipeline.models import ServedModel, default_models

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """One served model of this process; ``engine`` and ``lane`` once started."""

    served: ServedModel
    engine_kind: str
    engine: Backend | None = None
    lane: ModelLane | None = None
    rss_bytes: int = 0  # resident memory the engine's load added
    pid: int | None = None
    _refs: int = 0
    _retired: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return self.served.name

    @property
    def engine_label(self) -> str:
        """Engine and precision as logs and metrics show them (``onnx``, ``onnx-int8``)."""
        return engine_label(self.engine_kind, self.served.settings.precision)

    def acquire(self) -> None:
        with self._lock:
            self._refs += 1

    def release(self) -> None:
        """One request done with this model; a retired model closes after its last."""
        with self._lock:
            self._refs -= 1
            last = self._retired and self._refs <= 0
        if last:
            self._close()

    def retire(self) -> None:
        """No new requests; close once the ones holding it ran."""
        with self._lock:
            self._retired = True
            last = self._refs <= 0
        if last:
            self._close()

    def _close(self) -> None:
        if self.engine is not None:
            logger.info("model %s (version %s): engine closed", self.name, self.served.version)
        self.stop_engine()

    def stop_engine(self) -> None:
        """Stop the lane (after what it holds) and release the engine of this process."""
        if self.lane is not None:
            self.lane.stop()
        if self.engine is not None:
            self.engine.close()
        self.engine, self.lane, self.pid = None, None, None


class ModelRegistry:
    """Name -> :class:`LoadedModel`, thread-safe; defaults per task follow what is loaded."""

    def __init__(self, models: dict[str, LoadedModel] | None = None):
        self._models: dict[str, LoadedModel] = dict(models or {})
        self._lock = threading.Lock()
        self._defaults = default_models(m.served for m in self._models.values())

    def defaults(self) -> dict[str, str]:
        """Task -> the name a request without ``model`` gets."""
        with self._lock:
            return dict(self._defaults)

    def _update_defaults(self, task: str, added: LoadedModel | None = None) -> None:
        """Keep a task's default while it is served; a loaded ``default: true`` model takes it."""
        current = self._defaults.get(task)
        if added is not None and (added.served.settings.default or current is None):
            self._defaults[task] = added.name
        elif current not in self._models:
            self._defaults.pop(task, None)
            left = [m.served for m in self._models.values() if m.served.task == task]
            self._defaults.update(default_models(left))

    def snapshot(self) -> dict[str, LoadedModel]:
        with self._lock:
            return dict(self._models)

    def served(self) -> dict[str, ServedModel]:
        return {name: m.served for name, m in self.snapshot().items()}

    def get(self, name: str) -> LoadedModel:
        with self._lock:
            model = self._models.get(name)
            if model is None:
                raise UnknownModel(f"unknown model {name!r}; served models: {sorted(self._models)}")
            return model

    def acquire(self, kv: dict[str, Any]) -> LoadedModel:
        """The model request ``kv`` names (or its task's default), held for the request."""
        with self._lock:
            served = {name: m.served for name, m in self._models.items()}
            model = self._models[resolve_model(kv, served, self._defaults).name]
            model.acquire()
            return model

    def acquire_name(self, name: str) -> LoadedModel:
        with self._lock:
            model = self._models.get(name)
            if model is None:
                raise UnknownModel(f"model {name!r} was unloaded; served models: {sorted(self._models)}")
            model.acquire()
            return model

    def put(self, model: LoadedModel) -> LoadedModel | None:
        """Serve ``model`` under its name; the model it replaces (retired), if any."""
        with self._lock:
            old = self._models.get(model.name)
            self._models[model.name] = model
            if old is not None and old.served.task != model.served.task:
                self._update_defaults(old.served.task)
            self._update_defaults(model.served.task, model)
        if old is not None:
            old.retire()
        return old

    def remove(self, name: str) -> LoadedModel:
        """Stop serving ``name`` (retired: requests holding it still run)."""
        with self._lock:
            model = self._models.pop(name, None)
            if model is None:
                raise UnknownModel(f"model {name!r} is not loaded; served models: {sorted(self._models)}")
            self._update_defaults(model.served.task)
        model.retire()
        return model

    def each(self, fn: Callable[[LoadedModel], None]) -> None:
        for model in self.snapshot().values():
            fn(model)
