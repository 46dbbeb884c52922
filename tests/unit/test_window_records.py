"""conversion/window_records.py: window-like training rows keep exactly the facts inside them."""

from __future__ import annotations

import random

import pytest

from conversion.demo_data import generate
from conversion.window_records import window_records


@pytest.mark.parametrize("max_chars", [7, 30, 62, 500])
def test_rows_cover_the_records_and_keep_exactly_the_whole_facts(max_chars):
    records, _ = generate(seed=3, n_train=60, n_test=1)
    rows = window_records(records, random.Random(max_chars), max_chars)
    assert all(0 < len(r["text"]) <= max_chars for r in rows)
    covered = sum(len(r["text"]) for r in rows)  # all but the random first cut's prefix
    assert sum(len(r["text"]) for r in records) - max_chars < covered <= sum(len(r["text"]) for r in records)
    total_entities = sum(len(r["entities"]) for r in records)
    kept_entities = 0
    for row in rows:
        text = row["text"]
        for e in row["entities"]:
            assert 0 <= e["start"] < e["end"] <= len(text) and text[e["start"] : e["end"]] == e["text"]
        for t in row["spo_list"]:
            assert text[t["subject_start"] :].startswith(t["subject"])
            assert text[t["object_start"] :].startswith(t["object"])
        kept_entities += len(row["entities"])
    # only entities cut by a row edge or before the random first cut are missing
    assert kept_entities <= total_entities
    if max_chars >= 62:
        assert kept_entities >= 0.8 * total_entities


def test_the_first_cut_is_random_and_rows_change_per_call():
    records, _ = generate(seed=4, n_train=40, n_test=1)
    rng = random.Random(0)
    first, second = window_records(records, rng, 50), window_records(records, rng, 50)
    assert [r["text"] for r in first] != [r["text"] for r in second]


def test_bad_size_is_refused():
    with pytest.raises(ValueError, match="max_chars"):
        window_records([], random.Random(0), 0)
