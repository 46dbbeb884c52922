"""UIE hops: Paddle dygraph -> static inference model -> serving model, and static -> ONNX; or,
from an exported static model (PaddleNLP's ``export_model.py``, Taskflow's ``static/``), its hops
to the serving model and to ONNX.

Each hop is handed to a ``checker(hop_from, hop_to, engine_a, engine_b)`` right after it is
produced, so a broken hop stops the chain before the next one is built.
"""

from __future__ import annotations

import copy
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from conversion.errors import ConversionError
from conversion.parity import Engine, Feeds, HopResult, onnx_engine
from conversion.serving_export import (
    ServingExportError,
    find_model_files,
    inference_model_to_serving,
    match_feed_alias,
    model_dir_engine,
    positional_fetch_alias,
    read_model_vars,
    serving_dir_engine,
)
from conversion.spec import UIE_SPEC, ConversionSpec

logger = logging.getLogger(__name__)

Checker = Callable[[str, str, Engine, Engine], HopResult]
STATIC_PREFIX = "inference"


class OnnxExportError(ConversionError):
    """paddle2onnx produced no model or a model whose inputs/outputs do not match the spec."""


@dataclass(frozen=True)
class UIEArtifacts:
    """Where the UIE conversion writes (``static_dir`` is the intermediate jit.save output)."""

    static_dir: Path
    serving_server: Path
    serving_client: Path
    onnx_file: Path
    model_file: str = STATIC_PREFIX + ".json"
    params_file: str = STATIC_PREFIX + ".pdiparams"

    @classmethod
    def under(cls, out_dir: Path, work_dir: Path | None) -> UIEArtifacts:
        """Intermediates in ``work_dir``; without one, the serving_server copy stands in."""
        return cls(
            work_dir / "static" if work_dir is not None else out_dir / "serving_server",
            out_dir / "serving_server",
            out_dir / "serving_client",
            out_dir / "model.onnx",
        )


def dygraph_engine(model: object, spec: ConversionSpec = UIE_SPEC) -> Engine:
    """The Paddle dygraph model itself as an engine (the reference of the first hop)."""
    import paddle

    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        with paddle.no_grad():
            outs = model(*[paddle.to_tensor(feeds[n]) for n in spec.inputs])
        return {n: o.numpy() for n, o in zip(spec.outputs, outs, strict=True)}

    return run


def export_static(model: object, static_dir: Path, spec: ConversionSpec = UIE_SPEC) -> tuple[Path, Path]:
    """``paddle.jit.to_static`` + ``paddle.jit.save`` with named dynamic int64 [B, L] inputs.

    Works on a copy, so ``model`` stays a dygraph layer. Returns the (model, params) files
    (PIR ``inference.json`` + ``inference.pdiparams``).
    """
    import paddle
    from paddle.static import InputSpec

    static_dir.mkdir(parents=True, exist_ok=True)
    layer = copy.deepcopy(model)
    layer.eval()
    input_spec = [InputSpec([None, None], "int64", name=n) for n in spec.inputs]
    static = paddle.jit.to_static(layer, input_spec=input_spec, full_graph=True)
    prefix = static_dir / STATIC_PREFIX
    paddle.jit.save(static, str(prefix))
    model_file, params_file = prefix.with_suffix(".json"), prefix.with_suffix(".pdiparams")
    if not model_file.is_file() or not params_file.is_file():
        raise FileNotFoundError(
            f"paddle.jit.save wrote no {model_file.name}/{params_file.name} in {static_dir}"
        )
    return model_file, params_file


def rename_onnx_io(onnx_model: object, inputs: dict[str, str], outputs: dict[str, str]) -> None:
    """Rename graph inputs/outputs (and every node reference to them) in place."""
    mapping = {**inputs, **outputs}
    graph = onnx_model.graph
    for value in [*graph.input, *graph.output]:
        value.name = mapping.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]


def export_onnx(
    model_file: Path, params_file: Path, onnx_file: Path, spec: ConversionSpec = UIE_SPEC
) -> Path:
    """paddle2onnx (opset ``spec.opset``) of a PIR inference model, I/O renamed to logical names."""
    import onnx
    import paddle2onnx

    try:
        blob = paddle2onnx.export(
            str(model_file), str(params_file), save_file=None, opset_version=spec.opset,
            auto_upgrade_opset=False, enable_onnx_checker=True,
        )  # fmt: skip
    except Exception as e:  # paddle2onnx logs the cause and leaves its result unbound
        raise OnnxExportError(f"paddle2onnx failed on {model_file}: {e}") from e
    if not blob:
        raise OnnxExportError(f"paddle2onnx returned no model for {model_file}")
    proto = onnx.load_from_string(blob)
    in_names = [i.name for i in proto.graph.input]
    out_names = [o.name for o in proto.graph.output]
    try:
        feed_map = match_feed_alias(in_names, spec.inputs)
        fetch_map = positional_fetch_alias(out_names, spec.outputs)
    except ServingExportError as e:
        raise OnnxExportError(f"paddle2onnx graph of {model_file}: {e}") from e
    rename_onnx_io(proto, feed_map, fetch_map)
    onnx.checker.check_model(proto)
    onnx_file.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(onnx_file))
    logger.info(
        "ONNX (opset %d) written to %s: inputs %s outputs %s", spec.opset, onnx_file, in_names, out_names
    )
    return onnx_file


def export_serving(static_dir: Path, model_file: str, params_file: str, out: UIEArtifacts,
                   spec: ConversionSpec = UIE_SPEC) -> None:  # fmt: skip
    """Write serving_server/ + serving_client/ with logical alias names."""
    feeds, fetches = read_model_vars(static_dir, model_file, params_file)
    feed_alias = match_feed_alias([v.name for v in feeds], spec.inputs)
    fetch_alias = positional_fetch_alias([v.name for v in fetches], spec.outputs)
    for d in (out.serving_server, out.serving_client):
        shutil.rmtree(d, ignore_errors=True)
    inference_model_to_serving(
        static_dir, out.serving_server, out.serving_client, model_file, params_file, feed_alias, fetch_alias
    )


def run_uie(
    model: object,
    out_dir: Path,
    work_dir: Path | None,
    checker: Checker,
    convert: bool = True,
    spec: ConversionSpec = UIE_SPEC,
) -> UIEArtifacts:
    """Convert (if ``convert``) and check every UIE hop in order: dygraph->static,
    static->serving, static->onnx. Without ``convert`` the existing files are checked; when
    the intermediate static model is gone (or ``work_dir`` is None), the serving_server copy
    stands in for it.
    """
    if convert and work_dir is None:
        raise ValueError("converting needs a work_dir")
    art = UIEArtifacts.under(out_dir, work_dir)
    if convert:
        export_static(model, art.static_dir, spec)
    static_dir = art.static_dir
    if not (static_dir / art.model_file).is_file():
        static_dir = art.serving_server
    reference = dygraph_engine(model, spec)
    static = model_dir_engine(static_dir, art.model_file, art.params_file, spec)
    checker("dygraph", "static", reference, static)
    del reference  # its last hop
    _static_hops(static, static_dir, art, checker, convert, spec)
    return art


def run_uie_static(
    static_dir: Path,
    out_dir: Path,
    checker: Checker,
    convert: bool = True,
    spec: ConversionSpec = UIE_SPEC,
) -> UIEArtifacts:
    """Convert (if ``convert``) and check the hops of an exported static UIE in ``static_dir``:
    static->serving, static->onnx. The exported model is the reference."""
    model_file, params_file = find_model_files(static_dir)
    art = UIEArtifacts(
        static_dir, out_dir / "serving_server", out_dir / "serving_client", out_dir / "model.onnx",
        model_file, params_file,
    )  # fmt: skip
    static = model_dir_engine(static_dir, model_file, params_file, spec)
    _static_hops(static, static_dir, art, checker, convert, spec)
    return art


def _static_hops(
    static: Engine, static_dir: Path, art: UIEArtifacts, checker: Checker, convert: bool, spec: ConversionSpec
) -> None:
    """static->serving and static->onnx from the static model in ``static_dir`` (engine ``static``)."""
    if convert:
        export_serving(static_dir, art.model_file, art.params_file, art, spec)
    checker(
        "static", "serving", static, serving_dir_engine(art.serving_server, art.model_file, art.params_file)
    )  # the serving engine is freed after its hop
    if convert:
        export_onnx(static_dir / art.model_file, static_dir / art.params_file, art.onnx_file, spec)
    checker("static", "onnx", static, onnx_engine(art.onnx_file))
