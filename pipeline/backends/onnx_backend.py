"""ONNX Runtime backend: the fallback that runs wherever Paddle has no wheels (arm hosts)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.backends.base import Backend
from pipeline.errors import InferenceError, ModelLoadError
from pipeline.model_card import ModelCard

logger = logging.getLogger(__name__)


class OnnxBackend(Backend):
    """``serving_model/<name>/model.onnx`` on the CPU execution provider."""

    name = "onnx"

    def load(self, model_dir: Path, card: ModelCard) -> None:
        import onnxruntime as ort

        path = Path(model_dir) / card.onnx_file
        if not path.is_file():
            raise ModelLoadError(f"missing ONNX model file {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # ORT raises its own Fail/InvalidGraph types
            raise ModelLoadError(f"cannot load ONNX model {path}: {e}") from e
        names = {i.name for i in self._session.get_inputs()}
        missing = [n for n in card.inputs if n not in names]
        if missing:
            raise ModelLoadError(f"{path} lacks inputs {missing} (has {sorted(names)})")
        self._inputs = [n for n in card.inputs if n in names]
        self._outputs = list(card.outputs)
        self.card = card
        logger.info("onnxruntime %s loaded %s (%d threads)", ort.__version__, path, self.threads)

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            out = self._session.run(self._outputs, {n: feed[n] for n in self._inputs})
        except Exception as e:
            raise InferenceError(f"onnxruntime failed: {e}") from e
        return dict(zip(self._outputs, out, strict=True))

    def close(self) -> None:
        self._session = None
