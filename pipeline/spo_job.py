"""SPO extraction for one request: windows over long texts, one model stage, GPLinker decoding."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.spo_decode import GPCells, decode_spo, extract_cells
from pipeline.tokenizer import Encoded, IETokenizer
from pipeline.uie.spans import Span
from pipeline.windows import default_overlap, merge_window_spans, split_windows

_TRIPLE_KEY = ("subject_start", "subject_end", "predicate", "object_start", "object_end")


class SPOJob:
    """``next_rows`` once (one row per window), ``consume`` the three logit tensors, ``result``."""

    def __init__(
        self,
        texts: list[str],
        tokenizer: IETokenizer,
        predicates: list[str],
        max_seq_len: int = 256,
        threshold: float = 0.0,
        window_overlap: int | None = None,
    ):
        self.texts = texts
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
        self._cells: list[GPCells] | None = None

    def next_rows(self) -> list[Encoded]:
        return [] if self._cells is not None else list(self._rows)

    def consume(self, entity: list[np.ndarray], so_head: list[np.ndarray], so_tail: list[np.ndarray]) -> None:
        self._cells = [
            extract_cells(e, h, t, row.text_start, row.text_end, self.threshold)
            for row, e, h, t in zip(self._rows, entity, so_head, so_tail, strict=True)
        ]

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
