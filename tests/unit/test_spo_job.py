"""SPOJob over long texts: overlapping windows, offsets mapped back, cut entities at window edges."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.spo_job import SPOJob
from pipeline.tokenizer import IETokenizer, build_vocab

PREDS = ["出生地", "毕业院校"]
FILLER = "今天天气很好大家都来了。"


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> IETokenizer:
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    build_vocab([FILLER, "张伟出生于杭州李娜毕业于北辰大学。，"], path)
    return IETokenizer.from_file(path)


def _cell(token_of: dict[int, int], start: int, end: int) -> tuple[int, int] | None:
    if start in token_of and end - 1 in token_of:
        return token_of[start], token_of[end - 1]
    return None


def fake_model(job: SPOJob, facts: list[tuple[str, int, str]], cut_suffix: bool = False):
    """Logits marking each (subject, predicate index, object) found whole in a window; with
    ``cut_suffix`` a window that starts inside a subject also marks the cut rest (a model error)."""
    rows = job.next_rows()
    outs: tuple[list, list, list] = ([], [], [])
    for (_, _, chunk), row in zip(job._windows, rows, strict=True):
        n = len(row)
        ent = np.full((2, n, n), -5.0, np.float32)
        head = np.full((len(PREDS), n, n), -5.0, np.float32)
        tail = np.full((len(PREDS), n, n), -5.0, np.float32)
        token_of = {
            c: t
            for t in range(row.text_start, row.text_end)
            for c in range(*row.offsets[t])
            if c < len(chunk)
        }
        for subject, p, obj in facts:
            o0 = chunk.find(obj)
            s0 = chunk.find(subject)
            s_span = (s0, s0 + len(subject)) if s0 >= 0 else None
            if s_span is None and cut_suffix:
                rest = next(
                    (subject[k:] for k in range(1, len(subject)) if chunk.startswith(subject[k:])), None
                )
                s_span = (0, len(rest)) if rest else None
            if s_span is None or o0 < 0:
                continue
            s, o = _cell(token_of, *s_span), _cell(token_of, o0, o0 + len(obj))
            if s is None or o is None:
                continue
            ent[0, s[0], s[1]] = ent[1, o[0], o[1]] = 3.0
            head[p, s[0], o[0]] = tail[p, s[1], o[1]] = 3.0
        for out, arr in zip(outs, (ent, head, tail), strict=True):
            out.append(arr)
    job.consume(*outs)
    return job.result()


def test_long_text_triples_get_full_text_offsets(tok):
    text = FILLER * 5 + "张伟出生于杭州。" + FILLER * 5 + "李娜毕业于北辰大学。" + FILLER * 3
    job = SPOJob([text], tok, PREDS, max_seq_len=32)
    assert len(job.next_rows()) > 5  # many windows
    [result] = fake_model(job, [("张伟", 0, "杭州"), ("李娜", 1, "北辰大学")])
    got = {
        (t["subject"], t["predicate"], t["object"], t["subject_start"], t["object_start"])
        for t in result["spo_list"]
    }
    assert got == {
        ("张伟", "出生地", "杭州", text.index("张伟"), text.index("杭州")),
        ("李娜", "毕业院校", "北辰大学", text.index("李娜"), text.index("北辰大学")),
    }


def test_default_overlap_keeps_a_triple_crossing_a_window_edge(tok):
    for pad in range(0, 40, 3):  # move the sentence across every window boundary
        text = FILLER[: pad % len(FILLER)] + FILLER * 3 + "张伟出生于杭州。" + FILLER * 3
        job = SPOJob([text], tok, PREDS, max_seq_len=24)
        [result] = fake_model(job, [("张伟", 0, "杭州")])
        assert [(t["subject"], t["object"]) for t in result["spo_list"]] == [("张伟", "杭州")], pad


def test_a_subject_cut_by_a_window_edge_is_dropped_for_the_whole_one(tok):
    found_cut = False
    for pad in range(0, 30):
        text = FILLER[:pad] + FILLER * 2 + "李娜毕业于北辰大学。" + FILLER * 2
        job = SPOJob([text], tok, PREDS, max_seq_len=20, window_overlap=12)
        cut_starts = [off for _, off, chunk in job._windows if chunk.startswith("娜毕业于北辰大学")]
        found_cut |= bool(cut_starts)
        [result] = fake_model(job, [("李娜", 1, "北辰大学")], cut_suffix=True)
        assert [t["subject"] for t in result["spo_list"]] == ["李娜"], pad
    assert found_cut  # the cut case did occur and was merged away
