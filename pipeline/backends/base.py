"""The engine interface every model op talks to."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from pipeline.model_card import ModelCard


class Backend(ABC):
    """One loaded model on one engine: ``load`` once, ``infer`` many times (thread-safe), ``close``.

    Feeds and fetches use the logical names of the model card (``input_ids``, ``start_prob``...).
    """

    name: str = "?"

    def __init__(self, threads: int = 2):
        self.threads = threads
        self.card: ModelCard | None = None

    @abstractmethod
    def load(self, model_dir: Path, card: ModelCard) -> None:
        """Load the model files of ``model_dir``; raise ModelLoadError naming a bad file."""

    @abstractmethod
    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; every output is float32 with the batch as its first dim."""

    def close(self) -> None:  # noqa: B027 - engines without resources keep this no-op
        """Release the engine."""
