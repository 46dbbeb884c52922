"""Exact-match micro precision / recall / F1 of extraction results against DuIE-style gold records."""

from __future__ import annotations

from collections.abc import Sequence


def uie_gold_facts(record: dict) -> set[tuple]:
    """Entities ``("E", type, start, end)`` and relations ``("R", s_start, s_end, pred, o_start, o_end)``."""
    facts: set[tuple] = {("E", e["type"], e["start"], e["end"]) for e in record.get("entities", [])}
    for t in record.get("spo_list", []):
        s0, o0 = t["subject_start"], t["object_start"]
        facts.add(("R", s0, s0 + len(t["subject"]), t["predicate"], o0, o0 + len(t["object"])))
    return facts


def uie_predicted_facts(result: dict) -> set[tuple]:
    """The same facts read from one Taskflow-format UIE result (root spans and their relations)."""
    facts: set[tuple] = set()
    for etype, items in result.items():
        for it in items:
            if "start" not in it:
                continue
            facts.add(("E", etype, it["start"], it["end"]))
            for pred, objs in it.get("relations", {}).items():
                for o in objs:
                    if "start" in o:
                        facts.add(("R", it["start"], it["end"], pred, o["start"], o["end"]))
    return facts


def spo_gold_facts(record: dict) -> set[tuple]:
    """Triples ``(s_start, s_end, predicate, o_start, o_end)`` of a gold record."""
    return {
        (
            t["subject_start"],
            t["subject_start"] + len(t["subject"]),
            t["predicate"],
            t["object_start"],
            t["object_start"] + len(t["object"]),
        )
        for t in record.get("spo_list", [])
    }


def spo_predicted_facts(result: dict) -> set[tuple]:
    """The same triples read from one ``{"spo_list": [...]}`` result."""
    return {
        (s["subject_start"], s["subject_end"], s["predicate"], s["object_start"], s["object_end"])
        for s in result.get("spo_list", [])
    }


def micro_prf(gold: Sequence[set], pred: Sequence[set]) -> dict[str, float]:
    """Exact-match micro precision, recall and F1 over per-text fact sets."""
    tp = sum(len(g & p) for g, p in zip(gold, pred, strict=True))
    n_pred = sum(len(p) for p in pred)
    n_gold = sum(len(g) for g in gold)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
