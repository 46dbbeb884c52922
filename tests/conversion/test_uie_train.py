"""UIE training examples and a few training steps of the demo trainer (no long training here)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from conversion.demo_data import uie_schema, write_dataset
from conversion.metrics import micro_prf
from conversion.metrics import uie_gold_facts as gold_facts
from conversion.metrics import uie_predicted_facts as predicted_facts
from conversion.models.uie_paddle import UIE, load_uie_checkpoint
from conversion.models.uie_torch import TorchUIE, copy_torch_to_paddle, init_matching_head, init_torch_uie
from conversion.record_pieces import split_record, split_sentences
from conversion.train_uie import evaluate, predict_rows, read_jsonl, tiny_config, train_uie
from conversion.uie_examples import (
    Example,
    SchemaSpec,
    build_examples,
    encode_examples,
    encode_pairs,
    record_examples,
    token_bounds,
)
from pipeline.tokenizer import IETokenizer, build_vocab

RECORD = {
    "text": "《晴天》是周杰伦演唱的歌曲。周杰伦出生于台北。",
    "spo_list": [
        {
            "subject": "晴天",
            "subject_type": "歌曲",
            "subject_start": 1,
            "predicate": "歌手",
            "object": "周杰伦",
            "object_type": "人物",
            "object_start": 5,
        },
        {
            "subject": "周杰伦",
            "subject_type": "人物",
            "subject_start": 14,
            "predicate": "出生地",
            "object": "台北",
            "object_type": "地点",
            "object_start": 20,
        },
    ],
    "entities": [
        {"text": "晴天", "type": "歌曲", "start": 1, "end": 3},
        {"text": "周杰伦", "type": "人物", "start": 5, "end": 8},
        {"text": "周杰伦", "type": "人物", "start": 14, "end": 17},
        {"text": "台北", "type": "地点", "start": 20, "end": 22},
    ],
}
SCHEMA = ["日期", {"人物": ["出生地", "国籍"]}, {"歌曲": ["歌手"]}, "地点"]
# two people, one relation between them (张三的妻子 -> 李四)
TWO_PEOPLE = {
    "text": "张三的妻子是李四。",
    "spo_list": [{"subject": "张三", "subject_start": 0, "predicate": "妻子", "object": "李四",
                  "object_start": 6}],
    "entities": [{"text": "张三", "type": "人物", "start": 0, "end": 2},
                 {"text": "李四", "type": "人物", "start": 6, "end": 8}],
}  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> IETokenizer:
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    build_vocab([RECORD["text"], "日期人物出生地国籍歌曲歌手地点的 Python"], path)
    return IETokenizer.from_file(path)


def test_record_examples_cover_entities_relations_and_negatives():
    spec = SchemaSpec.from_schema(SCHEMA)
    got = {e.prompt: e.spans for e in record_examples(RECORD, spec, random.Random(0))}
    assert got["人物"] == ((5, 8), (14, 17))
    assert got["歌曲"] == ((1, 3),)
    assert got["地点"] == ((20, 22),)
    assert got["日期"] == ()  # absent type: negative prompt
    assert got["晴天的歌手"] == ((5, 8),)
    assert got["周杰伦的出生地"] == ((20, 22),)  # the mention at 14 has it ...
    assert got["周杰伦的国籍"] == ()  # ... and a predicate it lacks is a negative
    # both 周杰伦 mentions share one prompt (as at inference), with the union of their objects
    assert sum(e.prompt == "周杰伦的出生地" for e in record_examples(RECORD, spec, random.Random(0))) == 1


def test_negative_sampling_keeps_every_positive():
    spec = SchemaSpec.from_schema(SCHEMA)
    full = record_examples(RECORD, spec, random.Random(0))
    none = record_examples(RECORD, spec, random.Random(0), neg_entity_keep=0.0, neg_relation_keep=0.0)
    assert [e for e in full if e.positive] == none
    assert any(not e.positive for e in full)


def test_hard_negative_relation_prompts_are_always_kept():
    # 李四 is a person in a text where only 张三 has a birthplace: "李四的出生地" must answer nothing
    text = "张三出生于台北，妻子是李四。"
    record = {
        "text": text,
        "spo_list": [
            {"subject": "张三", "subject_start": 0, "predicate": p, "object": o,
             "object_start": text.index(o)}
            for p, o in (("出生地", "台北"), ("妻子", "李四"))
        ],
        "entities": [{"text": n, "type": t, "start": text.index(n), "end": text.index(n) + len(n)}
                     for n, t in (("张三", "人物"), ("台北", "地点"), ("李四", "人物"))],
    }  # fmt: skip
    spec = SchemaSpec.from_schema([{"人物": ["出生地", "国籍", "妻子"]}, "地点"])
    kept = {e.prompt: e.spans for e in record_examples(record, spec, random.Random(0), 0.0, 0.0)}
    assert kept == {"人物": ((0, 2), (11, 13)), "地点": ((5, 7),), "张三的出生地": ((5, 7),),
                    "张三的妻子": ((11, 13),), "李四的出生地": (), "李四的妻子": ()}  # fmt: skip
    plain = record_examples(record, spec, random.Random(0), 0.0, 0.0, hard_negatives=False)
    assert {e.prompt for e in plain} == {"人物", "地点", "张三的出生地", "张三的妻子"}


def test_split_record_rebases_offsets_and_keeps_whole_facts():
    pieces = split_record(RECORD, max_chars=15)
    assert [p["text"] for p in pieces] == ["《晴天》是周杰伦演唱的歌曲。", "周杰伦出生于台北。"]
    second = pieces[1]
    assert second["entities"] == [
        {"text": "周杰伦", "type": "人物", "start": 0, "end": 3},
        {"text": "台北", "type": "地点", "start": 6, "end": 8},
    ]
    (triple,) = second["spo_list"]
    assert (triple["subject_start"], triple["object_start"]) == (0, 6)
    for p in pieces:
        for e in p["entities"]:
            assert p["text"][e["start"] : e["end"]] == e["text"]


def test_split_sentences_gives_each_sentence_its_facts():
    pieces = split_sentences(RECORD)
    assert [p["text"] for p in pieces] == ["《晴天》是周杰伦演唱的歌曲。", "周杰伦出生于台北。"]
    assert pieces[1] == split_record(RECORD, max_chars=15)[1]
    assert split_sentences({**RECORD, "text": "没有句号"})[0]["text"] == "没有句号"


def test_encoded_labels_point_at_the_target_tokens(tokenizer):
    spec = SchemaSpec.from_schema(SCHEMA)
    examples = build_examples([RECORD], spec, random.Random(0), max_chars=100)
    rows, lost = encode_examples(tokenizer, examples, max_len=64)
    assert lost == 0
    for ex, lab in zip(examples, rows, strict=True):
        offs = lab.row.offsets
        got = sorted((offs[s][0], offs[e][1]) for s, e in zip(lab.starts, lab.ends, strict=True))
        assert got == sorted(ex.spans)
        assert all(lab.row.text_start <= i < lab.row.text_end for i in lab.starts + lab.ends)


def test_encode_pairs_equals_encode_batch(tokenizer):
    texts = [RECORD["text"], "Python晴天", RECORD["text"]]
    prompts = ["人物", "歌曲", "周杰伦的出生地"]
    for max_len in (64, 12):
        assert encode_pairs(tokenizer, texts, prompts, max_len) == tokenizer.encode_batch(
            texts, prompts, max_len
        )


def test_token_bounds_none_when_truncated(tokenizer):
    row = tokenizer.encode(RECORD["text"], "人物", max_len=10)  # 5 text tokens survive
    assert token_bounds(row, 1, 3) is not None
    assert token_bounds(row, 20, 22) is None


def test_facts_and_micro_f1():
    gold = gold_facts(RECORD)
    assert ("R", 14, 17, "出生地", 20, 22) in gold and ("E", "人物", 5, 8) in gold
    result = {
        "人物": [
            {"text": "周杰伦", "start": 14, "end": 17, "probability": 0.9,
             "relations": {"出生地": [{"text": "台北", "start": 20, "end": 22, "probability": 0.9}]}},
        ],
        "地点": [{"text": "台", "start": 20, "end": 21, "probability": 0.6}],
    }  # fmt: skip
    pred = predicted_facts(result)
    m = micro_prf([gold], [pred])
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 6)


def test_few_training_steps_lower_the_loss_and_the_checkpoint_roundtrips(tmp_path: Path):
    data = write_dataset(tmp_path / "data", seed=1, n_train=40, n_test=6)
    out = tmp_path / "ckpt"
    metrics = train_uie(
        data, out, seed=0, max_seconds=120, target_f1=2.0, max_steps=25, batch_size=16, eval_every=1000
    )
    assert set(metrics) == {"f1", "precision", "recall", "seconds", "steps"}
    assert metrics["steps"] == 25
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["last_loss"] < saved["first_loss"] * 0.5
    for name in ("model_state.pdparams", "config.json", "vocab.txt"):
        assert (out / name).is_file()
    model, config = load_uie_checkpoint(out)
    assert config.hidden_size == 64
    tok = IETokenizer.from_file(out / "vocab.txt")
    split = saved["settings"]["split_sentence"]
    again = evaluate(model, tok, read_jsonl(data / "test.jsonl"), uie_schema(), saved["max_seq_len"], split)
    assert again["f1"] == pytest.approx(metrics["f1"])
    assert again["precision"] == pytest.approx(metrics["precision"])


def _trained_like(model: TorchUIE) -> None:
    """Move every weight away from its init so a transposition or name slip shows in the outputs."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)


def test_torch_twin_copies_into_paddle_with_equal_outputs(tokenizer):
    config = tiny_config(tokenizer.vocab_size, hidden_size=32, num_layers=2, num_heads=2)
    src = TorchUIE(config)
    init_torch_uie(src, seed=0)
    _trained_like(src)
    dst = UIE(config)
    assert copy_torch_to_paddle(src, dst) <= 1e-5
    rows = tokenizer.encode_batch([RECORD["text"], "Python晴天"], ["人物", "周杰伦的出生地"], 64)
    ps, pe = predict_rows(dst, rows)
    ts, te = predict_rows(src, rows)
    for a, b in zip(ps + pe, ts + te, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert float(np.abs(ps[0] - 0.5).max()) > 1e-3  # the probe is not trivially flat


def test_matching_head_scores_equal_tokens_high_and_leaves_other_heads(tokenizer):
    config = tiny_config(tokenizer.vocab_size, hidden_size=64, num_layers=2, num_heads=2)
    model = TorchUIE(config)
    init_torch_uie(model, seed=0)
    _trained_like(model)  # as after another model's encoder was copied in
    attn = model.ernie.encoder.layers[0].self_attn
    before = {k: v.clone() for k, v in attn.state_dict().items()}
    init_matching_head(model, head=0, score=5.0)
    d = attn.head_dim
    for name in ("q_proj.weight", "k_proj.weight"):
        assert torch.equal(attn.state_dict()[name][d:], before[name][d:])  # head 1 untouched
    for name in ("v_proj.weight", "out_proj.weight"):
        assert torch.equal(attn.state_dict()[name], before[name])

    emb = model.ernie.embeddings

    def head0(ids: torch.Tensor, segment: int, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = emb(ids[None], torch.full_like(ids, segment)[None], positions[None])[0]
        return attn.q_proj(x)[:, :d], attn.k_proj(x)[:, :d]

    with torch.no_grad():
        everything = torch.arange(tokenizer.vocab_size)
        q, k = head0(everything, 1, torch.zeros_like(everything))
        calibrated = float((q * k).sum(-1).mean() * d**-0.5)  # the scale is set where this is taken
        ids = torch.randperm(tokenizer.vocab_size - 5)[:30] + 5
        # the same tokens in the prompt (segment 0) and, later, in the text (segment 1)
        _, k_prompt = head0(ids, 0, torch.arange(1, 31))
        q_text, _ = head0(ids, 1, torch.arange(50, 80))
        scores = q_text @ k_prompt.T * d**-0.5
    assert calibrated == pytest.approx(5.0, rel=1e-3)
    same = scores.diag()
    other = scores[~torch.eye(30, dtype=torch.bool)]
    assert float(same.mean()) > float(other.mean()) + 2.5


def test_copy_rejects_a_different_architecture(tokenizer):
    src = TorchUIE(tiny_config(tokenizer.vocab_size, hidden_size=32, num_layers=1, num_heads=2))
    dst = UIE(tiny_config(tokenizer.vocab_size, hidden_size=32, num_layers=2, num_heads=2))
    with pytest.raises(ValueError, match="names differ"):
        copy_torch_to_paddle(src, dst)


def test_confusable_predicates_are_hard_negatives():
    # the text says 妻子; 丈夫 shares its subject and object types, so 张三的丈夫 -> nothing is kept
    schema = [{"人物": ["妻子", "丈夫", "出生地"]}, "地点"]
    types = {"妻子": ("人物", "人物"), "丈夫": ("人物", "人物"), "出生地": ("人物", "地点")}
    spec = SchemaSpec.from_schema(schema, types)
    assert spec.hard_predicates(["妻子"]) == {"妻子", "丈夫"}
    kept = {e.prompt: e.spans for e in record_examples(TWO_PEOPLE, spec, random.Random(0), 0.0, 0.0)}
    assert kept == {"人物": ((0, 2), (6, 8)), "张三的妻子": ((6, 8),), "张三的丈夫": (),
                    "李四的妻子": (), "李四的丈夫": ()}  # fmt: skip
    # without predicate types only the predicate itself is hard
    plain = record_examples(TWO_PEOPLE, SchemaSpec.from_schema(schema), random.Random(0), 0.0, 0.0)
    assert {e.prompt for e in plain} == {"人物", "张三的妻子", "李四的妻子"}


def test_relation_rows_of_texts_with_several_subjects_are_repeated():
    spec = SchemaSpec.from_schema(SCHEMA)
    once = record_examples(RECORD, spec, random.Random(0), 0.0, 0.0)
    twice = record_examples(RECORD, spec, random.Random(0), 0.0, 0.0, ambiguous_repeat=1)
    # RECORD holds one person (周杰伦, twice) and one song: no subject to tell apart, nothing repeated
    assert twice == once
    spec = SchemaSpec.from_schema([{"人物": ["妻子", "出生地"]}])
    once = record_examples(TWO_PEOPLE, spec, random.Random(0), 0.0, 0.0)
    twice = record_examples(TWO_PEOPLE, spec, random.Random(0), 0.0, 0.0, ambiguous_repeat=1)
    relation_rows = [e for e in once if e.prompt != "人物"]
    assert relation_rows == [Example("张三的妻子是李四。", "张三的妻子", ((6, 8),)),
                             Example("张三的妻子是李四。", "李四的妻子", ())]  # fmt: skip
    assert sorted(twice, key=repr) == sorted(once + relation_rows, key=repr)
