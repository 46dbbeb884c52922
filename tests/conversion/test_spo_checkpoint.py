"""SPO checkpoints as PyTorch GPLinker projects save them, against reference forwards.

The references: ``transformers.BertModel`` for the encoder, and the public GlobalPointer /
EfficientGlobalPointer formulas of bert4keras (bojone's GPLinker) and bert4torch for the heads
(``gplinker_reference.py``), each with its own parameter names and layout.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from conversion.errors import CheckpointError
from conversion.models.spo_checkpoint import load_spo_checkpoint
from conversion.models.spo_torch import relation_head_arrays, relation_heads_card
from pipeline.spo_decode import decode_spo, decode_spo_dense, extract_sparse_cells
from pipeline.spo_heads import load_relation_heads, save_relation_heads
from pipeline.tokenizer import IETokenizer, build_vocab
from tests.conversion.gplinker_reference import ReferenceGPLinker, spread_head_weights_

transformers = pytest.importorskip("transformers")

PREDICATES = ["出生地", "毕业院校", "妻子"]
HEAD_SIZE = 16
TEXTS = [
    "张伟出生于杭州，毕业于浙江大学。",
    "李娜的妻子是王芳。",
    "刘洋，1985年生于北京，后来在清华大学读书，他的妻子陈静出生于上海。",
    "赵磊出生于成都。",
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> IETokenizer:
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    build_vocab(TEXTS, path)
    return IETokenizer.from_file(path)


def _bert_config(vocab_size: int, hidden_act: str = "gelu"):
    return transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
        hidden_act=hidden_act,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation="eager",
    )


def _save(model: torch.nn.Module, config: dict, ckpt: Path, weights: str) -> Path:
    ckpt.mkdir(parents=True, exist_ok=True)
    (ckpt / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (ckpt / "predicates.json").write_text(json.dumps(PREDICATES, ensure_ascii=False), encoding="utf-8")
    state = model.state_dict()
    if weights == "model.safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(ckpt / weights))
    else:
        torch.save(state, ckpt / weights)
    return ckpt


def _reference(
    tokenizer, layout, efficient, encoder="bert", names=None, hidden_act="gelu", bias=True, seed=0
):
    torch.manual_seed(seed)
    cfg = _bert_config(tokenizer.vocab_size, hidden_act)
    kwargs = {"head_names": names} if names else {}
    ref = ReferenceGPLinker(cfg, len(PREDICATES), HEAD_SIZE, layout, efficient, encoder, bias=bias, **kwargs)
    spread_head_weights_(ref, seed=seed)
    return ref.eval(), {**cfg.to_dict(), "head_layout": layout}


def _batch(tokenizer):
    rows = tokenizer.encode_batch(TEXTS, max_len=64)
    width = max(len(r) for r in rows)

    def pad(seqs):
        return torch.tensor([list(s) + [0] * (width - len(s)) for s in seqs], dtype=torch.int64)

    ids = pad([r.input_ids for r in rows])
    return rows, ids, pad([r.token_type_ids for r in rows]), (ids != 0).to(torch.int64)


def _decoded(outputs, rows, threshold: float) -> list[list[dict]]:
    e, h, t = (o.numpy() for o in outputs)
    return [
        decode_spo_dense(e[i], h[i], t[i], rows[i], TEXTS[i], PREDICATES, threshold) for i in range(len(rows))
    ]


def _threshold(outputs) -> float:
    """A decoding threshold that a few cells of every output pass (random heads score about half
    of all cells above 0, far more than the decoder keeps)."""
    return min(float(torch.quantile(o[o > -1e3], 0.95)) for o in outputs)


def _assert_same(ref, ours, tokenizer) -> None:
    rows, ids, types, mask = _batch(tokenizer)
    with torch.no_grad():
        expected, got = ref(ids, types, mask), ours(ids, types, mask)
    m = mask.to(torch.bool)
    valid = m[:, None, :, None] & m[:, None, None, :]
    upper = torch.triu(torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool))
    for i, (a, b) in enumerate(zip(expected, got, strict=True)):
        cells = valid & upper if i == 0 else valid.expand_as(a)
        cells = cells.expand_as(a)
        torch.testing.assert_close(b[cells], a[cells], atol=1e-5, rtol=1e-5)
        assert (b[~cells] < -1e3).all() and (a[~cells] < -1e3).all()
    threshold = _threshold(expected)
    want, have = _decoded(expected, rows, threshold), _decoded(got, rows, threshold)
    assert have == want
    assert sum(len(x) for x in want) > 0, "no triple decoded: the comparison would be empty"


def _assert_sparse_same(ref, ours, tokenizer, tmp_path: Path) -> None:
    """The served sparse path of ``ours`` (entity + encoder states, relation heads read back from
    the npz the bridge writes) decodes what the reference's dense outputs decode."""
    rows, ids, types, mask = _batch(tokenizer)
    with torch.no_grad():
        expected = ref(ids, types, mask)
        entity, hidden = ours.entity_and_hidden(ids, types, mask)
    save_relation_heads(tmp_path / "heads.npz", relation_head_arrays(ours))
    shape = {k: v for k, v in relation_heads_card(ours).items() if k != "file"}
    heads = load_relation_heads(tmp_path / "heads.npz", len(PREDICATES), **shape)
    threshold = _threshold(expected)
    want = _decoded(expected, rows, threshold)
    have = [
        decode_spo(
            extract_sparse_cells(
                entity[i].numpy(), hidden[i].numpy(), heads, rows[i].text_start, rows[i].text_end, threshold
            ),
            rows[i].offsets, TEXTS[i], PREDICATES,
        )
        for i in range(len(rows))
    ]  # fmt: skip
    assert [[t | {"score": 0} for t in r] for r in have] == [[t | {"score": 0} for t in r] for r in want]
    for got_row, want_row in zip(have, want, strict=True):
        for got, wanted in zip(got_row, want_row, strict=True):
            assert got["score"] == pytest.approx(wanted["score"], abs=1e-5)


@pytest.mark.parametrize(
    ("layout", "efficient", "encoder", "names", "weights"),
    [
        ("bert4keras", False, "encoder", ("mention_detect", "s_o_head", "s_o_tail"), "model.safetensors"),
        ("bert4keras", True, "bert", None, "pytorch_model.bin"),
        ("bert4torch", False, "bert", None, "model.safetensors"),
        ("bert4torch", True, "bert", ("entity_model", "head_model", "tail_model"), "model.pt"),
    ],
)
def test_each_layout_computes_what_its_reference_computes(
    tmp_path, tokenizer, layout, efficient, encoder, names, weights
) -> None:
    ref, config = _reference(tokenizer, layout, efficient, encoder, names)
    ckpt = _save(ref, config, tmp_path / "ckpt", weights)
    ours = load_spo_checkpoint(ckpt)
    _assert_same(ref, ours, tokenizer)
    _assert_sparse_same(ref, ours, tokenizer, tmp_path)


@pytest.mark.parametrize("stated", ["ie", "bert4torch"])
def test_a_wrongly_stated_layout_computes_something_else(tmp_path, tokenizer, stated) -> None:
    ref, config = _reference(tokenizer, "bert4keras", True)
    ckpt = _save(ref, {**config, "head_layout": stated}, tmp_path / "ckpt", "model.safetensors")
    with pytest.raises(AssertionError):
        _assert_same(ref, load_spo_checkpoint(ckpt), tokenizer)


def test_heads_under_names_stated_in_head_keys_and_without_biases(tmp_path, tokenizer) -> None:
    ref, config = _reference(tokenizer, "bert4torch", True, names=("ner", "sh", "st"), bias=False)
    config["head_keys"] = {"entity": "ner", "head": "sh", "tail": "st"}
    _assert_same(
        ref, load_spo_checkpoint(_save(ref, config, tmp_path / "ckpt", "model.safetensors")), tokenizer
    )


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new", "gelu_pytorch_tanh", "relu"])
def test_encoder_equals_transformers_bertmodel(tmp_path, tokenizer, hidden_act) -> None:
    ref, config = _reference(tokenizer, "bert4torch", False, hidden_act=hidden_act)
    ours = load_spo_checkpoint(_save(ref, config, tmp_path / "ckpt", "model.safetensors"))
    assert ours.config.hidden_act == hidden_act
    _, ids, types, mask = _batch(tokenizer)
    with torch.no_grad():
        want = ref.bert(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state
        got = ours.bert(ids, types, mask, torch.arange(ids.shape[1]))
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


def test_pooler_and_position_ids_are_dropped_and_said(tmp_path, tokenizer, caplog) -> None:
    ref, config = _reference(tokenizer, "bert4torch", False)
    ckpt = _save(ref, config, tmp_path / "ckpt", "pytorch_model.bin")
    state = torch.load(ckpt / "pytorch_model.bin", weights_only=True)
    state["bert.embeddings.position_ids"] = torch.arange(64)[None]  # transformers < 4.31 saved it
    torch.save(state, ckpt / "pytorch_model.bin")
    # importing Paddle Serving (other tests do) disables the loggers that existed then
    logging.getLogger("conversion.models.spo_checkpoint").disabled = False
    with caplog.at_level(logging.INFO, logger="conversion.models.spo_checkpoint"):
        load_spo_checkpoint(ckpt)
    [line] = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    for key in ("bert.pooler.dense.weight", "bert.pooler.dense.bias", "bert.embeddings.position_ids"):
        assert key in line


def _error(ckpt: Path) -> str:
    with pytest.raises(CheckpointError) as err:
        load_spo_checkpoint(ckpt)
    return str(err.value)


def test_unsupported_activation_is_refused(tmp_path, tokenizer) -> None:
    ref, config = _reference(tokenizer, "bert4torch", False)
    ckpt = _save(ref, {**config, "hidden_act": "swish"}, tmp_path / "ckpt", "model.safetensors")
    message = _error(ckpt)
    assert "hidden_act 'swish'" in message and "config.json" in message and "gelu_new" in message


def test_foreign_heads_without_a_stated_layout_are_refused(tmp_path, tokenizer) -> None:
    ref, config = _reference(tokenizer, "bert4keras", False)
    del config["head_layout"]
    message = _error(_save(ref, config, tmp_path / "ckpt", "model.safetensors"))
    assert "head_layout" in message and "bert4keras" in message


def test_unknown_keys_and_files_are_named(tmp_path, tokenizer) -> None:
    ref, config = _reference(tokenizer, "bert4torch", False)
    ckpt = _save(ref, config, tmp_path / "ckpt", "model.safetensors")
    torch.save(ref.state_dict(), ckpt / "model.pt")
    assert "several weights files" in _error(ckpt)
    (ckpt / "model.pt").unlink()
    state = ref.state_dict()
    state["classifier.weight"] = torch.zeros(2, 64)
    torch.save(state, ckpt / "model.pt")
    (ckpt / "model.safetensors").unlink()
    assert "classifier.weight" in _error(ckpt)
    (ckpt / "model.pt").unlink()
    assert "no weights file" in _error(ckpt)


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.mkdir, (self.marker,))


def test_a_pickle_that_runs_code_is_refused_without_running_it(tmp_path, tokenizer) -> None:
    ref, config = _reference(tokenizer, "bert4torch", False)
    ckpt = _save(ref, config, tmp_path / "ckpt", "model.safetensors")
    (ckpt / "model.safetensors").unlink()
    marker = tmp_path / "was-run"
    torch.save({"bert.embeddings.word_embeddings.weight": _RunsCode(marker)}, ckpt / "pytorch_model.bin")
    assert "cannot be read as a state dict" in _error(ckpt)
    assert not marker.exists()
