"""Sentence boundaries (``split_sentence``) and the UIE job reading a text sentence by sentence."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.tokenizer import IETokenizer, build_vocab
from pipeline.uie.job import UIEJob
from pipeline.uie.schema import parse_schema
from pipeline.uie.sentences import sentence_bounds
from tests.unit.test_uie_job import CHARS, Oracle, item, run


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> IETokenizer:
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    build_vocab([CHARS], path)
    return IETokenizer.from_file(path)


def sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in sentence_bounds(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("没有句号", ["没有句号"]),
        ("张三出生于北京。", ["张三出生于北京。"]),
        ("张三出生于北京。李四是医生。", ["张三出生于北京。", "李四是医生。"]),
        ("真的吗？！是的。 ", ["真的吗？！", "是的。", " "]),
        ("他说：“走吧。”我们走了。", ["他说：“走吧。”", "我们走了。"]),
        ("等等……好的", ["等等……", "好的"]),
        ("Wait... ok. Go!", ["Wait... ok. Go!"]),
        ("Go! Now?", ["Go!", " Now?"]),
    ],
)
def test_sentence_bounds(text, expected):
    assert sentences(text) == expected


@given(st.text(alphabet="张三。！？!?…”. a", max_size=40))
def test_sentences_cover_the_text_back_to_back(text):
    bounds = sentence_bounds(text)
    assert "".join(text[a:b] for a, b in bounds) == text
    assert all(a < b for a, b in bounds)
    assert all(b1 == a2 for (_, b1), (a2, _) in itertools.pairwise(bounds))


def test_split_sentence_rows_hold_one_sentence_and_offsets_map_back(tok):
    text = "张三出生于北京。李四在云南，出生于上海。"
    gold = {"人物": ["张三", "李四"], "张三的出生地": ["北京"], "李四的出生地": ["上海"]}
    schema = parse_schema({"人物": ["出生地"]})
    job = UIEJob([text], schema, tok, max_seq_len=64, split_sentence=True)
    rows = job.next_rows()
    ids = Oracle(tok, {})._ids
    row_texts = {r.input_ids[r.text_start : r.text_end] for r in rows}
    assert row_texts == {ids("张三出生于北京。"), ids("李四在云南，出生于上海。")}
    (res,) = run(job, Oracle(tok, gold))
    assert res == {
        "人物": [
            {**item("张三", 0), "relations": {"出生地": [item("北京", 5)]}},
            {**item("李四", 8), "relations": {"出生地": [item("上海", 17)]}},
        ]
    }


def test_a_fact_across_sentences_is_found_only_without_split_sentence(tok):
    # 李四 is named in one sentence, his birthplace in the next: split_sentence cannot join them
    text = "李四在云南。出生于上海。"
    gold = {"人物": ["李四"], "李四的出生地": ["上海"]}
    schema = parse_schema({"人物": ["出生地"]})
    (whole,) = run(UIEJob([text], schema, tok, max_seq_len=64), Oracle(tok, gold))
    (split,) = run(UIEJob([text], schema, tok, max_seq_len=64, split_sentence=True), Oracle(tok, gold))
    assert whole["人物"][0]["relations"] == {"出生地": [item("上海", 9)]}
    assert split == {"人物": [item("李四", 0)]}


@pytest.mark.parametrize("split", [True, False])
def test_the_service_config_picks_split_sentence(tok, split, tmp_path):
    from pipeline.config import Limits, ModelSettings
    from pipeline.job_factory import build_job
    from pipeline.model_card import ModelCard
    from pipeline.models import ServedModel

    settings = ModelSettings(dir=tmp_path, max_seq_len=64, split_sentence=split)
    model = ServedModel("uie", settings, ModelCard.model_construct(task="uie", max_seq_len=64), tok)
    kv = {"task": "uie", "text": "李四在云南。出生于上海。", "schema": '{"人物": ["出生地"]}'}
    job = build_job(kv, {"uie": model}, Limits())
    (res,) = run(job.engine, Oracle(tok, {"人物": ["李四"], "李四的出生地": ["上海"]}))
    assert ("relations" in res["人物"][0]) is not split


@pytest.mark.parametrize(
    ("card_split", "config_split", "split"), [(True, None, True), (False, None, False), (True, False, False)]
)
def test_the_model_card_says_how_to_read_unless_the_config_departs(
    tok, tmp_path, card_split, config_split, split
):
    from pipeline.config import Limits, ModelSettings
    from pipeline.job_factory import build_job
    from pipeline.model_card import ModelCard, Reading
    from pipeline.models import ServedModel

    card = ModelCard.model_construct(task="uie", max_seq_len=64, reading=Reading(split_sentence=card_split))
    settings = ModelSettings(dir=tmp_path, max_seq_len=64, split_sentence=config_split)
    model = ServedModel("uie", settings, card, tok)
    assert model.split_sentence is split
    kv = {"task": "uie", "text": "李四在云南。出生于上海。", "schema": '{"人物": ["出生地"]}'}
    (res,) = run(
        build_job(kv, {"uie": model}, Limits()).engine,
        Oracle(tok, {"人物": ["李四"], "李四的出生地": ["上海"]}),
    )
    assert ("relations" in res["人物"][0]) is not split


def test_a_batch_over_what_the_bridge_verified_stops_start_up(tmp_path):
    import json

    from pipeline.config import IESettings
    from pipeline.errors import ConfigError
    from pipeline.models import load_served_models

    model_dir = tmp_path / "uie"
    model_dir.mkdir()
    (model_dir / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "李"]), "utf-8"
    )
    card = {"name": "uie", "task": "uie", "max_seq_len": 64, "verified_max_batch": 16,
            "inputs": ["input_ids"], "outputs": ["start_prob", "end_prob"]}  # fmt: skip
    (model_dir / "model_card.json").write_text(json.dumps(card), "utf-8")
    ok = IESettings.model_validate({"max_batch_rows": 16, "models": {"uie": {"dir": str(model_dir)}}})
    assert load_served_models(ok)["uie"].card.verified_max_batch == 16
    over = ok.model_copy(update={"max_batch_rows": 32})
    with pytest.raises(ConfigError, match="verified model uie up to 16 rows"):
        load_served_models(over)
