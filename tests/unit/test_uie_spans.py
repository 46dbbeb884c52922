"""UIE span decoding: thresholding, Taskflow's start/end pairing, prompt/text split, char offsets."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.tokenizer import IETokenizer, build_vocab
from pipeline.uie.spans import decode_row, get_bool_ids, pair_spans


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> IETokenizer:
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    build_vocab(["人物张三用苹果手机情感倾向[正向,负向]的出生地北京 apple"], path)
    with path.open("a", encoding="utf-8") as f:
        f.write("apple\n")  # one multi-character token
    return IETokenizer.from_file(path)


def probs_for(row, starts: dict[int, float], ends: dict[int, float], pad: int = 0):
    sp = np.zeros(len(row) + pad, dtype=np.float32)
    ep = np.zeros(len(row) + pad, dtype=np.float32)
    for i, p in starts.items():
        sp[i] = p
    for i, p in ends.items():
        ep[i] = p
    return sp, ep


def test_get_bool_ids_is_strictly_greater():
    probs = np.array([0.5, 0.51, 0.2, 0.9, 0.5000001], dtype=np.float32)
    got = get_bool_ids(probs, 0.5)
    assert [i for i, _ in got] == [1, 3, 4]
    assert got[1][1] == pytest.approx(0.9)
    assert get_bool_ids(np.array([0.7, 0.7]), 0.7) == []


@pytest.mark.parametrize(
    ("starts", "ends", "expected"),
    [
        ([1], [3], [(1, 3)]),  # simple
        ([4, 1], [6, 3], [(1, 3), (4, 6)]),  # two spans, unsorted input
        ([2], [2], [(2, 2)]),  # single-token span
        ([1, 2], [3, 4], [(2, 3)]),  # nested starts: the end keeps the nearest start; end 4 is left alone
        ([1, 2, 6], [4, 8], [(2, 4), (6, 8)]),  # overlapping starts
        ([5], [2, 7], [(5, 7)]),  # an end before any start is skipped
        ([5], [2], []),  # only an end before the start
        ([2, 5], [5, 8], [(5, 5)]),  # equal positions pair and both advance (Taskflow overwrites (2, 5))
        ([1], [3, 4], [(1, 3)]),  # a start is used once
        ([], [3], []),
    ],
)
def test_pair_spans_follows_taskflow(starts, ends, expected):
    assert pair_spans(starts, ends) == expected


@given(st.sets(st.integers(0, 40)), st.sets(st.integers(0, 40)))
def test_pair_spans_invariants(starts, ends):
    spans = pair_spans(list(starts), list(ends))
    assert all(s <= e and s in starts and e in ends for s, e in spans)
    assert len({s for s, _ in spans}) == len(spans) == len({e for _, e in spans})
    if starts and ends and min(starts) <= max(ends):
        assert spans  # some start precedes some end: at least one span


def test_text_span_offsets_and_probability(tok):
    row = tok.encode("张三用苹果手机", prompt="人物")
    ts = row.text_start
    sp, ep = probs_for(row, {ts: 0.9, ts + 3: 0.7}, {ts + 1: 0.8, ts + 6: 0.95}, pad=4)
    out = decode_row(row, sp, ep, 0.5)
    assert [(s, e) for s, e, _ in out.text] == [(0, 2), (3, 7)]
    assert out.text[0][2] == float(np.float32(0.9)) * float(np.float32(0.8))
    assert out.prompt == []


def test_multichar_token_offsets(tok):
    row = tok.encode("张三用apple手机", prompt="人物")
    ts = row.text_start
    pieces = row.offsets[ts : row.text_end]
    assert (3, 8) in pieces  # "apple" is one token of 5 characters
    apple = ts + pieces.index((3, 8))
    sp, ep = probs_for(row, {apple: 0.9}, {apple + 2: 0.9})
    out = decode_row(row, sp, ep, 0.5)
    assert [(s, e) for s, e, _ in out.text] == [(3, 10)]
    sp, ep = probs_for(row, {apple: 0.9}, {apple: 0.9})
    assert [(s, e) for s, e, _ in decode_row(row, sp, ep, 0.5).text] == [(3, 8)]


def test_prompt_spans_and_cross_spans(tok):
    prompt = "情感倾向[正向,负向]"
    row = tok.encode("张三用苹果手机", prompt=prompt)
    # prompt tokens: 1 .. text_start - 2; "正向" are prompt chars 5..7 -> tokens 6, 7
    assert row.offsets[6] == (5, 6)
    sp, ep = probs_for(row, {6: 0.9}, {7: 0.8})
    out = decode_row(row, sp, ep, 0.5)
    assert out.text == []
    assert [(s, e) for s, e, _ in out.prompt] == [(5, 7)]
    assert prompt[5:7] == "正向"
    # begins in the prompt, ends in the text: dropped
    ts = row.text_start
    sp, ep = probs_for(row, {2: 0.9}, {ts + 1: 0.9})
    out = decode_row(row, sp, ep, 0.5)
    assert out.text == [] and out.prompt == []


def test_special_tokens_and_padding_are_never_boundaries(tok):
    row = tok.encode("张三用苹果手机", prompt="人物")
    ts, te = row.text_start, row.text_end
    n = len(row)
    sp, ep = probs_for(row, {0: 0.99, ts - 1: 0.99, te: 0.99}, {0: 0.99, ts - 1: 0.99, te: 0.99}, pad=3)
    sp[n:] = 0.99
    ep[n:] = 0.99
    out = decode_row(row, sp, ep, 0.5)
    assert out.text == [] and out.prompt == []


def test_threshold_applies_to_both_ends(tok):
    row = tok.encode("张三用苹果手机", prompt="人物")
    ts = row.text_start
    sp, ep = probs_for(row, {ts: 0.6}, {ts + 1: 0.9})
    assert len(decode_row(row, sp, ep, 0.5).text) == 1
    assert decode_row(row, sp, ep, 0.6).text == []  # equal to the threshold is not enough


def test_short_probability_vector_is_an_error(tok):
    row = tok.encode("张三", prompt="人物")
    with pytest.raises(ValueError, match="probability vectors"):
        decode_row(row, np.zeros(len(row) - 1), np.zeros(len(row)), 0.5)


def test_single_segment_row(tok):
    row = tok.encode("张三用苹果手机")
    sp, ep = probs_for(row, {1: 0.9}, {2: 0.9})
    out = decode_row(row, sp, ep, 0.5)
    assert [(s, e) for s, e, _ in out.text] == [(0, 2)]
