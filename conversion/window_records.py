"""Training rows cut like the service's windows over a long text, from DuIE-style records.

The service reads a text longer than its ``max_seq_len`` in overlapping windows that start and
end anywhere, even inside a sentence or an entity. Models trained only on whole short records
misread such windows (they never saw a row that starts mid-sentence, nor one as long as a
window). :func:`window_records` joins shuffled records into one stream and cuts it into rows of
``max_chars`` at a random phase; each row keeps the entities and triples lying wholly inside it.
"""

from __future__ import annotations

import random
from bisect import bisect_left


def _shifted(item: dict, keys: tuple[str, ...], delta: int) -> dict:
    return {**item, **{k: item[k] + delta for k in keys}}


def window_records(records: list[dict], rng: random.Random, max_chars: int) -> list[dict]:
    """Rows ``{"text", "entities", "spo_list"}`` of at most ``max_chars``, char offsets rebased.

    ``records`` hold ``text`` and ``spo_list`` (``subject_start`` / ``object_start``) and maybe
    ``entities`` (``start`` / ``end``, end exclusive).
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    order = list(records)
    rng.shuffle(order)
    parts: list[str] = []
    entities: list[dict] = []
    triples: list[tuple[int, int, dict]] = []  # (first char, end char, triple), stream offsets
    pos = 0
    for rec in order:
        entities += [_shifted(e, ("start", "end"), pos) for e in rec.get("entities", [])]
        for t in rec.get("spo_list", []):
            t = _shifted(t, ("subject_start", "object_start"), pos)
            s0, o0 = t["subject_start"], t["object_start"]
            lo = min(s0, o0)
            hi = max(s0 + len(t["subject"]), o0 + len(t["object"]))
            triples.append((lo, hi, t))
        parts.append(rec["text"])
        pos += len(rec["text"])
    stream = "".join(parts)
    entities.sort(key=lambda e: e["start"])
    triples.sort(key=lambda x: x[0])
    ent_starts = [e["start"] for e in entities]
    tri_starts = [lo for lo, _, _ in triples]
    rows = []
    start = rng.randrange(max_chars)
    while start < len(stream):
        end = min(start + max_chars, len(stream))
        ents = entities[bisect_left(ent_starts, start) : bisect_left(ent_starts, end)]
        spo = triples[bisect_left(tri_starts, start) : bisect_left(tri_starts, end)]
        rows.append(
            {
                "text": stream[start:end],
                "entities": [_shifted(e, ("start", "end"), -start) for e in ents if e["end"] <= end],
                "spo_list": [
                    _shifted(t, ("subject_start", "object_start"), -start) for _, hi, t in spo if hi <= end
                ],
            }
        )
        start = end
    return rows
