"""The SPO hop from the model as trained (dense ``so_head`` / ``so_tail``) to the served sparse path.

The reference is the PyTorch model's dense forward; the other side is what the service runs: the
ONNX Runtime backend loaded from the model card (``entity``, ``hidden``) and the relation heads
read back from ``relation_heads.npz`` (``pipeline.spo_heads``). Per row, the entity maps are
compared whole, and the relation logits at every pair of the row's :data:`N_CANDIDATES` highest
subject and object cells (whatever their sign, so a trained model's few positives do not leave
the pair scoring untested); then the triples both decode must be equal. Dense outputs are made
in calls of at most ``DENSE_OUTPUT_BUDGET`` bytes, so memory stays bounded at any P and L.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from conversion.parity import (
    DENSE_OUTPUT_BUDGET,
    Feeds,
    HopResult,
    decoded_equal,
    max_abs_diff,
    spo_decoder,
)
from conversion.spec import SPO_DENSE_SPEC, SPO_SPEC
from pipeline.spo_heads import RelationHeads
from pipeline.tokenizer import IETokenizer

logger = logging.getLogger(__name__)

N_CANDIDATES = 24  # subject and object cells per row whose token pairs are compared


def _top_cells(entity_map: np.ndarray, start: int, end: int, k: int) -> np.ndarray:
    """(start, end) token pairs [n, 2] of the ``k`` highest cells of one [L, L] entity map
    within the text tokens ``[start, end)``."""
    region = entity_map[start:end, start:end].reshape(-1)
    k = min(k, region.size)
    top = np.argpartition(-region, k - 1)[:k]
    i, j = np.unravel_index(top, (end - start, end - start))
    return np.stack([i + start, j + start], axis=1)


def row_diff(
    dense: dict[str, np.ndarray], sparse: dict[str, np.ndarray], b: int, length: int, heads: RelationHeads
) -> tuple[float, int]:
    """Largest |dense - sparse| of row ``b`` (``length`` tokens: [CLS] text [SEP]) over its entity
    maps and the relation logits at its candidate pairs; and how many relation logits it compared."""
    masked = SPO_SPEC.masked_below
    n = length
    worst = max_abs_diff(dense["entity"][b, :, :n, :n], sparse["entity"][b, :, :n, :n], masked)
    if n < 3:
        return worst, 0
    subjects = _top_cells(dense["entity"][b, 0], 1, n - 1, N_CANDIDATES)
    objects = _top_cells(dense["entity"][b, 1], 1, n - 1, N_CANDIDATES)
    compared = 0
    for part, (name, head) in enumerate((("so_head", heads.head), ("so_tail", heads.tail))):
        starts, ends = np.unique(subjects[:, part]), np.unique(objects[:, part])
        ref = dense[name][b][:, starts][:, :, ends]
        got = head.scores(sparse["hidden"][b], starts, ends)
        worst = max(worst, max_abs_diff(ref, got, masked))
        compared += ref.size
    return worst, compared


def check_sparse_hop(
    model: object,
    out_dir: Path,
    cases: Sequence[Feeds],
    decode_texts: Sequence[str],
    tokenizer: IETokenizer,
    predicates: Sequence[str],
    max_seq_len: int,
) -> HopResult:
    """Compare the dense PyTorch ``model`` with the served sparse model in ``out_dir``; the hop's
    row (``raise_if_failed`` raises its named error)."""
    from conversion.export_spo import torch_engine
    from pipeline.backends import create_backend
    from pipeline.model_card import load_model_card, load_relation_heads_of

    t0 = time.perf_counter()
    card = load_model_card(out_dir)
    heads = load_relation_heads_of(out_dir, card)
    served = create_backend("onnx", out_dir, card, threads=2)
    dense = torch_engine(model, SPO_DENSE_SPEC)
    worst, where, compared = 0.0, "", 0
    try:
        for idx, feeds in enumerate(cases):
            rows, length = feeds["input_ids"].shape
            step = max(1, DENSE_OUTPUT_BUDGET // ((2 + 2 * len(predicates)) * length * length * 4))
            for lo in range(0, rows, step):
                part = {k: v[lo : lo + step] for k, v in feeds.items()}
                d, s = dense(part), served.infer(part)
                for b, n in enumerate(part["attention_mask"].sum(axis=1).tolist()):
                    diff, count = row_diff(d, s, b, int(n), heads)
                    compared += count
                    if diff > worst:
                        worst, where = diff, f"row {lo + b} of case {idx}"
                del d, s
        msg = decoded_equal(
            spo_decoder(decode_texts, tokenizer, predicates, max_seq_len)(dense),
            spo_decoder(decode_texts, tokenizer, predicates, max_seq_len, heads)(served.infer),
            2 * SPO_SPEC.atol,
        )
    finally:
        served.close()
    if msg:
        where = f"{where}; decoded: {msg}"
    passed = worst <= SPO_SPEC.atol and not msg
    logger.info(
        "%-26s max_abs_diff=%.3g (atol %g) cases=%d relation logits compared=%d decoded_equal=%s %s [%.1fs]",
        "spo dense->sparse", worst, SPO_SPEC.atol, len(cases), compared, not msg,
        "PASS" if passed else "FAIL", time.perf_counter() - t0,
    )  # fmt: skip
    return HopResult(
        "spo", "torch dense", "served sparse", worst, SPO_SPEC.atol, len(cases), not msg, passed, where
    )
