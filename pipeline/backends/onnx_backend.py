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
    """``serving_model/<name>/model.onnx`` (or its INT8 file) on the CPU execution provider."""

    name = "onnx"

    def __init__(self, threads: int = 2, precision: str = "fp32", spin_wait: bool = True):
        super().__init__(threads)
        self.precision = precision
        self.spin_wait = spin_wait

    def load(self, model_dir: Path, card: ModelCard) -> None:
        import onnxruntime as ort

        path = card.onnx_path(model_dir, self.precision)
        if not path.is_file():
            raise ModelLoadError(f"missing ONNX model file {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The intra-op threads spin between the parallel parts of a call (without it each part
        # waits for its threads to wake: about 1.2 ms more per nano call). ``spin_wait`` keeps them
        # spinning after a call too, waiting for the next one: the fastest back-to-back calls,
        # but CPU taken from the serving threads between calls; off, they stop when a call ends.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
        opts.add_session_config_entry("session.force_spinning_stop", "0" if self.spin_wait else "1")
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
        self._seq_axes = {
            n: {a for a, kind in card.output_axes.get(n, {}).items() if kind == "seq"} for n in self._outputs
        }
        if self.precision == "int8" and not all(self._seq_axes.values()):
            raise ModelLoadError(f"{model_dir}/model_card.json lacks output_axes: rebuild it with the bridge")
        self.card = card
        logger.info(
            "onnxruntime %s loaded %s (%s, %d threads, spin wait after calls %s)",
            ort.__version__,
            path,
            self.precision,
            self.threads,
            "on" if self.spin_wait else "off",
        )

    def session_option(self, key: str) -> str:
        """A session config entry as ONNX Runtime holds it (e.g. ``session.intra_op.allow_spinning``)."""
        return self._session.get_session_options().get_session_config_entry(key)

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.precision == "int8":
            return self._infer_rows(feed)
        return self._run(feed)

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            out = self._session.run(self._outputs, {n: feed[n] for n in self._inputs})
        except Exception as e:
            raise InferenceError(f"onnxruntime failed: {e}") from e
        return dict(zip(self._outputs, out, strict=True))

    def _infer_rows(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One engine call per row at its own length: dynamic quantization scales activations
        over the whole call, so a batched row's answer would depend on the rows beside it and on
        padding. Positions past a row's length hold that row's smallest value, as masking gives."""
        lengths = feed["attention_mask"].sum(axis=1).astype(int)
        batch, seq = feed["attention_mask"].shape
        merged: dict[str, np.ndarray] = {}
        for i, length in enumerate(lengths):
            out = self._run({n: feed[n][i : i + 1, :length] for n in self._inputs})
            for name, value in out.items():
                if name not in merged:
                    seq_axes = self._seq_axes[name]
                    shape = [seq if axis in seq_axes else d for axis, d in enumerate(value.shape)]
                    merged[name] = np.empty([batch, *shape[1:]], dtype=value.dtype)
                row = merged[name][i]
                row.fill(value.min())
                row[tuple(slice(0, d) for d in value.shape[1:])] = value[0]
        return merged

    def close(self) -> None:
        self._session = None
