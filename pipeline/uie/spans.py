"""UIE span decoding for one model row: thresholding, start/end pairing, token -> char offsets.

Semantics follow PaddleNLP (``utils/tools.py``: ``get_bool_ids_greater_than``, ``get_span``;
``taskflow/utils.py``: ``get_id_and_prob``): positions with probability strictly above the
threshold are candidates, starts and ends are paired by one walk over both sorted lists, a span's
probability is ``p_start * p_end``, spans beginning in the prompt and ending in the text are
dropped, spans wholly inside the prompt are classification answers. One deliberate difference:
special tokens ([CLS], [SEP], padding) are never span boundaries (Taskflow maps them to char 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.tokenizer import Encoded

Span = tuple[int, int, float]


def get_bool_ids(probs: np.ndarray, threshold: float) -> list[tuple[int, float]]:
    """Positions whose probability is strictly greater than ``threshold``, with that probability."""
    probs = np.asarray(probs).reshape(-1)
    idx = np.flatnonzero(probs > threshold)
    return [(int(i), float(p)) for i, p in zip(idx, probs[idx], strict=True)]


def pair_spans(starts: Sequence[int], ends: Sequence[int]) -> list[tuple[int, int]]:
    """Taskflow's ``get_span`` pairing of start and end positions, sorted by (start, end).

    Both lists are walked in order: equal positions pair and both advance; a start before the
    end is recorded for that end and the start advances (so a later start overwrites it: each end
    keeps the nearest preceding start); a start after the end skips the end.
    """
    starts = sorted(starts)
    ends = sorted(ends)
    couple: dict[int, int] = {}
    i = j = 0
    while i < len(starts) and j < len(ends):
        s, e = starts[i], ends[j]
        if s == e:
            couple[e] = s
            i += 1
            j += 1
        elif s < e:
            couple[e] = s
            i += 1
        else:
            j += 1
    return sorted((s, e) for e, s in couple.items())


@dataclass(frozen=True)
class RowSpans:
    """Decoded spans of one row: char offsets into the row's text, and into its prompt."""

    text: list[Span]
    prompt: list[Span]


def decode_row(row: Encoded, start_prob: np.ndarray, end_prob: np.ndarray, threshold: float) -> RowSpans:
    """Candidate spans ``(char_start, char_end, probability)`` of one encoded row.

    ``start_prob`` / ``end_prob`` have at least ``len(row)`` entries (padding after is ignored).
    Text offsets are relative to the text segment given to the tokenizer, prompt offsets to the
    prompt string.
    """
    n = len(row)
    sp = np.asarray(start_prob).reshape(-1)
    ep = np.asarray(end_prob).reshape(-1)
    if sp.shape[0] < n or ep.shape[0] < n:
        raise ValueError(f"probability vectors of length {sp.shape[0]}/{ep.shape[0]} for a row of {n}")
    sp, ep = sp[:n], ep[:n]
    valid = np.zeros(n, dtype=bool)
    valid[row.text_start : row.text_end] = True
    if row.text_start > 1:  # pair row: prompt tokens sit between [CLS] and the first [SEP]
        valid[1 : row.text_start - 1] = True
    starts = np.flatnonzero((sp > threshold) & valid)
    ends = np.flatnonzero((ep > threshold) & valid)
    text: list[Span] = []
    prompt: list[Span] = []
    if starts.size == 0 or ends.size == 0:
        return RowSpans(text, prompt)
    offsets = row.offsets
    for s, e in pair_spans(starts.tolist(), ends.tolist()):
        prob = float(sp[s]) * float(ep[e])
        span = (offsets[s][0], offsets[e][1], prob)
        if s >= row.text_start:
            text.append(span)
        elif e < row.text_start:
            prompt.append(span)
        # else: begins in the prompt and ends in the text -> dropped, as Taskflow does
    return RowSpans(text, prompt)
