"""The bridge's last hop: the served FP32 ONNX model -> its INT8 file, kept only when it is accurate.

The accuracy row compares what the service would answer: both files are loaded through the
service's ONNX Runtime backend from the model card, and decoded by the service's jobs.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conversion.accuracy import AccuracyResult, Facts, compare_accuracy, raise_if_lossy
from conversion.parity import Decoder, Feeds
from conversion.quantize import quantize_model
from conversion.spec import ConversionSpec

logger = logging.getLogger(__name__)

INT8_ONNX = "model.int8.onnx"
CARD = "model_card.json"
N_DIFF_CASES = 6
ACCURACY_KEYS = ("eval_set", "texts", "agreement_f1", "identical_texts", "f1_from", "f1_to", "f1_delta")


@dataclass(frozen=True)
class EvalSet:
    """What the INT8 model is judged on: texts, and their gold facts where there are any."""

    name: str
    texts: list[str]
    gold: list[set] | None = None


def previous_int8(out_dir: Path) -> dict[str, Any] | None:
    """The INT8 section of the model card already in ``out_dir`` (before it is rewritten)."""
    path = out_dir / CARD
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("int8")


def _update_card(out_dir: Path, int8: dict[str, Any] | None) -> None:
    path = out_dir / CARD
    card = json.loads(path.read_text(encoding="utf-8"))
    card.pop("int8", None)
    if int8 is not None:
        card["int8"] = int8
    path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def run_int8_hop(
    spec: ConversionSpec,
    out_dir: Path,
    work_dir: Path | None,
    architecture: dict[str, Any],
    cases: Sequence[Feeds],
    decode: Decoder,
    facts: Facts,
    evaluation: EvalSet,
    convert: bool,
    previous: dict[str, Any] | None,
) -> AccuracyResult:
    """Quantize ``out_dir/model.onnx`` (unless converting is not asked for and the card already
    names an INT8 file) and judge it; the card names the file only when it passed. Raises
    :class:`QuantizationError` or :class:`AccuracyLossError` (its row attached)."""
    from pipeline.backends import create_backend
    from pipeline.model_card import load_model_card

    int8_path = out_dir / INT8_ONNX
    if convert or previous is None or not int8_path.is_file():
        int8_path.unlink(missing_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            report = quantize_model(
                out_dir / "model.onnx",
                int8_path,
                Path(work_dir or tmp) / "int8",
                spec,
                int(architecture["num_attention_heads"]),
                int(architecture["hidden_size"]),
                cases[:N_DIFF_CASES],
            )
        section: dict[str, Any] = {
            "file": INT8_ONNX,
            "method": "onnxruntime dynamic quantization",
            "weight_type": spec.int8.weight_type,
            "per_channel": spec.int8.per_channel,
            "reduce_range": spec.int8.reduce_range,
            **report.as_dict(),
        }
    else:
        logger.info("%s: %s is up to date; checking only", spec.name, int8_path)
        section = {k: v for k, v in previous.items() if k != "accuracy"}
    _update_card(out_dir, section)
    card = load_model_card(out_dir)
    fp32 = create_backend("onnx", out_dir, card, threads=2)
    int8 = create_backend("onnx", out_dir, card, threads=2, precision="int8")
    try:
        result = compare_accuracy(
            spec, "served onnx", "served onnx int8", fp32.infer, int8.infer, cases[:N_DIFF_CASES],
            decode, facts, evaluation.gold, evaluation.name,
        )  # fmt: skip
    finally:
        fp32.close()
        int8.close()
    if not result.passed:
        _update_card(out_dir, None)
        int8_path.unlink(missing_ok=True)
        raise_if_lossy(result)
    row = result.as_row()
    _update_card(out_dir, {**section, "accuracy": {k: row[k] for k in ACCURACY_KEYS}})
    return result
