"""FP32 ONNX -> INT8 ONNX with ONNX Runtime: clean the graph, fuse the transformer, quantize.

Each step validates what it wrote and raises :class:`QuantizationError` naming the step. The
accuracy of the result is checked by :mod:`conversion.accuracy`, not here.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conversion.errors import ConversionError
from conversion.parity import Feeds
from conversion.spec import ConversionSpec, Int8Spec

logger = logging.getLogger(__name__)

# Ops that carry INT8 weights after ``quantize_dynamic`` (MatMul -> MatMulInteger, fused
# attention -> QAttention, Gather on embeddings stays FP32 in dynamic mode).
QUANTIZED_OPS = ("MatMulInteger", "DynamicQuantizeMatMul", "QAttention", "QGemm", "ConvInteger")


class QuantizationError(ConversionError):
    """A step of the INT8 hop did not produce a usable graph."""


@dataclass(frozen=True)
class QuantizeReport:
    """What the INT8 hop wrote: file sizes, the fusions applied and the nodes quantized."""

    fp32_bytes: int
    int8_bytes: int
    fused: dict[str, int] = field(default_factory=dict)
    quantized_nodes: int = 0
    matmuls_before: int = 0
    fp32_rewrite_max_abs_diff: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "fp32_rewrite_max_abs_diff": self.fp32_rewrite_max_abs_diff,
            "fp32_bytes": self.fp32_bytes,
            "int8_bytes": self.int8_bytes,
            "fused": self.fused,
            "quantized_nodes": self.quantized_nodes,
            "matmuls_before": self.matmuls_before,
        }


def op_counts(path: Path) -> collections.Counter[str]:
    """How many nodes of each op type the ONNX file at ``path`` has."""
    import onnx

    return collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def clean_graph(src: Path, dst: Path) -> None:
    """Constant-fold and drop ``Identity`` nodes (paddle2onnx feeds every weight through one, which
    hides it from the quantizer) with ONNX Runtime's basic optimizations and shape inference."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        # symbolic shape inference cannot follow the dynamic Reshape/Slice of these graphs
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    except Exception as e:  # ORT and onnx raise their own types
        raise QuantizationError(f"cleaning {src} for quantization failed: {e}") from e
    _check_loads(dst, "cleaned")


def fuse_transformer(src: Path, dst: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """ONNX Runtime's BERT fusions (attention, skip-LayerNorm, bias-GELU); the fused op counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        model = optimize_model(
            str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0
        )
        fused = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
        model.save_model_to_file(str(dst))
    except Exception as e:
        raise QuantizationError(f"fusing the transformer of {src} failed: {e}") from e
    _check_loads(dst, "fused")
    return fused


def quantize_weights(src: Path, dst: Path, spec: Int8Spec) -> None:
    """Dynamic quantization: INT8 weights, activations quantized per call."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        weight_type = QuantType[spec.weight_type]
    except KeyError:
        raise QuantizationError(f"unknown weight type {spec.weight_type!r}; use QInt8 or QUInt8") from None
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=weight_type,
            per_channel=spec.per_channel,
            reduce_range=spec.reduce_range,
        )
    except Exception as e:
        raise QuantizationError(f"quantizing {src} failed: {e}") from e
    _check_loads(dst, "quantized")


def check_fp32_graph(reference: Path, rewritten: Path, cases: Sequence[Feeds], conv: ConversionSpec) -> float:
    """Max abs diff of the rewritten FP32 graph against ``reference`` on ``cases``; raise
    :class:`QuantizationError` above ``conv.atol`` (cleaning and fusion must not change results)."""
    from conversion.parity import ParityCheckError, compare, onnx_engine

    run_a, run_b = onnx_engine(reference), onnx_engine(rewritten)
    try:
        result = compare(conv, "onnx", "onnx rewritten", run_a, run_b, cases)
    except ParityCheckError as e:  # a missing output or another shape
        raise QuantizationError(f"{rewritten} does not answer like {reference}: {e}") from e
    if not result.max_abs_diff <= conv.atol:
        raise QuantizationError(
            f"{rewritten} differs from {reference} by {result.max_abs_diff:.3g} (atol {conv.atol}) "
            "before quantizing"
        )
    return result.max_abs_diff


def quantize_model(
    fp32: Path,
    int8: Path,
    work: Path,
    conv: ConversionSpec,
    num_heads: int,
    hidden_size: int,
    cases: Sequence[Feeds],
) -> QuantizeReport:
    """Write ``int8`` from ``fp32`` (intermediate graphs in ``work``); the cleaned/fused FP32
    graph is checked against ``fp32`` on ``cases``; a result with no weight quantized is refused."""
    spec = conv.int8
    work.mkdir(parents=True, exist_ok=True)
    cleaned = work / "model.cleaned.onnx"
    clean_graph(fp32, cleaned)
    source, fused = cleaned, {}
    if spec.fuse:
        source = work / "model.fused.onnx"
        fused = fuse_transformer(cleaned, source, num_heads, hidden_size)
    fp32_diff = check_fp32_graph(fp32, source, cases, conv)
    matmuls = op_counts(source)["MatMul"]
    quantize_weights(source, int8, spec)
    counts = op_counts(int8)
    quantized = sum(counts[op] for op in QUANTIZED_OPS)
    if not quantized:
        raise QuantizationError(
            f"{int8}: no weight was quantized ({matmuls} MatMul nodes, none with a constant weight)"
        )
    report = QuantizeReport(fp32.stat().st_size, int8.stat().st_size, fused, quantized, matmuls, fp32_diff)
    logger.info(
        "%s: %d nodes quantized, %.2f MB -> %.2f MB, fused %s",
        int8,
        quantized,
        report.fp32_bytes / 1e6,
        report.int8_bytes / 1e6,
        fused or "nothing",
    )
    return report


def _check_loads(path: Path, what: str) -> None:
    """ONNX Runtime can build a session from ``path``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise QuantizationError(f"the {what} graph {path} does not load in ONNX Runtime: {e}") from e
