"""Cutting DuIE-style records into smaller records, offsets re-based.

A record is ``{"text", "entities": [{text, type, start, end}], "spo_list": [{subject,
subject_start, object, object_start, ...}]}`` (char offsets, end exclusive). A piece keeps the
entities and triples lying wholly inside it; the others are dropped from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from pipeline.uie.sentences import sentence_bounds


def _inside(start: int, end: int, lo: int, hi: int) -> bool:
    return lo <= start and end <= hi


def _cut_points(record: dict, max_chars: int) -> list[int]:
    """Chunk boundaries: after sentence ends where possible, never inside an entity."""
    text = record["text"]
    ents = [(e["start"], e["end"]) for e in record.get("entities", [])]

    def inside_entity(pos: int) -> bool:
        return any(s < pos < e for s, e in ents)

    cuts = [0]
    while len(text) - cuts[-1] > max_chars:
        lo, hi = cuts[-1], cuts[-1] + max_chars
        best = max((i + 1 for i in range(lo, hi) if text[i] in "。！？；"), default=None)
        if best is None or best <= lo:
            best = next((p for p in range(hi, lo, -1) if not inside_entity(p)), hi)
        cuts.append(best)
    cuts.append(len(text))
    return cuts


def _split_at(record: dict, cuts: Sequence[int]) -> list[dict]:
    """Pieces ``text[cuts[i]:cuts[i + 1]]`` with the entities and triples lying wholly inside each."""
    text = record["text"]
    pieces = []
    for lo, hi in pairwise(cuts):
        ents = [
            {**e, "start": e["start"] - lo, "end": e["end"] - lo}
            for e in record.get("entities", [])
            if _inside(e["start"], e["end"], lo, hi)
        ]
        spo = []
        for t in record.get("spo_list", []):
            s0, o0 = t["subject_start"], t["object_start"]
            if _inside(s0, s0 + len(t["subject"]), lo, hi) and _inside(o0, o0 + len(t["object"]), lo, hi):
                spo.append({**t, "subject_start": s0 - lo, "object_start": o0 - lo})
        pieces.append({"text": text[lo:hi], "entities": ents, "spo_list": spo})
    return pieces


def split_record(record: dict, max_chars: int) -> list[dict]:
    """Cut a long record into records of at most ``max_chars`` characters, offsets re-based.

    Entities and triples that do not fit wholly inside one piece are dropped from it.
    """
    if len(record["text"]) <= max_chars:
        return [record]
    return _split_at(record, _cut_points(record, max_chars))


def split_sentences(record: dict) -> list[dict]:
    """The record's sentences (:func:`pipeline.uie.sentences.sentence_bounds`) as records, offsets
    re-based, as the service reads a text with ``split_sentence``; facts across sentences are dropped."""
    bounds = sentence_bounds(record["text"])
    if len(bounds) < 2:
        return [record]
    return _split_at(record, [0, *(end for _, end in bounds)])
