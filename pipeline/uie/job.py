"""The multi-stage UIE extraction of one request, driven row batch by row batch by the model op.

Stage 1 asks every root schema name of every text; each later stage asks every child name of
every span found in the stage before (prompt ``span + "的" + child``, or ``child + " of " + span``
for an English schema), as Taskflow's ``_multi_stage_predict`` does, but with all nodes of one
depth in one stage and each distinct (text, prompt) asked once. Each text is tokenized once;
long texts are read in overlapping windows cut in token space (``window_overlap`` counts tokens,
one per Chinese character), so a window never splits a token. A child prompt of a long text is
asked only of the windows that hold its parent span (``anchor_children``; Taskflow asks every
chunk, and a chunk without the subject can only answer with another subject's object). Between
stages only decoded spans are kept. Usage::

    job = UIEJob(texts, parse_schema(schema), tokenizer)
    while rows := job.next_rows():
        start_prob, end_prob = model(rows)
        job.consume(start_prob, end_prob)
    results = job.result()
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.tokenizer import Encoded, IETokenizer
from pipeline.uie.schema import SchemaNode, dbc2sbc, parse_schema
from pipeline.uie.sentences import sentence_bounds
from pipeline.uie.spans import Span, decode_row
from pipeline.windows import (
    Pieces,
    TextPieces,
    anchored_windows,
    default_overlap,
    merge_window_spans,
    pair_row,
    window_bounds,
)

logger = logging.getLogger(__name__)

SPECIAL_TOKENS_PER_ROW = 3  # [CLS] prompt [SEP] text [SEP]
_NO_LIMIT = 1 << 30  # max_len that never truncates


@dataclass
class _Item:
    text: str
    start: int | None
    end: int | None
    probability: float
    relations: dict[str, list[_Item]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text}
        if self.start is not None:
            out["start"] = self.start
            out["end"] = self.end
        out["probability"] = self.probability
        if self.relations:
            out["relations"] = {k: [i.to_dict() for i in v] for k, v in self.relations.items()}
        return out


@dataclass
class _Query:
    """One (text, schema node, prompt) question; ``parent`` is the span it hangs under."""

    text_idx: int
    node: SchemaNode
    prompt: str
    parent: _Item | None


@dataclass
class _Answer:
    """What the model said for one (text, prompt): merged text spans and a classification vote."""

    windows: list[tuple[int, int, list[Span]]] = field(default_factory=list)
    labels: list[tuple[str, float]] = field(default_factory=list)  # best label per window


@dataclass
class _RowMeta:
    key: tuple[int, str]
    offset: int
    length: int


def child_prompt(parent_text: str, node: SchemaNode, schema_lang: str = "ch") -> str:
    """The prompt asking for ``node`` under a parent span, as Taskflow builds it (half-width)."""
    if schema_lang == "en":
        if node.is_classification:
            prefix, options = node.cls_parts()
            return dbc2sbc(f"{prefix} of {parent_text} {options}")
        return dbc2sbc(f"{node.name} of {parent_text}")
    return dbc2sbc(parent_text + "的" + node.name)


class UIEJob:
    """Stateful multi-stage UIE extraction for several texts and one schema.

    ``schema`` is a parsed tree (:func:`parse_schema`) or a raw schema, parsed here.
    """

    def __init__(
        self,
        texts: list[str],
        schema: list[SchemaNode] | str | list | dict,
        tokenizer: IETokenizer,
        max_seq_len: int = 512,
        position_prob: float = 0.5,
        window_overlap: int | None = None,
        schema_lang: str = "ch",
        anchor_children: bool = True,
        split_sentence: bool = False,
    ):
        if not (isinstance(schema, list) and schema and all(isinstance(n, SchemaNode) for n in schema)):
            schema = parse_schema(schema)  # a raw schema; raises SchemaError when empty or invalid
        if schema_lang not in ("ch", "en"):
            raise ValueError(f"schema_lang must be 'ch' or 'en', got {schema_lang!r}")
        if not 0.0 <= position_prob < 1.0:
            raise ValueError(f"position_prob must be in [0, 1), got {position_prob}")
        if max_seq_len < SPECIAL_TOKENS_PER_ROW + 2:
            raise ValueError(f"max_seq_len too small: {max_seq_len}")
        if window_overlap is not None and window_overlap < 0:
            raise ValueError(f"window_overlap must be >= 0, got {window_overlap}")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text {i} is {type(t).__name__}, not str")
        self.texts = list(texts)
        self.schema = schema
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        self.position_prob = position_prob
        self.window_overlap = window_overlap
        self.schema_lang = schema_lang
        self.anchor_children = anchor_children
        self.split_sentence = split_sentence
        self.stages_run = 0
        self.rows_run = 0
        self._roots: list[dict[str, list[_Item]]] = [{} for _ in self.texts]
        self._queries: list[_Query] = [
            _Query(t, node, node.prompt, None)
            for node in schema
            for t, text in enumerate(self.texts)
            if text.strip()
        ]
        self._rows: list[Encoded] | None = None
        self._handed_out = False  # next_rows gave the current stage's rows: consume may follow
        self._meta: list[_RowMeta] = []
        self._prompts: dict[str, Pieces] = {}
        self._texts: dict[int, TextPieces] = {}
        self._sentence_tokens: dict[int, list[tuple[int, int]]] = {}
        live = sorted({q.text_idx for q in self._queries})
        encoded = tokenizer.encode_batch([self.texts[i] for i in live], max_len=_NO_LIMIT)
        self._texts = {i: TextPieces(row) for i, row in zip(live, encoded, strict=True)}
        if self._queries:
            # The first stage's rows are built here, where the job is made (the tokenize op), so
            # that the engine's lane only builds the later stages, which need the earlier answers.
            self._prepare()

    @property
    def done(self) -> bool:
        return not self._queries

    # -- building rows -------------------------------------------------------------------------

    def _prompt_pieces(self, prompts: list[str]) -> None:
        todo = [p for p in dict.fromkeys(prompts) if p not in self._prompts]
        for prompt, row in zip(todo, self.tokenizer.encode_batch(todo, max_len=_NO_LIMIT), strict=True):
            self._prompts[prompt] = Pieces.of(row)

    def _parent_spans(self) -> dict[tuple[int, str], list[tuple[int, int]] | None]:
        """Per (text, prompt): the char spans of the parent mentions it asks about, or None (ask
        every window) for a root prompt or a parent without offsets."""
        out: dict[tuple[int, str], list[tuple[int, int]] | None] = {}
        for q in self._queries:
            key = (q.text_idx, q.prompt)
            parent = q.parent
            if parent is None or parent.start is None or parent.end is None:
                out[key] = None
            elif key not in out:
                out[key] = [(parent.start, parent.end)]
            elif out[key] is not None:
                out[key].append((parent.start, parent.end))
        return out

    def _sentences(self, text_idx: int) -> list[tuple[int, int]]:
        """Token ranges ``[first, last + 1)`` of the text's sentences (one range: the whole text)."""
        tp = self._texts[text_idx]
        if not self.split_sentence:
            return [(0, len(tp.ids))]
        cached = self._sentence_tokens.get(text_idx)
        if cached is None:
            spans = (tp.token_span(a, b) for a, b in sentence_bounds(self.texts[text_idx]))
            cached = self._sentence_tokens[text_idx] = [s for s in spans if s is not None]
        return cached

    def _windows(self, text_idx: int, budget: int, stride: int) -> list[tuple[int, int]]:
        """Token windows of at most ``budget`` tokens, ``stride`` apart, within each sentence."""
        return [
            (first + a, first + b)
            for first, last in self._sentences(text_idx)
            for a, b in window_bounds(last - first, budget, stride)
        ]

    def _prepare(self) -> None:
        keys = list(dict.fromkeys((q.text_idx, q.prompt) for q in self._queries))
        parents = self._parent_spans() if self.anchor_children else {}
        self._prompt_pieces([prompt for _, prompt in keys])
        rows: list[Encoded] = []
        meta: list[_RowMeta] = []
        for key in keys:
            text_idx, prompt = key
            pp = self._prompts[prompt]
            budget = self.max_seq_len - SPECIAL_TOKENS_PER_ROW - len(pp.ids)
            if budget < 1:
                logger.warning("prompt of %d tokens leaves no room for text; skipped", len(pp.ids))
                continue
            tp = self._texts[text_idx]
            overlap = default_overlap(budget) if self.window_overlap is None else self.window_overlap
            bounds = self._windows(text_idx, budget, max(1, budget - overlap))
            if len(bounds) > 1 and parents.get(key):
                anchors = [tp.token_span(start, end) for start, end in parents[key]]
                if all(anchors):  # a parent no token covers: ask every window
                    bounds = anchored_windows(bounds, anchors, budget, len(tp.ids))
            n_tokens = len(tp.ids)
            for a, b in bounds:
                # char extent of the window; windows at the first / last token reach the text's ends
                lo = 0 if a == 0 else tp.offsets[a][0]
                hi = len(self.texts[text_idx]) if b == n_tokens else tp.offsets[b - 1][1]
                rows.append(pair_row(self.tokenizer, pp, tp, a, b, lo))
                meta.append(_RowMeta(key, lo, hi - lo))
        self._rows, self._meta = rows, meta

    def next_rows(self) -> list[Encoded]:
        """The rows still to run for the current stage; ``[]`` when the job is done."""
        if self.done:
            return []
        if self._rows is None:
            self._prepare()
        if not self._rows:  # every prompt of this stage was skipped
            self._finish_stage({})
            return self.next_rows()
        self._handed_out = True
        self._outputs: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(self._rows)
        return list(self._rows)

    # -- reading model outputs ---------------------------------------------------------------

    def consume(self, start_prob: Sequence[np.ndarray], end_prob: Sequence[np.ndarray]) -> None:
        """Decode the model outputs for the rows of the last :meth:`next_rows` and advance a stage."""
        if self._rows is None or not self._handed_out:
            raise RuntimeError("consume() called without pending rows; call next_rows() first")
        if len(start_prob) != len(self._rows) or len(end_prob) != len(self._rows):
            raise ValueError(
                f"expected {len(self._rows)} probability rows, got {len(start_prob)}/{len(end_prob)}"
            )
        for i, (start, end) in enumerate(zip(start_prob, end_prob, strict=True)):
            self.row_done(i, start, end)
        self.stage_done()

    def row_done(self, index: int, start_prob: np.ndarray, end_prob: np.ndarray) -> None:
        """Row ``index`` of the last :meth:`next_rows` ran (the runner's call, row by row)."""
        if self._rows is None or not self._handed_out:
            raise RuntimeError("row_done() called without pending rows; call next_rows() first")
        n = len(self._rows[index])
        self._outputs[index] = (start_prob[:n].copy(), end_prob[:n].copy())

    def stage_done(self) -> None:
        """Every row of the last :meth:`next_rows` ran: decode them and advance a stage."""
        missing = [i for i, out in enumerate(self._outputs) if out is None]
        if self._rows is None or len(self._outputs) != len(self._rows) or missing:
            raise RuntimeError(f"stage_done() before every row ran (missing {missing[:5]})")
        start_prob, end_prob = zip(*self._outputs, strict=True) if self._outputs else ((), ())
        labels_of = {(q.text_idx, q.prompt): q.node.labels for q in self._queries}
        answers: dict[tuple[int, str], _Answer] = {}
        for i, (row, m) in enumerate(zip(self._rows, self._meta, strict=True)):
            spans = decode_row(row, start_prob[i], end_prob[i], self.position_prob)
            ans = answers.setdefault(m.key, _Answer())
            ans.windows.append((m.offset, m.length, spans.text))
            labels = labels_of[m.key]
            if labels and spans.prompt:
                prompt = m.key[1]
                found = [(prompt[s:e], p) for s, e, p in spans.prompt if prompt[s:e] in labels]
                if found:
                    ans.labels.append(max(found, key=lambda lp: lp[1]))
        self.rows_run += len(self._rows)
        self._finish_stage(answers)

    def _finish_stage(self, answers: dict[tuple[int, str], _Answer]) -> None:
        self.stages_run += 1
        merged: dict[tuple[int, str], list[Span]] = {}
        next_queries: list[_Query] = []
        for q in self._queries:
            key = (q.text_idx, q.prompt)
            ans = answers.get(key)
            if ans is None:
                items: list[_Item] = []
            elif q.node.is_classification:
                items = _vote(ans.labels)
            else:
                if key not in merged:
                    merged[key] = merge_window_spans(ans.windows, len(self.texts[q.text_idx]))
                text = self.texts[q.text_idx]
                items = [_Item(text[s:e], s, e, p) for s, e, p in merged[key]]
            if not items:
                continue
            target = self._roots[q.text_idx] if q.parent is None else q.parent.relations
            target.setdefault(q.node.name, []).extend(items)
            for item in items:
                for child in q.node.children:
                    prompt = child_prompt(item.text, child, self.schema_lang)
                    next_queries.append(_Query(q.text_idx, child, prompt, item))
        self._queries = next_queries
        self._rows, self._meta, self._handed_out = None, [], False
        for pieces in self._texts.values():
            pieces.clear()

    # -- results -------------------------------------------------------------------------------

    def result(self) -> list[dict]:
        """One Taskflow-format dict per text (``{}`` when nothing was found)."""
        if not self.done:
            raise RuntimeError("the job has rows left to run")
        return [{k: [i.to_dict() for i in v] for k, v in roots.items()} for roots in self._roots]


def _vote(labels: list[tuple[str, float]]) -> list[_Item]:
    """Taskflow's window vote for classification: most windows, then highest summed probability."""
    if not labels:
        return []
    tally: dict[str, list[float]] = {}
    for label, p in labels:
        tally.setdefault(label, []).append(p)
    label, probs = max(tally.items(), key=lambda kv: (len(kv[1]), sum(kv[1])))
    return [_Item(label, None, None, sum(probs) / len(probs))]
