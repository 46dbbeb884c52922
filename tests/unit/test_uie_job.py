"""UIEJob end to end against an oracle model, and the long-text windows.

The oracle is a test double of the MODEL only: for each row it reads the prompt tokens, looks up
the gold answers for that prompt, and puts high start/end probabilities on the tokens where the
gold strings occur in the row's text (or, for classification, in the prompt).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.tokenizer import Encoded, IETokenizer, build_vocab
from pipeline.uie.job import UIEJob, child_prompt
from pipeline.uie.schema import SchemaError, parse_schema
from pipeline.windows import (
    anchored_windows,
    default_overlap,
    merge_window_spans,
    split_windows,
    window_bounds,
)

FILLER = "春夏秋冬东南西北上下左右"
CHARS = (
    "张三李四诸葛亮出生于北京上海中国的人物地点出生地所属国家城市地震触发词时间震级发生了级5月日在"
    "云南评价维度观点词情感倾向[正向，负向],地址不错服务一般这个产品很好用。 Steve CEO Apple of Company"
)
PS, PE = 0.9, 0.8


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> IETokenizer:
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    build_vocab([CHARS, FILLER], path)
    return IETokenizer.from_file(path)


class Oracle:
    """Fake model: ``gold`` maps a prompt to the strings (or (string, p_start, p_end)) to mark."""

    def __init__(self, tok: IETokenizer, gold: dict[str, list], fragments: bool = False):
        self.tok = tok
        self.fragments = fragments
        self.gold: dict[tuple[int, ...], list[tuple[tuple[int, ...], float, float]]] = {}
        for prompt, answers in gold.items():
            key = self._ids(prompt)
            for ans in answers:
                text, ps, pe = (ans, PS, PE) if isinstance(ans, str) else ans
                self.gold.setdefault(key, []).append((self._ids(text), ps, pe))
        self.rows_seen = 0

    def _ids(self, s: str) -> tuple[int, ...]:
        return self.tok.encode(s, max_len=10_000).input_ids[1:-1]

    @staticmethod
    def _find(hay: tuple[int, ...], needle: tuple[int, ...]) -> list[int]:
        n = len(needle)
        return [i for i in range(len(hay) - n + 1) if hay[i : i + n] == needle]

    def __call__(self, rows: list[Encoded]) -> tuple[np.ndarray, np.ndarray]:
        self.rows_seen += len(rows)
        width = max(len(r) for r in rows) + 2  # padding after the rows, as a batch would have
        rng = np.random.default_rng(0)
        sp = rng.uniform(0, 0.3, (len(rows), width)).astype(np.float32)
        ep = rng.uniform(0, 0.3, (len(rows), width)).astype(np.float32)
        for b, row in enumerate(rows):
            ids = row.input_ids
            prompt = ids[1 : row.text_start - 1]
            text = ids[row.text_start : row.text_end]
            for needle, ps, pe in self.gold.get(prompt, []):
                for part, base in ((text, row.text_start), (prompt, 1)):
                    for i in self._find(part, needle):
                        sp[b, base + i], ep[b, base + i + len(needle) - 1] = ps, pe
                if self.fragments:  # a model sees a cut entity at a window edge as an entity
                    for k in range(1, len(needle)):
                        if text[-k:] == needle[:k]:
                            sp[b, row.text_end - k], ep[b, row.text_end - 1] = ps, pe
                        if text[:k] == needle[-k:]:
                            sp[b, row.text_start], ep[b, row.text_start + k - 1] = ps, pe
        return sp, ep


def run(job: UIEJob, model: Oracle) -> list[dict]:
    while rows := job.next_rows():
        sp, ep = model(rows)
        job.consume(list(sp), list(ep))
    assert job.done
    return job.result()


def item(text: str, start: int, p: float = float(np.float32(PS)) * float(np.float32(PE))) -> dict:
    return {"text": text, "start": start, "end": start + len(text), "probability": pytest.approx(p)}


def test_entity_extraction(tok):
    text = "张三出生于北京,李四出生于上海。"
    gold = {"人物": ["张三", "李四"], "地点": ["北京", "上海"]}
    job = UIEJob([text], parse_schema(["人物", "地点"]), tok)
    (res,) = run(job, Oracle(tok, gold))
    assert res == {"人物": [item("张三", 0), item("李四", 8)], "地点": [item("北京", 5), item("上海", 13)]}
    assert job.stages_run == 1


def test_nested_relation_two_levels(tok):
    text = "张三出生于北京,李四出生于中国上海"
    gold = {
        "人物": ["张三", "李四"],
        "张三的出生地": ["北京"],
        "北京的所属国家": ["中国"],
        "李四的出生地": ["上海"],
    }
    schema = parse_schema({"人物": {"出生地": ["所属国家"]}})
    job = UIEJob([text], schema, tok)
    (res,) = run(job, Oracle(tok, gold))
    beijing = {**item("北京", 5), "relations": {"所属国家": [item("中国", 13)]}}
    assert res == {
        "人物": [
            {**item("张三", 0), "relations": {"出生地": [beijing]}},
            {**item("李四", 8), "relations": {"出生地": [item("上海", 15)]}},  # 上海: no country found
        ]
    }
    assert "relations" not in res["人物"][1]["relations"]["出生地"][0]
    assert job.stages_run == 3


def test_parent_without_child_results_omits_relations(tok):
    gold = {"人物": ["张三", "李四"], "张三的出生地": ["北京"]}
    job = UIEJob(["张三出生于北京,李四"], parse_schema({"人物": ["出生地", "所属国家"]}), tok)
    (res,) = run(job, Oracle(tok, gold))
    assert res["人物"][0]["relations"] == {"出生地": [item("北京", 5)]}
    assert "relations" not in res["人物"][1]


def test_event_schema(tok):
    text = "5月日在云南发生了5级地震"
    gold = {"地震触发词": ["地震"], "地震的时间": ["5月日"], "地震的震级": ["5级"]}
    job = UIEJob([text], parse_schema([{"地震触发词": ["时间", "震级", "地点"]}]), tok)
    (res,) = run(job, Oracle(tok, gold))
    assert res == {
        "地震触发词": [
            {**item("地震", 11), "relations": {"时间": [item("5月日", 0)], "震级": [item("5级", 9)]}}
        ]
    }


def test_sentence_classification(tok):
    name = "情感倾向[正向，负向]"
    gold = {"情感倾向[正向,负向]": [("正向", 0.95, 0.9), ("负向", 0.7, 0.6)]}
    job = UIEJob(["这个产品很好用。"], parse_schema([name]), tok)
    (res,) = run(job, Oracle(tok, gold))
    assert res == {name: [{"text": "正向", "probability": pytest.approx(0.95 * 0.9)}]}


def test_classification_under_a_span_and_opinions(tok):
    text = "地址不错,服务一般"
    name = "情感倾向[正向，负向]"
    gold = {
        "评价维度": ["地址", "服务"],
        "地址的观点词": ["不错"],
        "服务的观点词": ["一般"],
        "地址的情感倾向[正向,负向]": ["正向"],
        "服务的情感倾向[正向,负向]": ["负向"],
    }
    job = UIEJob([text], parse_schema([{"评价维度": ["观点词", name]}]), tok)
    (res,) = run(job, Oracle(tok, gold))
    cls_p = pytest.approx(float(np.float32(PS)) * float(np.float32(PE)))
    address, service = res["评价维度"]
    assert address == {
        **item("地址", 0),
        "relations": {"观点词": [item("不错", 2)], name: [{"text": "正向", "probability": cls_p}]},
    }
    assert service == {
        **item("服务", 5),
        "relations": {"观点词": [item("一般", 7)], name: [{"text": "负向", "probability": cls_p}]},
    }


def test_classification_ignores_non_label_prompt_spans(tok):
    gold = {"情感倾向[正向,负向]": ["倾向"]}  # a span of the prompt that is not a label
    job = UIEJob(["这个产品很好用。"], parse_schema(["情感倾向[正向，负向]"]), tok)
    assert run(job, Oracle(tok, gold)) == [{}]


def test_empty_schema_is_a_schema_error(tok):
    with pytest.raises(SchemaError):
        UIEJob(["张三"], [], tok)
    with pytest.raises(SchemaError):
        UIEJob(["张三"], {"人物": [""]}, tok)


def test_raw_schema_is_parsed(tok):
    job = UIEJob(["张三出生于北京"], {"人物": ["出生地"]}, tok)
    gold = {"人物": ["张三"], "张三的出生地": ["北京"]}
    assert run(job, Oracle(tok, gold)) == [
        {"人物": [{**item("张三", 0), "relations": {"出生地": [item("北京", 5)]}}]}
    ]


def test_nothing_found_is_empty_dict(tok):
    job = UIEJob(["张三出生于北京"], parse_schema({"人物": ["出生地"]}), tok)
    assert run(job, Oracle(tok, {"地点": ["北京"]})) == [{}]
    assert job.stages_run == 1


def test_position_prob(tok):
    gold = {"人物": [("张三", 0.9, 0.65)]}
    low = UIEJob(["张三出生于北京"], parse_schema("人物"), tok, position_prob=0.5)
    assert run(low, Oracle(tok, gold))[0]["人物"][0]["probability"] == pytest.approx(
        float(np.float32(0.9)) * float(np.float32(0.65))
    )
    high = UIEJob(["张三出生于北京"], parse_schema("人物"), tok, position_prob=0.7)
    assert run(high, Oracle(tok, gold)) == [{}]


def test_several_texts_are_independent(tok):
    texts = ["张三出生于北京", "", "   ", "李四出生于上海", "这个产品很好用。"]
    gold = {"人物": ["张三", "李四"], "张三的出生地": ["北京"], "李四的出生地": ["上海"]}
    oracle = Oracle(tok, gold)
    job = UIEJob(texts, parse_schema({"人物": ["出生地"]}), tok)
    res = run(job, oracle)
    assert res == [
        {"人物": [{**item("张三", 0), "relations": {"出生地": [item("北京", 5)]}}]},
        {},
        {},
        {"人物": [{**item("李四", 0), "relations": {"出生地": [item("上海", 5)]}}]},
        {},
    ]
    assert oracle.rows_seen == 3 + 2  # blank texts make no rows


def test_all_blank_texts(tok):
    job = UIEJob(["", " "], parse_schema("人物"), tok)
    assert job.done and job.next_rows() == []
    assert job.result() == [{}, {}]


def test_same_child_prompt_runs_once(tok):
    text = "张三在北京,张三在上海"
    oracle = Oracle(tok, {"人物": ["张三"], "张三的出生地": ["北京"]})
    job = UIEJob([text], parse_schema({"人物": ["出生地"]}), tok)
    res = run(job, oracle)
    assert [p["relations"]["出生地"][0]["text"] for p in res[0]["人物"]] == ["北京", "北京"]
    assert oracle.rows_seen == 2  # one root row, one shared "张三的出生地" row


def test_english_child_prompts():
    (person,) = parse_schema({"Person": ["Company", "Sentiment [negative, positive]"]})
    company, sentiment = person.children
    assert child_prompt("Steve", company, "en") == "Company of Steve"
    assert child_prompt("Steve", sentiment, "en") == "Sentiment of Steve [negative, positive]"
    assert child_prompt("张三", company, "ch") == "张三的Company"
    assert child_prompt("ＡＢ", company, "ch") == "AB的Company"


def test_english_schema_job(tok):
    text = "Steve CEO of Apple"
    gold = {"Person": ["Steve"], "Company of Steve": ["Apple"]}
    job = UIEJob([text], parse_schema({"Person": ["Company"]}), tok, schema_lang="en")
    (res,) = run(job, Oracle(tok, gold))
    assert res == {"Person": [{**item("Steve", 0), "relations": {"Company": [item("Apple", 13)]}}]}


def test_protocol_errors(tok):
    job = UIEJob(["张三"], parse_schema("人物"), tok)
    with pytest.raises(RuntimeError):
        job.consume([], [])
    with pytest.raises(RuntimeError):
        job.result()
    rows = job.next_rows()
    assert job.next_rows() == rows  # asking twice gives the same rows
    with pytest.raises(ValueError, match="expected 1"):
        job.consume([], [])
    with pytest.raises(ValueError, match="schema_lang"):
        UIEJob(["张三"], parse_schema("人物"), tok, schema_lang="fr")
    with pytest.raises(ValueError, match="position_prob"):
        UIEJob(["张三"], parse_schema("人物"), tok, position_prob=1.0)


# -- windows ------------------------------------------------------------------------------------


def test_split_windows_cover_and_overlap():
    text = "".join(chr(0x4E00 + i) for i in range(100))
    wins = split_windows(text, 30, 22)
    assert [o for o, _ in wins] == [0, 22, 44, 66, 70]
    assert all(chunk == text[o : o + len(chunk)] and len(chunk) == 30 for o, chunk in wins)
    assert split_windows("短文本", 30, 22) == [(0, "短文本")]
    assert split_windows("", 30, 22) == [(0, "")]
    assert default_overlap(500) == 64 and default_overlap(40) == 20
    with pytest.raises(ValueError):
        split_windows(text, 30, 0)


def test_merge_window_spans_dedupes_and_drops_cut_fragments():
    # windows [0, 20) and [15, 35) over a text of 35 chars
    windows = [
        (0, 20, [(2, 4, 0.5), (16, 18, 0.6), (17, 20, 0.9)]),  # (17, 20) touches the right edge: cut
        (15, 20, [(1, 3, 0.7), (2, 6, 0.8), (19, 20, 0.4)]),  # (19, 20) -> (34, 35) is the text end
    ]
    assert merge_window_spans(windows, 35) == [(2, 4, 0.5), (16, 18, 0.7), (17, 21, 0.8), (34, 35, 0.4)]


def test_merge_keeps_cut_span_nobody_else_saw():
    windows = [(0, 20, [(17, 20, 0.9)]), (15, 20, [(10, 12, 0.7)])]
    assert merge_window_spans(windows, 35) == [(17, 20, 0.9), (25, 27, 0.7)]


def long_text(entity: str, at: int, length: int = 80) -> str:
    filler = (FILLER * (length // len(FILLER) + 1))[: length - len(entity)]
    return filler[:at] + entity + filler[at:]


@pytest.mark.parametrize("at", range(10, 40))
def test_entity_on_a_window_boundary_is_found_once(tok, at):
    # max_seq_len 24, prompt 2 tokens -> windows of 19 chars, overlap 9, stride 10: edges 10, 19, 20, 29..
    text = long_text("诸葛亮", at)
    oracle = Oracle(tok, {"人物": ["诸葛亮"]}, fragments=True)
    job = UIEJob([text], parse_schema("人物"), tok, max_seq_len=24)
    (res,) = run(job, oracle)
    assert res == {"人物": [item("诸葛亮", at)]}
    assert oracle.rows_seen == len(split_windows(text, 19, 10)) > 1
    assert all(len(r) <= 24 for r in job_rows(text, tok))


def job_rows(text: str, tok: IETokenizer) -> list[Encoded]:
    return UIEJob([text], parse_schema("人物"), tok, max_seq_len=24).next_rows()


def test_without_overlap_a_boundary_entity_is_lost(tok):
    # the Taskflow way: back-to-back chunks; 诸葛亮 at 18..21 straddles the cut at 19
    text = long_text("诸葛亮", 18)
    job = UIEJob([text], parse_schema("人物"), tok, max_seq_len=24, window_overlap=0)
    res = run(job, Oracle(tok, {"人物": ["诸葛亮"]}))
    assert res == [{}]


def test_entity_in_the_overlap_is_merged(tok):
    text = long_text("张三", 15) + "李四"
    oracle = Oracle(tok, {"人物": ["张三", "李四"]})
    job = UIEJob([text], parse_schema("人物"), tok, max_seq_len=24)
    (res,) = run(job, oracle)
    assert res == {"人物": [item("张三", 15), item("李四", len(text) - 2)]}  # 张三 seen by two windows


def test_long_text_relations_and_several_windows(tok):
    text = long_text("", 0, 50) + "张三出生于北京" + long_text("", 0, 40)
    gold = {"人物": ["张三"], "张三的出生地": ["北京"]}
    oracle = Oracle(tok, gold)
    job = UIEJob([text, "李四"], parse_schema({"人物": ["出生地"]}), tok, max_seq_len=24)
    res = run(job, oracle)
    birthplace = text.index("北京")
    assert res == [{"人物": [{**item("张三", 50), "relations": {"出生地": [item("北京", birthplace)]}}]}, {}]
    # stage 1 read every window of the text (and 李四); stage 2 only the windows holding 张三
    n_windows = len(split_windows(text, 24 - 3 - 2, 24 - 3 - 2 - default_overlap(24 - 3 - 2)))
    assert n_windows + 1 < oracle.rows_seen < 2 * n_windows + 1


@pytest.mark.parametrize(
    ("text", "schema", "lang"),
    [
        ("张三出生于北京", "人物", "ch"),
        ("Steve CEO of Apple 北京", "Company", "en"),
        ("  张三 ", "人物", "ch"),
    ],
)
def test_single_window_rows_match_the_tokenizer(tok, text, schema, lang):
    job = UIEJob([text], parse_schema(schema), tok, schema_lang=lang)
    (row,) = job.next_rows()
    assert row == tok.encode(text, prompt=schema, max_len=512)


def test_windows_are_cut_between_tokens(tok):
    text = long_text("诸葛亮", 30, 90)
    job = UIEJob([text], parse_schema("人物"), tok, max_seq_len=16, window_overlap=3)
    rows = job.next_rows()
    assert len(rows) > 2 and all(len(r) <= 16 for r in rows)
    for row, meta in zip(rows, job._meta, strict=True):
        window = text[meta.offset : meta.offset + meta.length]
        assert row == tok.encode(window, prompt="人物", max_len=16)


def test_windows_inside_words_keep_full_text_pieces(tok):
    text = "Steve Apple " * 10
    job = UIEJob([text], parse_schema("人物"), tok, max_seq_len=16, window_overlap=3)
    rows = job.next_rows()
    whole = tok.encode(text, max_len=1 << 20)
    assert len(rows) > 2
    for row, meta in zip(rows, job._meta, strict=True):
        pieces = row.input_ids[row.text_start : row.text_end]
        s, e = row.offsets[row.text_start]
        first = whole.offsets.index((meta.offset + s, meta.offset + e))
        assert pieces == whole.input_ids[first : first + len(pieces)]


@given(n=st.integers(0, 400), size=st.integers(1, 60), data=st.data())
def test_window_bounds_cover_with_overlap(n, size, data):
    stride = data.draw(st.integers(1, size))
    bounds = window_bounds(n, size, stride)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(b - a == min(size, n) for a, b in bounds)
    for (a1, b1), (a2, _) in itertools.pairwise(bounds):
        assert a1 < a2 and b1 - a2 >= size - stride  # consecutive windows overlap enough


def test_a_relation_prompt_is_asked_only_where_its_subject_is(tok):
    # 北京 sits twice in a long text, once by 张三 and once 60 chars away (another person's fact);
    # a model that marks every 北京 for "张三的出生地" is answered only from 张三's windows
    text = "张三出生于北京" + long_text("", 0, 60) + "李四出生于北京"
    gold = {"人物": ["张三", "李四"], "张三的出生地": ["北京"], "李四的出生地": ["北京"]}
    schema = parse_schema({"人物": ["出生地"]})
    (anchored,) = run(UIEJob([text], schema, tok, max_seq_len=24), Oracle(tok, gold))
    (every,) = run(UIEJob([text], schema, tok, max_seq_len=24, anchor_children=False), Oracle(tok, gold))
    far = len(text) - 2
    assert anchored == {
        "人物": [
            {**item("张三", 0), "relations": {"出生地": [item("北京", 5)]}},
            {**item("李四", far - 5), "relations": {"出生地": [item("北京", far)]}},
        ]
    }
    assert every["人物"][0]["relations"]["出生地"] == [item("北京", 5), item("北京", far)]


@given(n=st.integers(1, 300), size=st.integers(1, 60), data=st.data())
def test_anchored_windows_hold_every_anchor(n, size, data):
    stride = data.draw(st.integers(1, size))
    bounds = window_bounds(n, size, stride)
    anchors = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, size)), max_size=4))
    anchors = [(a, min(n, a + length)) for a, length in anchors]
    kept = anchored_windows(bounds, anchors, size, n)
    assert kept == sorted(set(kept)) and all(0 <= a < b <= n and b - a == min(size, n) for a, b in kept)
    for a, b in anchors:
        assert any(lo <= a and b <= hi for lo, hi in kept)
    if not anchors:
        assert kept == bounds
    for lo, hi in set(kept) & set(bounds) if anchors else ():  # grid windows kept hold an anchor
        assert any(lo <= a and b <= hi for a, b in anchors)


@pytest.mark.parametrize("anchor", [True, False])
def test_the_service_config_picks_anchored_or_every_window(tok, anchor, tmp_path):
    from pipeline.config import Limits, ModelSettings
    from pipeline.job_factory import build_job
    from pipeline.model_card import ModelCard
    from pipeline.models import ServedModel

    settings = ModelSettings(dir=tmp_path, max_seq_len=24, anchor_children=anchor)
    card = ModelCard.model_construct(task="uie", max_seq_len=24)
    model = ServedModel("uie", settings, card, tok)
    text = "张三出生于北京" + long_text("", 0, 60) + "李四出生于北京"
    kv = {"task": "uie", "text": text, "schema": '{"人物": ["出生地"]}'}
    gold = {"人物": ["张三", "李四"], "张三的出生地": ["北京"], "李四的出生地": ["北京"]}
    job = build_job(kv, {"uie": model}, Limits())
    (res,) = run(job.engine, Oracle(tok, gold))
    found = [o["start"] for o in res["人物"][0]["relations"]["出生地"]]
    assert found == ([5] if anchor else [5, len(text) - 2])
