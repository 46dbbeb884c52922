"""Model control on a running server: load, swap and unload models by name, without a restart.

Triton's model repository extension (``/v2/repository/...``) over :class:`IEService`. A load
reads the model's configured dir (``ie.models.<name>``) or a new dir the operator names, which
must hold a model the bridge checked: ``model_card.json`` and, in the dir's parent, a
``parity.json`` whose rows for the dir pass. The new model loads beside the served one, answers
its warm-up request through the service core, and only then takes the name: requests in flight
finish on the model they were prepared with. A failed load leaves the old model serving and says
why. Nothing of a request is imported, unpickled or evaluated; the dir is only read as the
bridge's files. Model control is for trusted operators (``ie.model_control``, off by default).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import MODEL_NAME, MODEL_NAME_RULE, ModelSettings
from pipeline.errors import IEError, ModelControlError, UnknownModel
from pipeline.health import warmup_request
from pipeline.metrics import forget_model
from pipeline.model_card import CARD_NAME
from pipeline.models import load_served_model
from pipeline.registry import LoadedModel
from pipeline.service import IEService

logger = logging.getLogger(__name__)

PARITY_FILE = "parity.json"
WARMUP_TIMEOUT_S = 60.0


def checked_model_dir(raw: Any, base: Path) -> Path:
    """The model dir an operator named (relative to ``base``), once it proves to be a model the
    bridge built and checked; ModelControlError says what is missing."""
    if not isinstance(raw, str) or not raw.strip() or "\x00" in raw:
        raise ModelControlError("'dir' must be a non-empty string: a model dir written by the bridge")
    path = (base / raw).resolve()
    if not path.is_dir():
        raise ModelControlError(f"model dir {raw} does not exist on the server")
    if not (path / CARD_NAME).is_file():
        raise ModelControlError(f"model dir {raw} has no {CARD_NAME}: build it with the bridge")
    parity = path.parent / PARITY_FILE
    try:
        hops = json.loads(parity.read_text(encoding="utf-8")).get("hops", [])
    except (OSError, ValueError, AttributeError) as e:
        raise ModelControlError(
            f"model dir {raw}: no readable {PARITY_FILE} beside it (the bridge's checks)"
        ) from e
    rows = [r for r in hops if isinstance(r, dict) and r.get("model") == path.name]
    if not rows:
        raise ModelControlError(f"model dir {raw}: {PARITY_FILE} has no checks of model {path.name!r}")
    failed = [f"{r.get('from')} -> {r.get('to')}" for r in rows if r.get("passed") is not True]
    if failed:
        raise ModelControlError(f"model dir {raw}: the bridge's checks did not pass ({', '.join(failed)})")
    return path


@dataclass(frozen=True)
class IndexEntry:
    """One row of the repository index (Triton's shape)."""

    name: str
    version: str
    state: str
    reason: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "state": self.state, "reason": self.reason}


class ModelControl:
    """Load / unload by name on ``service``; ``base`` resolves relative dirs (the config's folder).

    ``on_loaded`` / ``on_unloaded`` get the name once a model is served / no longer served."""

    def __init__(
        self,
        service: IEService,
        base: Path,
        on_loaded: Callable[[str], None] | None = None,
        on_unloaded: Callable[[str], None] | None = None,
    ):
        self.service = service
        self.base = base
        self._on_loaded = on_loaded
        self._on_unloaded = on_unloaded
        self._lock = threading.Lock()  # one load or unload at a time
        self._configured: dict[str, ModelSettings] = dict(service.settings.models)
        self._known: dict[str, ModelSettings] = dict(self._configured)  # + names loaded from a dir
        self._reasons: dict[str, str] = {}

    def index(self) -> list[dict[str, str]]:
        """Every model known here: the served ones READY, the configured or unloaded ones
        UNAVAILABLE (with why)."""
        served = self.service.registry.snapshot()
        rows = []
        for name in sorted(set(self._known) | set(served)):
            if name in served:
                rows.append(IndexEntry(name, served[name].served.version, "READY"))
            else:
                rows.append(IndexEntry(name, "", "UNAVAILABLE", self._reasons.get(name, "unloaded")))
        return [r.as_dict() for r in rows]

    def load(self, name: str, raw_dir: Any = None) -> LoadedModel:
        """Serve ``name`` from its configured dir (``ie.models``; a name first loaded from a dir:
        that dir), or from ``raw_dir`` (checked); a served model of that name is swapped for the
        new one once the new one answered its warm-up."""
        with self._lock:
            settings = self._settings_for(name, raw_dir)
            model = self._start(name, settings)
            old = self.service.registry.put(model)
            if name not in self._configured:  # a load without a dir reads a configured model's own
                self._known[name] = settings
            self._reasons.pop(name, None)
        self.service.metrics.model_loads.labels(name, "load", "ok").inc()
        logger.info(
            "model control: %s version %s from %s now serving%s",
            name,
            model.served.version,
            settings.dir,
            f" (replaced version {old.served.version})" if old is not None else "",
        )
        if self._on_loaded is not None:
            self._on_loaded(name)
        return model

    def unload(self, name: str) -> None:
        """Stop serving ``name``; its requests in flight still finish."""
        with self._lock:
            try:
                self.service.registry.remove(name)
            except UnknownModel:
                self.service.metrics.model_loads.labels(
                    name if name in self._known else "unknown", "unload", "refused"
                ).inc()
                raise
            self._reasons[name] = "unloaded"
        forget_model(name, self.service.metrics)
        self.service.metrics.model_loads.labels(name, "unload", "ok").inc()
        logger.info("model control: %s unloaded", name)
        if self._on_unloaded is not None:
            self._on_unloaded(name)

    def _settings_for(self, name: str, raw_dir: Any) -> ModelSettings:
        if not MODEL_NAME.match(name):
            raise ModelControlError(f"model name {name!r} is not allowed: use {MODEL_NAME_RULE}")
        known = self._known.get(name)
        if raw_dir is None:
            if known is None:
                raise UnknownModel(
                    f"model {name!r} is not configured; give its 'dir', or load one of {sorted(self._known)}"
                )
            return known
        path = checked_model_dir(raw_dir, self.base)
        return (known or ModelSettings(dir=path)).model_copy(update={"dir": path, "task": None})

    def _start(self, name: str, settings: ModelSettings) -> LoadedModel:
        """The new model loaded and warmed up, not yet served; ModelControlError if it fails.

        The card's and the vocab's errors are ours and say what is wrong; an engine's own error
        text (ONNX Runtime, Paddle) goes to the log only."""
        model = None
        try:
            served = load_served_model(name, settings, self.service.settings)
            model = self.service.loaded_model(served)
            try:
                self.service.start_model(model)
            except Exception as e:
                logger.error("model control: the engine of %s could not load %s: %s", name, settings.dir, e)
                raise ModelControlError(
                    "its engine could not load the model files (see the server log)"
                ) from e
            self._warm_up(model)
        except IEError as e:
            self._failed(name, model, e.message)
            raise ModelControlError(
                f"cannot load model {name!r}: {e.message}; the served one keeps serving"
            ) from e
        except Exception as e:
            logger.exception("model control: loading %s failed", name)
            self._failed(name, model, None)
            raise ModelControlError(
                f"cannot load model {name!r} (see the server log); the served one keeps serving"
            ) from e
        return model

    def _warm_up(self, model: LoadedModel) -> None:
        kv = warmup_request(model.name, model.served.card)
        job = self.service.prepare_for(model, kv)
        self.service.submit([job])
        answer = json.loads(self.service.finish(job, WARMUP_TIMEOUT_S))
        errors = [item["error"]["message"] for item in answer if "error" in item]
        if errors:
            raise ModelControlError(f"its warm-up request failed: {errors[0]}")

    def _failed(self, name: str, model: LoadedModel | None, reason: str | None) -> None:
        self.service.metrics.model_loads.labels(
            name if name in self._known else "unknown", "load", "failed"
        ).inc()
        if model is not None:
            model.retire()
        if name not in self.service.registry.snapshot():
            self._reasons[name] = reason or "load failed"
