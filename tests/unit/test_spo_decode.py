"""Tests for the pure GPLinker decoder."""

from __future__ import annotations

import numpy as np

from pipeline.spo_decode import GPCells, decode_spo, decode_spo_dense, extract_cells
from pipeline.tokenizer import IETokenizer, build_vocab

PREDS = ["出生地", "毕业院校", "作者"]
NEG = -1e4


def _arrays(length: int, p: int = len(PREDS)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.full((2, length, length), -5.0, np.float32),
        np.full((p, length, length), -5.0, np.float32),
        np.full((p, length, length), -5.0, np.float32),
    )


def _char_offsets(text: str) -> list[tuple[int, int]]:
    """[CLS] + one token per char + [SEP] (like the tokenizer for Chinese text)."""
    return [(0, 0), *((i, i + 1) for i in range(len(text))), (0, 0)]


def _link(ent, head, tail, s: tuple[int, int], o: tuple[int, int], p: int, score: float = 3.0) -> None:
    ent[0, s[0], s[1]] = score
    ent[1, o[0], o[1]] = score
    head[p, s[0], o[0]] = score
    tail[p, s[1], o[1]] = score


def _decode(text: str, ent, head, tail, offsets=None) -> list[dict]:
    offsets = offsets or _char_offsets(text)
    cells = extract_cells(ent, head, tail, 1, len(offsets) - 1)
    return decode_spo(cells, offsets, text, PREDS)


def test_one_triple() -> None:
    text = "张伟出生于杭州。"  # tokens: 1..8
    ent, head, tail = _arrays(10)
    _link(ent, head, tail, (1, 2), (6, 7), 0, score=2.0)
    head[0, 1, 6] = 1.0  # the smallest of the four logits sets the score
    out = _decode(text, ent, head, tail)
    assert out == [
        {
            "subject": "张伟",
            "subject_start": 0,
            "subject_end": 2,
            "predicate": "出生地",
            "object": "杭州",
            "object_start": 5,
            "object_end": 7,
            "score": round(1 / (1 + np.exp(-1.0)), 6),
        }
    ]


def test_two_triples_sharing_a_subject() -> None:
    text = "张伟，杭州人，毕业于北辰大学。"
    ent, head, tail = _arrays(len(text) + 2)
    _link(ent, head, tail, (1, 2), (4, 5), 0)
    _link(ent, head, tail, (1, 2), (11, 14), 1)
    out = _decode(text, ent, head, tail)
    assert [(r["subject"], r["predicate"], r["object"]) for r in out] == [
        ("张伟", "出生地", "杭州"),
        ("张伟", "毕业院校", "北辰大学"),
    ]


def test_nested_entities_and_crossed_links() -> None:
    # "北辰大学" (object) nests "北辰" (another object); heads alone would link both,
    # the tail map decides which span the predicate belongs to
    text = "张伟毕业于北辰大学"
    ent, head, tail = _arrays(len(text) + 2)
    _link(ent, head, tail, (1, 2), (6, 9), 1)
    ent[1, 6, 7] = 2.0  # nested object "北辰" with no tail link
    out = _decode(text, ent, head, tail)
    assert [(r["object"], r["object_start"], r["object_end"]) for r in out] == [("北辰大学", 5, 9)]
    tail[0, 2, 7] = 2.0  # the head cell of predicate 0 is missing: still nothing for "北辰"
    assert len(_decode(text, ent, head, tail)) == 1


def test_head_without_tail_gives_nothing() -> None:
    text = "张伟出生于杭州。"
    ent, head, tail = _arrays(10)
    _link(ent, head, tail, (1, 2), (6, 7), 0)
    tail[0, 2, 7] = -1.0
    assert _decode(text, ent, head, tail) == []
    tail[0, 2, 7] = 1.0
    tail[1, 2, 7] = 1.0  # a tail of another predicate does not pair with head of predicate 0
    head[0, 1, 6] = -1.0
    head[2, 1, 6] = 1.0
    assert _decode(text, ent, head, tail) == []


def test_special_and_padding_cells_ignored() -> None:
    text = "张伟出生于杭州"  # 7 tokens: [CLS]=0, text 1..7, [SEP]=8, padding 9..11
    ent, head, tail = _arrays(12)
    _link(ent, head, tail, (1, 2), (6, 7), 0)
    for i, j in ((0, 0), (0, 2), (8, 8), (6, 8), (9, 10), (10, 11)):
        ent[:, i, j] = 9.0
        head[:, i, j] = 9.0
        tail[:, i, j] = 9.0
    cells = extract_cells(ent, head, tail, 1, 8)
    assert cells.subjects.tolist() == [[1, 2]]
    assert cells.objects.tolist() == [[6, 7]]
    assert cells.heads.tolist() == [[0, 1, 6]]
    assert cells.tails.tolist() == [[0, 2, 7]]
    out = decode_spo(cells, _char_offsets(text) + [(0, 0)] * 3, text, PREDS)
    assert [(r["subject"], r["object"]) for r in out] == [("张伟", "杭州")]


def test_threshold_and_masked_values() -> None:
    text = "张伟出生于杭州。"
    ent, head, tail = _arrays(10)
    _link(ent, head, tail, (1, 2), (6, 7), 0, score=0.5)
    ent[0, 3, 1] = NEG
    assert len(_decode(text, ent, head, tail)) == 1
    cells = extract_cells(ent, head, tail, 1, 9, threshold=1.0)
    assert decode_spo(cells, _char_offsets(text), text, PREDS) == []


def test_ascii_multichar_tokens(tmp_path) -> None:
    text = "《Python入门》的作者是Guido，2001年出版。"
    vocab = tmp_path / "vocab.txt"
    build_vocab([text], vocab)
    enc = IETokenizer.from_file(vocab).encode(text)
    # find token indices of the entity boundaries from the offsets
    starts = {o[0]: i for i, o in enumerate(enc.offsets) if i >= enc.text_start and i < enc.text_end}
    ends = {o[1]: i for i, o in enumerate(enc.offsets) if i >= enc.text_start and i < enc.text_end}
    s0, o0 = text.index("Python入门"), text.index("Guido")
    s = (starts[s0], ends[s0 + len("Python入门")])
    o = (starts[o0], ends[o0 + len("Guido")])
    assert s[1] - s[0] > len("Python入门") - 3 > 0  # several tokens, some multi-char pieces
    ent, head, tail = _arrays(len(enc) + 3)
    _link(ent, head, tail, s, o, 2)
    out = decode_spo_dense(ent, head, tail, enc, text, PREDS)
    assert [
        (r["subject"], r["predicate"], r["object"], r["subject_start"], r["object_start"]) for r in out
    ] == [("Python入门", "作者", "Guido", s0, o0)]


def test_empty() -> None:
    ent, head, tail = _arrays(6)
    cells = extract_cells(ent, head, tail, 1, 5)
    assert isinstance(cells, GPCells)
    assert cells.subjects.shape == (0, 2) and cells.heads.shape == (0, 3)
    assert decode_spo(cells, _char_offsets("abcd"), "abcd", PREDS) == []
    assert extract_cells(ent, head, tail, 1, 1).subjects.shape == (0, 2)  # no text tokens


def test_duplicates_deduplicated_and_sorted() -> None:
    text = "甲乙出生于丙丁，戊己出生于庚辛。"
    ent, head, tail = _arrays(len(text) + 2)
    _link(ent, head, tail, (9, 10), (14, 15), 0)
    _link(ent, head, tail, (1, 2), (6, 7), 0, score=1.0)
    head[2, 1, 6], tail[2, 2, 7] = 1.0, 1.0  # same pair, second predicate: a separate item
    # token 3 shares the char span of token 2 (as if one char had two tokens): subject (1, 3)
    # maps to the same chars as (1, 2), so it is the same triple; the higher score is kept
    offsets = _char_offsets(text)
    offsets[3] = offsets[2]
    ent[0, 1, 3], tail[0, 3, 7] = 4.0, 4.0
    head[0, 1, 6], ent[1, 6, 7] = 4.0, 3.0
    out = _decode(text, ent, head, tail, offsets)
    keys = [(r["subject_start"], r["object_start"], r["predicate"]) for r in out]
    assert keys == sorted(keys) and len(set(keys)) == len(keys) == 3
    first = next(r for r in out if r["subject_start"] == 0 and r["predicate"] == "出生地")
    assert first["score"] == round(1 / (1 + np.exp(-3.0)), 6)  # min(4, 3 (object), 4, 4) beats 1.0


def test_all_positive_rows_are_capped_not_quadratic():
    """A model that marks every cell positive must not make decoding blow up."""
    from pipeline.spo_decode import MAX_LINKS, MAX_SPANS, decode_spo, extract_cells

    length, preds = 200, 8
    rng = np.random.default_rng(0)
    entity = rng.random((2, length, length), dtype=np.float32) + 0.1
    so_head = rng.random((preds, length, length), dtype=np.float32) + 0.1
    so_tail = rng.random((preds, length, length), dtype=np.float32) + 0.1
    cells = extract_cells(entity, so_head, so_tail, 1, length - 1)
    assert len(cells.subjects) == MAX_SPANS and len(cells.heads) == MAX_LINKS
    kept = entity[0, 1 : length - 1, 1 : length - 1].ravel()
    assert cells.subject_scores.min() >= np.sort(kept)[-MAX_SPANS]
    offsets = [(i, i + 1) for i in range(length)]
    decode_spo(cells, offsets, "字" * length, [f"p{i}" for i in range(preds)])


def test_cells_are_the_positives_inside_the_text_window_at_span_token_pairs():
    """Sparse random logits: spans are exactly the entity cells > threshold with both token
    indices in the window; head cells are the positives at (subject start, object start) token
    pairs of those spans (the only cells decoding reads), in C order, whatever the window."""
    rng = np.random.default_rng(7)
    length, preds = 40, 5
    so_head = np.where(rng.random((preds, length, length)) < 0.2, 1.5, -3.0).astype(np.float32)
    entity = np.where(rng.random((2, length, length)) < 0.05, 0.5, -3.0).astype(np.float32)
    for start, end in ((1, 39), (0, 40), (5, 17), (3, 3)):
        cells = extract_cells(entity, so_head, so_head, start, end, threshold=0.0)
        inside = np.zeros((length, length), dtype=bool)
        inside[start:end, start:end] = True
        subjects = np.argwhere((entity[0] > 0) & inside)
        objects = np.argwhere((entity[1] > 0) & inside)
        assert cells.subjects.tolist() == subjects.tolist()
        pairs = np.zeros_like(so_head, dtype=bool)
        if len(subjects) and len(objects):
            pairs[:, np.unique(subjects[:, 0])[:, None], np.unique(objects[:, 0])[None, :]] = True
        expected = np.argwhere((so_head > 0) & pairs)
        assert cells.heads.tolist() == expected.tolist()
        assert cells.head_scores.tolist() == [1.5] * len(expected)
        assert (len(expected) > 0) == (end > start)  # the test sees cells where it can
