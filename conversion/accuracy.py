"""The accuracy row of a lossy hop (FP32 -> INT8): decoded facts of both engines, against each other
and, where gold records exist, against the gold (exact-match F1 of each and the loss)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from conversion.metrics import micro_prf
from conversion.parity import Decoder, Engine, Feeds, max_abs_diff
from conversion.spec import ConversionSpec

logger = logging.getLogger(__name__)

Facts = Callable[[dict], set]


class AccuracyLossError(RuntimeError):
    """The lossy hop lost more accuracy than its spec allows."""

    def __init__(self, hop: str, detail: str, result: AccuracyResult):
        self.result = result
        super().__init__(f"{hop}: {detail}")


@dataclass(frozen=True)
class AccuracyResult:
    """One lossy hop's outcome (a row of ``parity.json`` with ``"kind": "accuracy"``)."""

    model: str
    hop_from: str
    hop_to: str
    texts: int
    eval_set: str
    agreement_f1: float
    identical_texts: float
    f1_from: float | None
    f1_to: float | None
    max_abs_diff: float
    bar: dict[str, float]
    passed: bool
    detail: str = ""

    @property
    def hop(self) -> str:
        return f"{self.model} {self.hop_from}->{self.hop_to}"

    @property
    def f1_delta(self) -> float | None:
        if self.f1_from is None or self.f1_to is None:
            return None
        return self.f1_to - self.f1_from

    def as_row(self) -> dict[str, Any]:
        rounded = {k: _round(v) for k, v in (("f1_from", self.f1_from), ("f1_to", self.f1_to))}
        return {
            "model": self.model,
            "from": self.hop_from,
            "to": self.hop_to,
            "kind": "accuracy",
            "eval_set": self.eval_set,
            "texts": self.texts,
            "agreement_f1": _round(self.agreement_f1),
            "identical_texts": _round(self.identical_texts),
            **rounded,
            "f1_delta": _round(self.f1_delta),
            "max_abs_diff": self.max_abs_diff if math.isfinite(self.max_abs_diff) else None,
            **self.bar,
            "passed": self.passed,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def agreement_f1(reference: Sequence[set], other: Sequence[set]) -> float:
    """Exact-match F1 of ``other``'s facts against ``reference``'s; 1.0 when neither has any."""
    if not any(reference) and not any(other):
        return 1.0
    return micro_prf(reference, other)["f1"]


def compare_accuracy(
    spec: ConversionSpec,
    hop_from: str,
    hop_to: str,
    run_a: Engine,
    run_b: Engine,
    cases: Sequence[Feeds],
    decode: Decoder,
    facts: Facts,
    gold: Sequence[set] | None,
    eval_set: str,
) -> AccuracyResult:
    """Decode with both engines; passed when B's gold F1 is within ``spec.int8.max_f1_drop`` of
    A's (with ``gold``), else when B's facts agree with A's to ``spec.int8.min_agreement_f1``."""
    t0 = time.perf_counter()
    diff = max((_valid_diff(spec, feeds, run_a, run_b) for feeds in cases), default=0.0)
    facts_a = [facts(r) for r in decode(run_a)]
    facts_b = [facts(r) for r in decode(run_b)]
    agreement = agreement_f1(facts_a, facts_b)
    identical = sum(a == b for a, b in zip(facts_a, facts_b, strict=True)) / max(1, len(facts_a))
    f1_a = f1_b = None
    if gold is not None:
        f1_a, f1_b = micro_prf(gold, facts_a)["f1"], micro_prf(gold, facts_b)["f1"]
        bar = {"max_f1_drop": spec.int8.max_f1_drop}
        passed = f1_a - f1_b <= spec.int8.max_f1_drop
        detail = f"F1 {f1_a:.4f} -> {f1_b:.4f} (may drop {spec.int8.max_f1_drop})"
    else:
        bar = {"min_agreement_f1": spec.int8.min_agreement_f1}
        passed = agreement >= spec.int8.min_agreement_f1
        detail = f"facts agree at F1 {agreement:.4f} (needs {spec.int8.min_agreement_f1})"
    result = AccuracyResult(
        spec.name, hop_from, hop_to, len(facts_a), eval_set, agreement, identical, f1_a, f1_b, diff, bar,
        passed, detail,
    )  # fmt: skip
    logger.info(
        "%-26s %s on %d texts (%s), agreement F1 %.4f, identical %.1f%%, max_abs_diff %.3g %s [%.1fs]",
        result.hop,
        detail,
        len(facts_a),
        eval_set,
        agreement,
        100 * identical,
        diff,
        "PASS" if passed else "FAIL",
        time.perf_counter() - t0,
    )
    return result


def _valid_diff(spec: ConversionSpec, feeds: Feeds, run_a: Engine, run_b: Engine) -> float:
    """Max abs diff over each row's own positions (an INT8 engine runs rows unpadded)."""
    out_a, out_b = run_a(dict(feeds)), run_b(dict(feeds))
    lengths = feeds["attention_mask"].sum(axis=1).astype(int)
    worst = 0.0
    for name in spec.outputs:
        seq_axes = [axis for axis, kind in spec.axes_of(name).items() if kind == "seq"]
        for i, length in enumerate(lengths):
            index = tuple(
                slice(0, length) if axis in seq_axes else slice(None) for axis in range(1, out_a[name].ndim)
            )
            a, b = out_a[name][i][index], out_b[name][i][index]
            worst = max(worst, max_abs_diff(a, b, spec.masked_below))
    return worst


def raise_if_lossy(result: AccuracyResult) -> AccuracyResult:
    """Raise :class:`AccuracyLossError` for a failed result; return it otherwise."""
    if not result.passed:
        raise AccuracyLossError(result.hop, result.detail, result)
    return result
