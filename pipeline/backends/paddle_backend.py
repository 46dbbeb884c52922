"""Paddle Inference backend over ``serving_model/<name>/serving_server`` (PIR json or pdmodel)."""

from __future__ import annotations

import logging
import queue
from pathlib import Path

import numpy as np

from pipeline.backends.base import Backend
from pipeline.errors import InferenceError, ModelLoadError
from pipeline.model_card import ModelCard
from pipeline.serving_conf import read_serving_conf

logger = logging.getLogger(__name__)


def model_files(model_dir: Path, card: ModelCard) -> tuple[Path, Path]:
    """The (program, params) files the card names (``paddle_files``); cards written before the
    bridge recorded them are searched for the files."""
    if card.paddle_files is None:
        return find_model_files(model_dir / card.serving_server)
    program, params = model_dir / card.paddle_files.model, model_dir / card.paddle_files.params
    for path in (program, params):
        if not path.is_file():
            raise ModelLoadError(f"missing Paddle model file {path} (model_card.json paddle_files)")
    return program, params


def find_model_files(serving_dir: Path) -> tuple[Path, Path]:
    """The (program, params) files of a Paddle inference model: PIR ``*.json`` or ``*.pdmodel``."""
    for pattern in ("*.json", "*.pdmodel", "__model__"):
        for program in sorted(serving_dir.glob(pattern)):
            params = program.with_suffix(".pdiparams")
            if pattern == "__model__":
                params = serving_dir / "__params__"
            if params.is_file():
                return program, params
            raise ModelLoadError(f"{program} has no parameters file {params}")
    raise ModelLoadError(f"no Paddle model (*.json / *.pdmodel + *.pdiparams) in {serving_dir}")


class PaddleBackend(Backend):
    """Paddle Inference on the CPU (oneDNN opt-in).

    A predictor runs one call at a time: concurrent calls take idle predictors from a pool, cloned
    (weights shared) when none is idle, so a server with a thread per request clones only as often
    as its concurrency grows.
    """

    name = "paddle"

    def __init__(self, threads: int = 2, use_onednn: bool = False):
        super().__init__(threads)
        self.use_onednn = use_onednn
        self._root = None
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self.predictors = 0  # predictors made so far (the loaded one and its clones)

    def load(self, model_dir: Path, card: ModelCard) -> None:
        import paddle.inference as pi

        serving_dir = Path(model_dir) / card.serving_server
        names = read_serving_conf(serving_dir)
        missing = [n for n in card.inputs if n not in names.feeds]
        missing += [n for n in card.outputs if n not in names.fetches]
        if missing:
            raise ModelLoadError(f"{serving_dir}/serving_server_conf.prototxt lacks {missing}")
        program, params = model_files(Path(model_dir), card)
        config = pi.Config(str(program), str(params))
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(self.threads)
        config.switch_ir_optim(True)
        config.disable_glog_info()
        onednn = self.use_onednn and self._onednn_verified(card)
        if onednn:
            config.enable_mkldnn()
            config.set_mkldnn_cache_capacity(16)
        else:
            # Paddle 3 turns oneDNN on for CPU by itself; it is slow for small models (broadcast
            # elementwise ops) and gave wrong values on some X2Paddle graphs, so it is opt-in.
            config.disable_mkldnn()
        try:
            self._root = pi.create_predictor(config)
        except Exception as e:
            raise ModelLoadError(f"Paddle Inference cannot load {program}: {e}") from e
        self._feeds = {n: names.feeds[n] for n in card.inputs}
        self._fetches = {n: names.fetches[n] for n in card.outputs}
        self._idle.put(self._root)
        self.predictors = 1
        self.card = card
        logger.info(
            "paddle %s loaded %s (%d threads, oneDNN %s)",
            pi.get_version().split()[1] if " " in pi.get_version() else pi.get_version(),
            program,
            self.threads,
            "on" if onednn else "off",
        )

    @staticmethod
    def _onednn_verified(card: ModelCard) -> bool:
        """oneDNN only where the bridge checked it against the reference (``paddle_onednn.ok``)."""
        check = card.paddle_onednn
        if check is None:
            logger.warning("oneDNN off for %s: the bridge did not check it (no paddle_onednn)", card.name)
            return False
        if not check.ok:
            logger.warning("oneDNN off for %s: the bridge found it differs (%s)", card.name, check)
        return check.ok

    def _acquire(self):
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            if self._root is None:
                raise InferenceError("the paddle backend is closed") from None
            self.predictors += 1
            return self._root.clone()

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pred = self._acquire()
        try:
            for logical, var in self._feeds.items():
                pred.get_input_handle(var).copy_from_cpu(np.ascontiguousarray(feed[logical]))
            pred.run()
            return {
                logical: pred.get_output_handle(var).copy_to_cpu() for logical, var in self._fetches.items()
            }
        except Exception as e:
            raise InferenceError(f"paddle inference failed: {e}") from e
        finally:
            self._idle.put(pred)

    def close(self) -> None:
        self._root = None
        self._idle = queue.SimpleQueue()
