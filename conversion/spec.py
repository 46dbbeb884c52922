"""Declarative conversion specs: logical I/O names, dynamic axes, opset, tolerance, parity cases."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

BATCH, SEQ = "batch", "seq"


@dataclass(frozen=True)
class CaseParams:
    """How many parity feeds to build and their batch-size / token-length ranges (inclusive)."""

    n_cases: int = 24
    min_batch: int = 1
    max_batch: int = 16  # the service's ie.max_batch_rows may not exceed it (model card)
    min_len: int = 5
    max_len: int = 256


@dataclass(frozen=True)
class Int8Spec:
    """The INT8 hop: ONNX Runtime dynamic quantization of the FP32 ONNX file and its accuracy bar.

    ``fuse``: ONNX Runtime's transformer fusion (attention, LayerNorm, GELU) before quantizing.
    ``reduce_range``: 7-bit weights. x86 CPUs without VNNI (AVX2, AVX-512 before VNNI) add pairs
    of u8 x s8 products in int16 and saturate with 8-bit weights, so the same INT8 file answered
    differently there (logits up to 0.68 apart from a VNNI host on the demo SPO); with 7 bits no
    pair saturates and every host (VNNI, AVX2, arm) computes the same integers.
    ``max_f1_drop``: exact-match F1 (0-1) the INT8 model may lose against the FP32 one on gold
    records; ``min_agreement_f1``: without gold records, the F1 of INT8's facts against FP32's.
    """

    enabled: bool = True
    fuse: bool = True
    weight_type: str = "QInt8"  # onnxruntime.quantization.QuantType member
    per_channel: bool = False
    reduce_range: bool = True
    max_f1_drop: float = 0.01
    min_agreement_f1: float = 0.95


@dataclass(frozen=True)
class ConversionSpec:
    """One model's conversion contract (see ARCHITECTURE.md, "Model I/O contract").

    ``input_axes`` / ``output_axes`` map every logical tensor name to its dynamic axes
    (axis index -> ``"batch"`` or ``"seq"``); inputs are int64 [B, L], outputs float32.
    ``masked_below``: output values at or below it are additive-mask fill (compared only for
    being masked in both engines); ``None`` when the outputs have no such fill.
    """

    name: str
    task: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    input_axes: tuple[tuple[str, tuple[tuple[int, str], ...]], ...]
    output_axes: tuple[tuple[str, tuple[tuple[int, str], ...]], ...]
    opset: int = 13
    atol: float = 1e-4
    cases: CaseParams = field(default_factory=CaseParams)
    uses_prompts: bool = False
    masked_below: float | None = None
    int8: Int8Spec = field(default_factory=Int8Spec)

    def axes_of(self, tensor: str) -> dict[int, str]:
        """The dynamic axes of one logical input or output."""
        for name, axes in (*self.input_axes, *self.output_axes):
            if name == tensor:
                return dict(axes)
        raise KeyError(f"{self.name} has no tensor {tensor!r}")

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """All dynamic axes in ``torch.onnx.export`` form."""
        return {name: dict(axes) for name, axes in (*self.input_axes, *self.output_axes)}


_BL = ((0, BATCH), (1, SEQ))
_BLH = ((0, BATCH), (1, SEQ))  # [B, L, H]
_BCLL = ((0, BATCH), (2, SEQ), (3, SEQ))

UIE_INPUTS = ("input_ids", "token_type_ids", "position_ids", "attention_mask")
SPO_INPUTS = ("input_ids", "token_type_ids", "attention_mask")

UIE_SPEC = ConversionSpec(
    name="uie",
    task="uie",
    inputs=UIE_INPUTS,
    outputs=("start_prob", "end_prob"),
    input_axes=tuple((n, _BL) for n in UIE_INPUTS),
    output_axes=(("start_prob", _BL), ("end_prob", _BL)),
    uses_prompts=True,
)

# The served SPO model is sparse: entity logits and the encoder states; the relation heads are
# scored at candidate pairs beside the engine (pipeline.spo_heads, relation_heads.npz).
SPO_SPEC = ConversionSpec(
    name="spo",
    task="spo",
    inputs=SPO_INPUTS,
    outputs=("entity", "hidden"),
    input_axes=tuple((n, _BL) for n in SPO_INPUTS),
    output_axes=(("entity", _BCLL), ("hidden", _BLH)),
    masked_below=-1e3,  # spo_torch fills masked cells with -1e4
)

# The model as trained, with dense so_head / so_tail [B, P, L, L]: the reference the sparse model
# is checked against (and the layout of models built before the sparse one).
SPO_DENSE_SPEC = replace(
    SPO_SPEC,
    outputs=("entity", "so_head", "so_tail"),
    output_axes=(("entity", _BCLL), ("so_head", _BCLL), ("so_tail", _BCLL)),
)

SPECS: dict[str, ConversionSpec] = {s.name: s for s in (UIE_SPEC, SPO_SPEC)}
