"""UIE training examples from demo records: (text, prompt, target spans), encoded with start/end labels.

Prompts mirror what Taskflow asks at inference: each root schema name (an entity type), and for
every span of a type that has children, ``span text + "的" + child`` (a relation). Types and
relations absent from the text become negative prompts with no target span. A negative relation
prompt whose predicate the text does hold for another subject (``B的国籍`` where only A has one)
is always kept: without it a model learns to answer by predicate alone, ignoring the subject.
So is one whose predicate is *confusable* with one the text holds (same subject and object
types, ``张三的丈夫`` where the text says ``妻子``), when the schema's predicate types are known.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from conversion.record_pieces import split_record
from pipeline.tokenizer import Encoded, IETokenizer
from pipeline.uie.schema import parse_schema

logger = logging.getLogger(__name__)

CharSpan = tuple[int, int]  # char offsets into the text, end exclusive


@dataclass(frozen=True)
class Example:
    """One prompt over one text, with the char spans the model should extract (maybe none)."""

    text: str
    prompt: str
    spans: tuple[CharSpan, ...]

    @property
    def positive(self) -> bool:
        return bool(self.spans)


@dataclass(frozen=True)
class LabeledRow:
    """An encoded example: the model row and the token indexes labelled as span starts / ends."""

    row: Encoded
    starts: tuple[int, ...]
    ends: tuple[int, ...]


@dataclass(frozen=True)
class SchemaSpec:
    """Root prompts (entity types) and the child names (predicates) of each root."""

    entity_types: tuple[str, ...]
    children: dict[str, tuple[str, ...]]
    confusable: dict[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def from_schema(
        cls, schema: str | list | dict, predicate_types: Mapping[str, tuple[str, str]] | None = None
    ) -> SchemaSpec:
        """Read a Taskflow-style schema (only its first two levels matter here).

        ``predicate_types`` maps a predicate to its ``(subject type, object type)``; predicates
        sharing both are confusable with each other.
        """
        roots = parse_schema(schema)
        types = dict(predicate_types or {})
        return cls(
            entity_types=tuple(n.prompt for n in roots),
            children={n.prompt: tuple(c.prompt for c in n.children) for n in roots if n.children},
            confusable={p: frozenset(q for q in types if types[q] == sig) for p, sig in types.items()},
        )

    def hard_predicates(self, in_text: Iterable[str]) -> set[str]:
        """The predicates held in a text and those confusable with them."""
        out: set[str] = set()
        for pred in in_text:
            out |= self.confusable.get(pred, frozenset({pred}))
        return out


def child_prompt(span_text: str, child: str) -> str:
    """Taskflow's Chinese child prompt."""
    return f"{span_text}的{child}"


def record_examples(
    record: dict,
    spec: SchemaSpec,
    rng: random.Random,
    neg_entity_keep: float = 1.0,
    neg_relation_keep: float = 1.0,
    hard_negatives: bool = True,
    ambiguous_repeat: int = 0,
) -> list[Example]:
    """All prompts of one record: positives always, negatives kept with the given probabilities.

    Entity prompts: one per schema entity type (target: every span of that type). Relation
    prompts: for each entity text whose type has children in the schema, one per child predicate
    (target: the objects of its mentions with that predicate; empty for a predicate it lacks).
    Negative relation prompts with a predicate the text holds for another subject, or one
    confusable with it (:meth:`SchemaSpec.hard_predicates`), are always kept when ``hard_negatives``.
    Where a text holds two or more subjects of one type, the prompt's subject must be told apart
    from the others: those relation rows are repeated ``ambiguous_repeat`` extra times.
    """
    text = record["text"]
    by_type: dict[str, set[CharSpan]] = {}
    for e in record.get("entities", []):
        by_type.setdefault(e["type"], set()).add((e["start"], e["end"]))
    objects: dict[tuple[CharSpan, str], set[CharSpan]] = {}
    for t in record.get("spo_list", []):
        subj = (t["subject_start"], t["subject_start"] + len(t["subject"]))
        obj = (t["object_start"], t["object_start"] + len(t["object"]))
        objects.setdefault((subj, t["predicate"]), set()).add(obj)

    hard = spec.hard_predicates(pred for _, pred in objects) if hard_negatives else set()
    out: list[Example] = []
    for etype in spec.entity_types:
        spans = tuple(sorted(by_type.get(etype, ())))
        if spans or rng.random() < neg_entity_keep:
            out.append(Example(text, etype, spans))
    for etype, preds in spec.children.items():
        # mentions with the same text share a prompt (as at inference): union their objects
        mentions: dict[str, list[CharSpan]] = {}
        for subj in sorted(by_type.get(etype, ())):
            mentions.setdefault(text[subj[0] : subj[1]], []).append(subj)
        copies = 1 + (ambiguous_repeat if len(mentions) > 1 else 0)
        for subj_text, subjs in mentions.items():
            for pred in preds:
                spans = tuple(sorted({o for s in subjs for o in objects.get((s, pred), ())}))
                if spans or pred in hard or rng.random() < neg_relation_keep:
                    out.extend([Example(text, child_prompt(subj_text, pred), spans)] * copies)
    return out


def build_examples(
    records: Iterable[dict],
    spec: SchemaSpec,
    rng: random.Random,
    max_chars: int,
    neg_entity_keep: float = 1.0,
    neg_relation_keep: float = 1.0,
    hard_negatives: bool = True,
    ambiguous_repeat: int = 0,
) -> list[Example]:
    """Examples of many records, long texts cut into pieces of at most ``max_chars`` first."""
    out: list[Example] = []
    for record in records:
        for piece in split_record(record, max_chars):
            out.extend(
                record_examples(
                    piece, spec, rng, neg_entity_keep, neg_relation_keep, hard_negatives, ambiguous_repeat
                )
            )
    return out


def token_bounds(row: Encoded, start: int, end: int) -> tuple[int, int] | None:
    """Token indexes (first, last) of the text char span [start, end), or None if truncated away."""
    first = last = None
    for i in range(row.text_start, row.text_end):
        a, b = row.offsets[i]
        if first is None and a <= start < b:
            first = i
        if a < end <= b:
            last = i
            break
    if first is None or last is None or last < first:
        return None
    return first, last


def _compose(prompt_row: Encoded, text_row: Encoded, max_len: int) -> Encoded:
    """The pair row ``[CLS] prompt [SEP] text [SEP]`` from two single rows, as ``encode_batch`` builds it."""
    cls_id, sep_id = prompt_row.input_ids[0], prompt_row.input_ids[-1]
    p_ids = prompt_row.input_ids[prompt_row.text_start : prompt_row.text_end]
    p_offs = prompt_row.offsets[prompt_row.text_start : prompt_row.text_end]
    budget = max(max_len - len(p_ids) - 3, 0)
    t_ids = text_row.input_ids[text_row.text_start : text_row.text_end][:budget]
    t_offs = text_row.offsets[text_row.text_start : text_row.text_end][:budget]
    ids = (cls_id, *p_ids, sep_id, *t_ids, sep_id)
    types = (0,) * (len(p_ids) + 2) + (1,) * (len(t_ids) + 1)
    offs = ((0, 0), *p_offs, (0, 0), *t_offs, (0, 0))
    return Encoded(ids, types, offs, len(p_ids) + 2, len(ids) - 1)


def encode_pairs(tokenizer: IETokenizer, texts: list[str], prompts: list[str], max_len: int) -> list[Encoded]:
    """``tokenizer.encode_batch(texts, prompts, max_len)``, tokenizing each distinct string once.

    Training asks ~30 prompts per text; the rows are composed from cached single encodings and
    the first rows are checked against ``encode_batch`` itself (ValueError if they differ).
    """
    uniq_t = list(dict.fromkeys(texts))
    uniq_p = list(dict.fromkeys(prompts))
    big = 1 << 30
    t_rows = dict(zip(uniq_t, tokenizer.encode_batch(uniq_t, None, big), strict=True))
    p_rows = dict(zip(uniq_p, tokenizer.encode_batch(uniq_p, None, big), strict=True))
    rows = [_compose(p_rows[p], t_rows[t], max_len) for t, p in zip(texts, prompts, strict=True)]
    n_check = min(len(rows), 64)
    if rows[:n_check] != tokenizer.encode_batch(texts[:n_check], prompts[:n_check], max_len):
        raise ValueError("composed rows differ from IETokenizer.encode_batch; the pair layout changed")
    return rows


def encode_examples(
    tokenizer: IETokenizer, examples: Sequence[Example], max_len: int
) -> tuple[list[LabeledRow], int]:
    """Encode examples as ``[CLS] prompt [SEP] text [SEP]`` rows with start/end token labels.

    Returns the rows and how many target spans were lost to truncation.
    """
    rows = encode_pairs(tokenizer, [e.text for e in examples], [e.prompt for e in examples], max_len)
    out: list[LabeledRow] = []
    lost = 0
    for ex, row in zip(examples, rows, strict=True):
        starts, ends = [], []
        for s, e in ex.spans:
            bounds = token_bounds(row, s, e)
            if bounds is None:
                lost += 1
                continue
            starts.append(bounds[0])
            ends.append(bounds[1])
        out.append(LabeledRow(row, tuple(sorted(set(starts))), tuple(sorted(set(ends)))))
    if lost:
        logger.warning("%d target spans lost to truncation at max_len=%d", lost, max_len)
    return out, lost
