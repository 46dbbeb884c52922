"""GlobalPointer / GPLinker decoding of SPO model outputs (pure numpy).

A dense model's row is ``entity`` [2, L, L] (subject, object spans), ``so_head`` [P, L, L]
(subject head x object head) and ``so_tail`` [P, L, L] (subject tail x object tail) logits; a
sparse model's row is ``entity`` and the encoder states, and the relation heads are scored at the
spans' token pairs only (:mod:`pipeline.spo_heads`). Only the positive cells are extracted (one
pass over each dense tensor, no copies), then subjects and objects are paired through predicates
found in both the head and the tail maps.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.spo_heads import RelationHeads
from pipeline.tokenizer import Encoded

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GPCells:
    """Positive cells of one row, as token indices of the row and their logits.

    ``subjects`` / ``objects``: int [n, 2] (start, end); ``heads``: int [n, 3] (p, sh, oh);
    ``tails``: int [n, 3] (p, st, ot); ``*_scores``: float [n] logits.
    """

    subjects: np.ndarray
    subject_scores: np.ndarray
    objects: np.ndarray
    object_scores: np.ndarray
    heads: np.ndarray
    head_scores: np.ndarray
    tails: np.ndarray
    tail_scores: np.ndarray


MAX_SPANS = 256  # subject or object candidates kept per row (the highest logits)
MAX_LINKS = 4096  # head or tail cells kept per row


def _keep_highest(cols: np.ndarray, scores: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``limit`` cells, the highest, in their order: a badly trained model can mark most
    cells positive, and pairing them all would take quadratic time and memory."""
    if scores.size > limit:
        logger.warning("%d positive cells in one row; keeping the %d highest", scores.size, limit)
        top = np.sort(np.argpartition(-scores, limit - 1)[:limit])
        cols, scores = cols[top], scores[top]
    return cols, scores


def _positive(
    maps: np.ndarray, start: int, end: int, threshold: float, limit: int
) -> tuple[np.ndarray, np.ndarray]:
    """(indices [n, ndim], logits [n]) of the cells > threshold whose last two indices are both
    in ``[start, end)``, in C order, at most ``limit`` (the highest).

    One pass over the whole tensor (a flat compare and ``flatnonzero`` are several times faster
    than ``nonzero`` on a strided slice); the few hits are then filtered to the text tokens.
    """
    flat = maps.reshape(-1)
    hits = np.flatnonzero(flat > threshold)
    idx = np.unravel_index(hits, maps.shape)
    keep = (idx[-2] >= start) & (idx[-2] < end) & (idx[-1] >= start) & (idx[-1] < end)
    hits = hits[keep]
    cols = np.stack([axis[keep] for axis in idx], axis=1).astype(np.int64, copy=False)
    return _keep_highest(cols, flat[hits].astype(np.float64), limit)


def _pair_cells(
    scores_at: Callable[[np.ndarray, np.ndarray], np.ndarray],
    starts: np.ndarray,
    ends: np.ndarray,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(cells [n, 3] of (p, start, end), logits [n]) > threshold over the pairs of the distinct
    ``starts`` x ``ends`` tokens, in C order, at most MAX_LINKS (the highest).

    ``scores_at(starts, ends)`` gives the [P, a, b] logits there: a gather from a dense map, or
    the relation heads scored on the encoder states. Decoding reads no other cell, so both paths
    keep the same cells.
    """
    starts, ends = np.unique(starts), np.unique(ends)
    if starts.size == 0 or ends.size == 0:
        return np.zeros((0, 3), dtype=np.int64), np.zeros(0)
    scores = scores_at(starts, ends)
    hits = np.flatnonzero(scores.reshape(-1) > threshold)
    p, a, b = np.unravel_index(hits, scores.shape)
    cols = np.stack([p, starts[a], ends[b]], axis=1).astype(np.int64, copy=False)
    return _keep_highest(cols, scores.reshape(-1)[hits].astype(np.float64), MAX_LINKS)


def _cells(
    entity: np.ndarray,
    head_at: Callable[[np.ndarray, np.ndarray], np.ndarray],
    tail_at: Callable[[np.ndarray, np.ndarray], np.ndarray],
    text_start: int,
    text_end: int,
    threshold: float,
) -> GPCells:
    a, b = text_start, max(text_start, text_end)
    subjects, subject_scores = _positive(entity[0], a, b, threshold, MAX_SPANS)
    objects, object_scores = _positive(entity[1], a, b, threshold, MAX_SPANS)
    heads, head_scores = _pair_cells(head_at, subjects[:, 0], objects[:, 0], threshold)
    tails, tail_scores = _pair_cells(tail_at, subjects[:, 1], objects[:, 1], threshold)
    return GPCells(subjects, subject_scores, objects, object_scores, heads, head_scores, tails, tail_scores)


def extract_cells(
    entity: np.ndarray,
    so_head: np.ndarray,
    so_tail: np.ndarray,
    text_start: int,
    text_end: int,
    threshold: float = 0.0,
) -> GPCells:
    """Positive cells of one dense row restricted to text tokens ``[text_start, text_end)``:
    the spans of ``entity``, and the ``so_head`` / ``so_tail`` cells at their token pairs."""
    return _cells(
        entity,
        lambda s, e: so_head[:, s][:, :, e],
        lambda s, e: so_tail[:, s][:, :, e],
        text_start,
        text_end,
        threshold,
    )


def extract_sparse_cells(
    entity: np.ndarray,
    hidden: np.ndarray,
    heads: RelationHeads,
    text_start: int,
    text_end: int,
    threshold: float = 0.0,
) -> GPCells:
    """The cells :func:`extract_cells` finds, from a sparse model's ``entity`` [2, L, L] and
    ``hidden`` [L, H]: the relation heads are scored only at the spans' token pairs."""
    return _cells(
        entity,
        lambda s, e: heads.head.scores(hidden, s, e),
        lambda s, e: heads.tail.scores(hidden, s, e),
        text_start,
        text_end,
        threshold,
    )


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _links(cells: np.ndarray, scores: np.ndarray) -> dict[tuple[int, int], dict[int, float]]:
    out: dict[tuple[int, int], dict[int, float]] = {}
    for (p, i, j), sc in zip(cells.tolist(), scores.tolist(), strict=True):
        out.setdefault((i, j), {})[p] = sc
    return out


def decode_spo(
    cells: GPCells, offsets: Sequence[tuple[int, int]], text: str, predicates: Sequence[str]
) -> list[dict]:
    """GPLinker triples of one row; char spans come from the token ``offsets`` into ``text``.

    Items: subject, subject_start, subject_end, predicate, object, object_start, object_end,
    score (sigmoid of the smallest of the four logits), sorted by (subject_start, object_start,
    predicate).
    """
    heads = _links(cells.heads, cells.head_scores)
    tails = _links(cells.tails, cells.tail_scores)
    if not heads or not tails:
        return []
    found: dict[tuple[int, int, str, int, int], float] = {}
    objects = list(zip(cells.objects.tolist(), cells.object_scores.tolist(), strict=True))
    for (sh, st), s_sc in zip(cells.subjects.tolist(), cells.subject_scores.tolist(), strict=True):
        for (oh, ot), o_sc in objects:
            ph, pt = heads.get((sh, oh)), tails.get((st, ot))
            if not ph or not pt:
                continue
            for p in ph.keys() & pt.keys():
                score = min(s_sc, o_sc, ph[p], pt[p])
                key = (offsets[sh][0], offsets[st][1], predicates[p], offsets[oh][0], offsets[ot][1])
                if score > found.get(key, -math.inf):
                    found[key] = score
    results = [
        {
            "subject": text[ss:se],
            "subject_start": ss,
            "subject_end": se,
            "predicate": pred,
            "object": text[os_:oe],
            "object_start": os_,
            "object_end": oe,
            "score": round(_sigmoid(score), 6),
        }
        for (ss, se, pred, os_, oe), score in found.items()
    ]
    results.sort(
        key=lambda r: (
            r["subject_start"],
            r["object_start"],
            r["predicate"],
            r["subject_end"],
            r["object_end"],
        )
    )
    return results


def decode_spo_dense(
    entity: np.ndarray,
    so_head: np.ndarray,
    so_tail: np.ndarray,
    enc: Encoded,
    text: str,
    predicates: Sequence[str],
    threshold: float = 0.0,
) -> list[dict]:
    """Decode one row's dense outputs for the encoded ``text`` (single-text row)."""
    cells = extract_cells(entity, so_head, so_tail, enc.text_start, enc.text_end, threshold)
    return decode_spo(cells, enc.offsets, text, predicates)
