"""Overlapping windows over long texts, the model rows built from them, and merging their spans.

Taskflow cuts a long text into back-to-back chunks, so an entity across a cut is lost or
truncated. Here windows overlap (by default ``min(size // 2, 64)`` characters or tokens): any
span up to the overlap length lies wholly inside some window, and a span cut by a window edge is
dropped when another window found an overlapping span that is not cut. :class:`UIEJob` cuts
windows in token space over a text tokenized once and assembles rows with :func:`pair_row`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.tokenizer import Encoded, IETokenizer
from pipeline.uie.spans import Span

DEFAULT_MAX_OVERLAP = 64


def default_overlap(max_chars: int, maximum: int = DEFAULT_MAX_OVERLAP) -> int:
    """The default overlap of windows of ``max_chars``: half a window, at most ``maximum``.

    Half a window: a sentence-level fact up to that long (a subject with its object) lies wholly
    inside some window.
    """
    return max(0, min(max_chars // 2, maximum))


def split_windows(text: str, max_chars: int, stride: int) -> list[tuple[int, str]]:
    """``(offset, chunk)`` windows of at most ``max_chars`` covering ``text``, ``stride`` apart.

    The last window is aligned to the end of the text (so it is full length and overlaps its
    predecessor by at least ``max_chars - stride``). A text of at most ``max_chars`` is one window.
    """
    return [(a, text[a:b]) for a, b in window_bounds(len(text), max_chars, stride)]


def window_bounds(n: int, size: int, stride: int) -> list[tuple[int, int]]:
    """``[start, end)`` windows of at most ``size`` items over ``n`` items, ``stride`` apart.

    The last window ends at ``n``; ``n <= size`` (including 0) gives the single window ``(0, n)``.
    """
    if size < 1:
        raise ValueError(f"window size must be >= 1, got {size}")
    if not 1 <= stride <= size:
        raise ValueError(f"stride must be in [1, {size}], got {stride}")
    if n <= size:
        return [(0, n)]
    last = n - size
    starts = list(range(0, last, stride))
    starts.append(last)
    return [(a, a + size) for a in starts]


def anchored_windows(
    bounds: Sequence[tuple[int, int]], anchors: Sequence[tuple[int, int]], size: int, n: int
) -> list[tuple[int, int]]:
    """The windows of ``bounds`` that wholly hold at least one anchor, in order.

    ``anchors`` are ``[start, end)`` item spans (a relation's subject mentions). An anchor that no
    window holds (one longer than the overlap, cut by every edge) gets its own window of ``size``
    items centred on it, kept inside ``[0, n)``. No anchors: every window.
    """
    if not anchors:
        return list(bounds)
    keep = {w for w in bounds if any(w[0] <= a and b <= w[1] for a, b in anchors)}
    for a, b in anchors:
        if not any(w[0] <= a and b <= w[1] for w in keep):
            lo = min(max(0, a - max(0, size - (b - a)) // 2), max(0, n - size))
            keep.add((lo, min(n, lo + size)))
    return sorted(keep)


@dataclass
class _Merged:
    start: int
    end: int
    prob: float
    cut: bool  # touches a window edge inside the text in every window that found it
    windows: set[int]


def merge_window_spans(windows: Sequence[tuple[int, int, Sequence[Span]]], text_len: int) -> list[Span]:
    """Merge spans found in windows into full-text spans sorted by (start, end).

    ``windows`` holds ``(offset, window_len, spans)`` with spans relative to the window. Equal
    spans merge keeping the highest probability; a span cut by a window edge (one that is not the
    text's own start or end) is dropped when an overlapping, uncut span was found in another window.
    """
    merged: dict[tuple[int, int], _Merged] = {}
    for w, (offset, wlen, spans) in enumerate(windows):
        left_cut = offset > 0
        right_cut = offset + wlen < text_len
        for s, e, p in spans:
            cut = (left_cut and s == 0) or (right_cut and e == wlen)
            key = (s + offset, e + offset)
            m = merged.get(key)
            if m is None:
                merged[key] = _Merged(key[0], key[1], p, cut, {w})
            else:
                m.prob = max(m.prob, p)
                m.cut = m.cut and cut
                m.windows.add(w)
    items = sorted(merged.values(), key=lambda m: (m.start, m.end))
    whole = [m for m in items if not m.cut]
    keep = []
    for m in items:
        if m.cut and any(u.start < m.end and m.start < u.end and not u.windows <= m.windows for u in whole):
            continue
        keep.append((m.start, m.end, m.prob))
    return keep


@dataclass(frozen=True)
class Pieces:
    """WordPiece ids and char offsets of one string (a prompt), without special tokens."""

    ids: tuple[int, ...]
    offsets: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, row: Encoded) -> Pieces:
        """The pieces of a single-segment row."""
        return cls(row.input_ids[1:-1], row.offsets[1:-1])


class TextPieces:
    """A whole text's pieces; windows' relative offsets are cached (prompts of one length share them)."""

    def __init__(self, row: Encoded):
        self.ids = row.input_ids[1:-1]
        self.offsets = row.offsets[1:-1]
        self._array = np.asarray(self.offsets, dtype=np.int64).reshape(-1, 2)
        self._cache: dict[tuple[int, int, int], tuple[tuple[int, int], ...]] = {}

    def token_span(self, start: int, end: int) -> tuple[int, int] | None:
        """Token indexes ``[first, last + 1)`` covering chars ``[start, end)``; None if no token does."""
        arr = self._array
        hit = np.nonzero((arr[:, 1] > start) & (arr[:, 0] < end))[0]
        if not len(hit):
            return None
        return int(hit[0]), int(hit[-1]) + 1

    def window(self, a: int, b: int, char_offset: int) -> tuple[tuple[int, int], ...]:
        """Offsets of tokens ``a..b-1`` relative to ``char_offset``."""
        key = (a, b, char_offset)
        rel = self._cache.get(key)
        if rel is None:
            rel = self._cache[key] = tuple(map(tuple, (self._array[a:b] - char_offset).tolist()))
        return rel

    def clear(self) -> None:
        """Drop the cached window offsets."""
        self._cache.clear()


def pair_row(tok: IETokenizer, prompt: Pieces, text: TextPieces, a: int, b: int, lo: int) -> Encoded:
    """The row ``[CLS] prompt [SEP] text[a:b] [SEP]`` laid out as ``IETokenizer.encode_batch`` does,
    with text offsets relative to char ``lo``."""
    n_prompt, n_text = len(prompt.ids), b - a
    ids = (tok.cls_id, *prompt.ids, tok.sep_id, *text.ids[a:b], tok.sep_id)
    types = (0,) * (n_prompt + 2) + (1,) * (n_text + 1)
    offsets = ((0, 0), *prompt.offsets, (0, 0), *text.window(a, b, lo), (0, 0))
    return Encoded(ids, types, offsets, n_prompt + 2, len(ids) - 1)
