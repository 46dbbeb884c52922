"""SPO hops: PyTorch -> ONNX (opset 13) -> Paddle inference model (X2Paddle) -> serving model.

What is converted is the sparse model (:class:`SparseSPOModel`: entity logits and the encoder
states); the relation heads' weights go to ``relation_heads.npz`` beside it. Each hop is handed
to a ``checker(hop_from, hop_to, engine_a, engine_b)`` right after it is produced. The ONNX file
is kept as ``model.onnx`` for the ONNX Runtime fallback.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from conversion.errors import ConversionError
from conversion.parity import Engine, Feeds, HopResult, onnx_engine
from conversion.serving_export import (
    find_model_files,
    inference_model_to_serving,
    match_feed_alias,
    model_dir_engine,
    positional_fetch_alias,
    read_model_vars,
    serving_dir_engine,
)
from conversion.spec import SPO_SPEC, ConversionSpec

logger = logging.getLogger(__name__)

Checker = Callable[[str, str, Engine, Engine], HopResult]


class X2PaddleError(ConversionError):
    """X2Paddle did not produce a Paddle inference model."""


@dataclass(frozen=True)
class SPOArtifacts:
    """Where the SPO conversion writes (``x2paddle_dir`` holds the intermediate Paddle model)."""

    x2paddle_dir: Path
    serving_server: Path
    serving_client: Path
    onnx_file: Path

    @classmethod
    def under(cls, out_dir: Path, work_dir: Path | None) -> SPOArtifacts:
        """Intermediates in ``work_dir``; without one, the copies in ``out_dir`` stand in."""
        work = work_dir if work_dir is not None else out_dir / "_no_work_dir"
        return cls(
            work / "x2paddle",
            out_dir / "serving_server",
            out_dir / "serving_client",
            out_dir / "model.onnx",
        )

    @property
    def paddle_dir(self) -> Path:
        return self.x2paddle_dir / "inference_model"


def torch_engine(model: object, spec: ConversionSpec = SPO_SPEC) -> Engine:
    """A PyTorch module as an engine: ``spec.outputs`` are its outputs in order (the sparse
    model's for :data:`SPO_SPEC`, the dense one's for ``SPO_DENSE_SPEC``)."""
    import torch

    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            outs = model(*[torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in spec.inputs])
        return {n: o.numpy() for n, o in zip(spec.outputs, outs, strict=True)}

    return run


def export_onnx(model: object, onnx_file: Path, spec: ConversionSpec = SPO_SPEC) -> Path:
    """``torch.onnx.export`` (TorchScript exporter, ``spec.opset``) with dynamic batch and length."""
    import torch

    onnx_file.parent.mkdir(parents=True, exist_ok=True)
    ids = torch.tensor([[2, 7, 8, 9, 10, 3], [2, 11, 12, 3, 0, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    dummy = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": mask}
    with torch.inference_mode():
        torch.onnx.export(
            model,
            tuple(dummy[n] for n in spec.inputs),
            str(onnx_file),
            input_names=list(spec.inputs),
            output_names=list(spec.outputs),
            dynamic_axes=spec.dynamic_axes(),
            opset_version=spec.opset,
            do_constant_folding=True,
            dynamo=False,
        )
    logger.info("ONNX (opset %d) written to %s", spec.opset, onnx_file)
    return onnx_file


def x2paddle_convert(onnx_file: Path, save_dir: Path) -> Path:
    """X2Paddle ``onnx2paddle`` into ``save_dir``, in a child process; returns its
    ``inference_model`` directory.

    A child process because X2Paddle holds the whole model several times over while it converts
    (1-2 GB at base size) and the memory is not returned to the system afterwards; its progress
    output goes to ``save_dir/x2paddle.log``.
    """
    import multiprocessing

    shutil.rmtree(save_dir, ignore_errors=True)
    save_dir.mkdir(parents=True)
    log = save_dir / "x2paddle.log"
    child = multiprocessing.get_context("spawn").Process(
        target=_x2paddle_in_child, args=(str(onnx_file), str(save_dir), str(log)), name="x2paddle"
    )
    child.start()
    child.join()
    if child.exitcode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:] if log.is_file() else ""
        raise X2PaddleError(f"X2Paddle failed on {onnx_file} (exit code {child.exitcode}); {log}:\n{tail}")
    model_dir = save_dir / "inference_model"
    if not model_dir.is_dir():
        raise X2PaddleError(f"X2Paddle wrote no {model_dir}")
    return model_dir


def _x2paddle_in_child(onnx_file: str, save_dir: str, log: str) -> None:
    """The conversion itself (run in the child process of :func:`x2paddle_convert`)."""
    import traceback

    with open(log, "w", encoding="utf-8") as out, contextlib.redirect_stdout(out):
        try:
            from x2paddle.convert import onnx2paddle

            onnx2paddle(onnx_file, save_dir, disable_feedback=True)
        except Exception:
            out.write(traceback.format_exc())
            out.flush()
            raise SystemExit(1) from None


def export_serving(paddle_dir: Path, out: SPOArtifacts, spec: ConversionSpec = SPO_SPEC) -> tuple[str, str]:
    """Write serving_server/ + serving_client/ with logical alias names; the model file names."""
    model_file, params_file = find_model_files(paddle_dir)
    feeds, fetches = read_model_vars(paddle_dir, model_file, params_file)
    feed_alias = match_feed_alias([v.name for v in feeds], spec.inputs)
    fetch_alias = positional_fetch_alias([v.name for v in fetches], spec.outputs)
    for d in (out.serving_server, out.serving_client):
        shutil.rmtree(d, ignore_errors=True)
    inference_model_to_serving(
        paddle_dir, out.serving_server, out.serving_client, model_file, params_file, feed_alias, fetch_alias
    )
    return model_file, params_file


def run_spo(
    model: object,
    out_dir: Path,
    work_dir: Path | None,
    checker: Checker,
    convert: bool = True,
    spec: ConversionSpec = SPO_SPEC,
) -> SPOArtifacts:
    """Convert (if ``convert``) and check every SPO hop of the sparse model of ``model`` (an
    ``SPOModel``) in order: torch->onnx, onnx->paddle, paddle->serving. The ONNX file is written
    straight to ``out_dir/model.onnx``. Without ``convert`` the existing files are checked; when
    the X2Paddle output is gone (or ``work_dir`` is None) the serving_server copy stands in for it.
    """
    from conversion.models.spo_torch import SparseSPOModel

    if convert and work_dir is None:
        raise ValueError("converting needs a work_dir")
    art = SPOArtifacts.under(out_dir, work_dir)
    sparse = SparseSPOModel(model).eval()
    if convert:
        export_onnx(sparse, art.onnx_file, spec)
    onnx_run = onnx_engine(art.onnx_file)
    checker("torch", "onnx", torch_engine(sparse, spec), onnx_run)

    if convert:
        x2paddle_convert(art.onnx_file, art.x2paddle_dir)
    paddle_dir = art.paddle_dir if art.paddle_dir.is_dir() else art.serving_server
    model_file, params_file = find_model_files(paddle_dir)
    paddle_run = model_dir_engine(paddle_dir, model_file, params_file, spec)
    checker("onnx", "paddle", onnx_run, paddle_run)
    del onnx_run  # its last hop: its session is freed before the serving model loads

    if convert:
        export_serving(paddle_dir, art, spec)
    checker("paddle", "serving", paddle_run, serving_dir_engine(art.serving_server, model_file, params_file))
    return art
