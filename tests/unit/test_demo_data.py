"""Tests for the demo data generator."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from conversion.demo_data import ENTITY_TYPES, PREDICATES, generate, generate_dev, uie_schema, write_dataset
from pipeline.tokenizer import IETokenizer


@pytest.fixture(scope="module")
def data() -> tuple[list[dict], list[dict]]:
    return generate(seed=3, n_train=1500, n_test=300)


def test_counts_of_predicates_and_types() -> None:
    assert len(PREDICATES) >= 20
    assert len({p.name for p in PREDICATES}) == len(PREDICATES)
    assert len(ENTITY_TYPES) >= 8
    for p in PREDICATES:
        assert p.subject_type in ENTITY_TYPES and p.object_type in ENTITY_TYPES


def test_offsets_consistent(data: tuple[list[dict], list[dict]]) -> None:
    types = {p.name: (p.subject_type, p.object_type) for p in PREDICATES}
    for rec in data[0] + data[1]:
        text = rec["text"]
        assert rec["spo_list"]
        spans = {(e["start"], e["end"], e["type"]) for e in rec["entities"]}
        assert len(spans) == len(rec["entities"])
        for e in rec["entities"]:
            assert text[e["start"] : e["end"]] == e["text"]
            assert text.count(e["text"]) == 1  # no unlabelled repeat of an entity string
        for spo in rec["spo_list"]:
            s0, o0 = spo["subject_start"], spo["object_start"]
            assert text[s0 : s0 + len(spo["subject"])] == spo["subject"]
            assert text[o0 : o0 + len(spo["object"])] == spo["object"]
            assert (spo["subject_type"], spo["object_type"]) == types[spo["predicate"]]
            assert (s0, s0 + len(spo["subject"]), spo["subject_type"]) in spans
            assert (o0, o0 + len(spo["object"]), spo["object_type"]) in spans


def test_disjoint_name_pools(data: tuple[list[dict], list[dict]]) -> None:
    train, test = data
    train_names = {e["text"] for r in train for e in r["entities"]}
    test_names = {e["text"] for r in test for e in r["entities"]}
    assert test_names and not (test_names & train_names)


def test_dev_split_unseen_names_and_apart_from_test(data: tuple[list[dict], list[dict]]) -> None:
    train, test = data
    dev = generate_dev(seed=3, n_dev=300)
    assert dev == generate_dev(seed=3, n_dev=300) and dev != generate_dev(seed=4, n_dev=300)
    train_names = {e["text"] for r in train for e in r["entities"]}
    dev_names = {e["text"] for r in dev for e in r["entities"]}
    assert dev_names and not (dev_names & train_names)
    assert not {r["text"] for r in dev} & {r["text"] for r in test}
    assert {s["predicate"] for r in dev for s in r["spo_list"]} == {p.name for p in PREDICATES}


def test_coverage_and_lengths(data: tuple[list[dict], list[dict]]) -> None:
    train, _ = data
    preds = Counter(s["predicate"] for r in train for s in r["spo_list"])
    assert set(preds) == {p.name for p in PREDICATES}
    assert {e["type"] for r in train for e in r["entities"]} == set(ENTITY_TYPES)
    lengths = [len(r["text"]) for r in train]
    long = sum(150 <= n <= 400 for n in lengths) / len(lengths)
    assert 0.02 < long < 0.1
    assert max(lengths) <= 400
    assert sum(15 <= n <= 80 for n in lengths) / len(lengths) > 0.75
    assert any(len(r["spo_list"]) >= 3 and len({s["subject"] for s in r["spo_list"]}) == 1 for r in train)
    assert any(any(c.isascii() and c.isalpha() for c in r["text"]) for r in train)


def test_deterministic_and_seed_dependent() -> None:
    a = generate(seed=7, n_train=200, n_test=50)
    assert a == generate(seed=7, n_train=200, n_test=50)
    assert a != generate(seed=8, n_train=200, n_test=50)


def test_write_dataset_idempotent_and_vocab_covers(tmp_path) -> None:
    d1 = write_dataset(tmp_path / "a", seed=1, n_train=300, n_test=50)
    d2 = write_dataset(tmp_path / "b", seed=1, n_train=300, n_test=50)
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl", "schema.json", "vocab.txt"):
        assert (d1 / name).read_bytes() == (d2 / name).read_bytes()
    schema = json.loads((d1 / "schema.json").read_text(encoding="utf-8"))
    assert len(schema["predicates"]) == len(PREDICATES)
    tok = IETokenizer.from_file(d1 / "vocab.txt")
    rows = [json.loads(line) for line in (d1 / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    extra = [*ENTITY_TYPES, *(p.name for p in PREDICATES), "的", "Hello 2024"]
    for text in [r["text"] for r in rows] + extra:
        assert tok.unk_id not in tok.encode(text).input_ids


def test_uie_schema_covers_types() -> None:
    schema = uie_schema()
    plain = {x for x in schema if isinstance(x, str)}
    rel = {k: v for x in schema if isinstance(x, dict) for k, v in x.items()}
    assert plain | set(rel) == set(ENTITY_TYPES)
    assert sorted(p for v in rel.values() for p in v) == sorted(p.name for p in PREDICATES)
