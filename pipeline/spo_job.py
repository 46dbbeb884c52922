"""SPO extraction for one request: windows over long texts, one model stage, GPLinker decoding.

A dense model's stage returns ``entity``, ``so_head``, ``so_tail`` per row; a sparse model's
(``relation_heads`` given) ``entity`` and ``hidden``, and the relation heads are scored here at
the candidate pairs only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.spo_decode import GPCells, decode_spo, extract_cells, extract_sparse_cells
from pipeline.spo_heads import RelationHeads
from pipeline.tokenizer import Encoded, IETokenizer
from pipeline.uie.spans import Span
from pipeline.windows import default_overlap, merge_window_spans, split_windows

_TRIPLE_KEY = ("subject_start", "subject_end", "predicate", "object_start", "object_end")


class SPOJob:
    """``next_rows`` once (one row per window), ``consume`` the model's outputs, ``result``."""

    def __init__(
        self,
        texts: list[str],
        tokenizer: IETokenizer,
        predicates: list[str],
        max_seq_len: int = 256,
        threshold: float = 0.0,
        window_overlap: int | None = None,
        relation_heads: RelationHeads | None = None,
    ):
        self.texts = texts
        self.relation_heads = relation_heads
        self.predicates = predicates
        self.threshold = threshold
        max_chars = max_seq_len - 2
        overlap = window_overlap if window_overlap is not None else default_overlap(max_chars)
        stride = max(max_chars - overlap, 1)
        self._windows: list[tuple[int, int, str]] = []  # (text index, char offset, chunk)
        for i, text in enumerate(texts):
            for offset, chunk in split_windows(text, max_chars, stride):
                self._windows.append((i, offset, chunk))
        self._rows = tokenizer.encode_batch([w[2] for w in self._windows], max_len=max_seq_len)
        self._cells: list[GPCells | None] | None = None

    def next_rows(self) -> list[Encoded]:
        return [] if self._cells is not None else list(self._rows)

    def consume(self, entity: list[np.ndarray], *relation: list[np.ndarray]) -> None:
        """Per row, ``entity`` and either ``so_head``, ``so_tail`` (dense) or ``hidden`` (sparse)."""
        for i, outputs in enumerate(zip(entity, *relation, strict=True)):
            self.row_done(i, *outputs)
        self.stage_done()

    def row_done(self, index: int, entity: np.ndarray, *relation: np.ndarray) -> None:
        """Row ``index`` ran: only its positive cells are kept (the dense maps can be freed)."""
        if self._cells is None:
            self._cells = [None] * len(self._rows)
        row, t = self._rows[index], self.threshold
        if self.relation_heads is None:
            so_head, so_tail = relation
            cells = extract_cells(entity, so_head, so_tail, row.text_start, row.text_end, t)
        else:
            (hidden,) = relation
            cells = extract_sparse_cells(entity, hidden, self.relation_heads, row.text_start, row.text_end, t)
        self._cells[index] = cells

    def stage_done(self) -> None:
        """Every row ran (the one stage)."""
        if self._cells is None or any(c is None for c in self._cells):
            raise RuntimeError("stage_done() before every row ran")

    def result(self) -> list[dict]:
        """One ``{"spo_list": [...]}`` per text, char offsets into the full text.

        Triples from overlapping windows merge (highest score kept). A triple whose subject or
        object touches a window edge inside the text may hold a cut entity: it is dropped when
        another window found an overlapping entity that is not cut (as UIE windows do).
        """
        found: list[list[dict]] = [[] for _ in self.texts]
        spans: list[list[tuple[int, int, Sequence[Span]]]] = [[] for _ in self.texts]
        for (i, offset, chunk), row, cells in zip(self._windows, self._rows, self._cells or [], strict=False):
            triples = decode_spo(cells, row.offsets, chunk, self.predicates)
            ents = {
                (t[f"{r}_start"], t[f"{r}_end"], t["score"]) for t in triples for r in ("subject", "object")
            }
            spans[i].append((offset, len(chunk), sorted(ents)))
            for spo in triples:
                for k in ("subject_start", "subject_end", "object_start", "object_end"):
                    spo[k] += offset
                found[i].append(spo)
        out = []
        for i, text in enumerate(self.texts):
            kept = {(a, b) for a, b, _ in merge_window_spans(spans[i], len(text))}
            merged: dict[tuple, dict] = {}
            for spo in found[i]:
                ends = ((spo["subject_start"], spo["subject_end"]), (spo["object_start"], spo["object_end"]))
                if not all(e in kept for e in ends):
                    continue
                key = tuple(spo[k] for k in _TRIPLE_KEY)
                if key not in merged or merged[key]["score"] < spo["score"]:
                    merged[key] = spo
            out.append({"spo_list": sorted(merged.values(), key=lambda t: tuple(t[k] for k in _TRIPLE_KEY))})
        return out
