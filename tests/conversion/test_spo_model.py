"""Tests for the PyTorch SPO model (GPLinker), its checkpoint I/O, ONNX export and a short training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conversion.errors import CheckpointError
from conversion.models.spo_checkpoint import load_spo_checkpoint
from conversion.models.spo_torch import SPOConfig, SPOModel, save_spo_checkpoint

P = 5


def _model(seed: int = 0) -> SPOModel:
    torch.manual_seed(seed)
    cfg = SPOConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_predicates=P,
        head_size=16,
    )
    return SPOModel(cfg).eval()


def _inputs(batch: int, length: int, pad: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(batch * 100 + length)
    ids = torch.randint(1, 50, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    if pad:
        ids[-1, length - pad :] = 0
        mask[-1, length - pad :] = 0
    return ids, torch.zeros_like(ids), mask


@pytest.mark.parametrize(("batch", "length"), [(1, 7), (3, 20)])
def test_output_shapes(batch: int, length: int) -> None:
    with torch.no_grad():
        ent, head, tail = _model()(*_inputs(batch, length))
    assert ent.shape == (batch, 2, length, length)
    assert head.shape == tail.shape == (batch, P, length, length)
    assert ent.dtype == head.dtype == torch.float32


def test_masking() -> None:
    ids, tt, mask = _inputs(2, 12, pad=4)
    with torch.no_grad():
        ent, head, tail = _model()(ids, tt, mask)
    for out in (ent, head, tail):
        assert torch.isfinite(out).all()
        assert (out[1, :, 8:, :] < -1e3).all() and (out[1, :, :, 8:] < -1e3).all()
        assert (out[0].abs() < 1e3).sum() > 0
    lower = torch.tril(torch.ones(12, 12), diagonal=-1).bool()
    assert (ent[:, :, lower] < -1e3).all()
    upper = ~lower
    assert (ent[0][:, upper].abs() < 1e3).all()  # unpadded row: upper triangle incl. diagonal is free
    assert (head[0][:, lower].abs() < 1e3).all()  # relation heads have no triangle mask


def test_padding_does_not_change_real_cells() -> None:
    model = _model()
    ids, tt, mask = _inputs(1, 10)
    pad_ids = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    pad_mask = torch.cat([mask, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    with torch.no_grad():
        a = model(ids, tt, mask)
        b = model(pad_ids, torch.zeros_like(pad_ids), pad_mask)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y[..., :10, :10], atol=1e-5, rtol=1e-5)


def test_save_load_roundtrip(tmp_path) -> None:
    model = _model(seed=3)
    save_spo_checkpoint(model, tmp_path)
    (tmp_path / "predicates.json").write_text(json.dumps([f"p{i}" for i in range(P)]))
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["num_predicates"] == P and cfg["hidden_size"] == 32 and cfg["model_type"] == "bert"
    loaded = load_spo_checkpoint(tmp_path)
    inputs = _inputs(2, 9, pad=2)
    with torch.no_grad():
        for x, y in zip(model(*inputs), loaded(*inputs), strict=True):
            assert torch.equal(x, y)


def test_missing_and_unknown_keys_are_named(tmp_path) -> None:
    model = _model()
    save_spo_checkpoint(model, tmp_path)
    (tmp_path / "predicates.json").write_text(json.dumps([f"p{i}" for i in range(P)]))
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=r"extra\.weight"):
        load_spo_checkpoint(tmp_path)
    del state["extra.weight"], state["bert.encoder.layer.1.output.dense.weight"]
    torch.save(state, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=r"missing bert\.encoder\.layer\.1\.output\.dense\.weight"):
        load_spo_checkpoint(tmp_path)


def test_hf_bert_names() -> None:
    names = set(_model().state_dict())
    for n in (
        "bert.embeddings.word_embeddings.weight",
        "bert.embeddings.position_embeddings.weight",
        "bert.embeddings.token_type_embeddings.weight",
        "bert.embeddings.LayerNorm.weight",
        "bert.encoder.layer.0.attention.self.query.weight",
        "bert.encoder.layer.0.attention.self.value.bias",
        "bert.encoder.layer.0.attention.output.dense.weight",
        "bert.encoder.layer.0.attention.output.LayerNorm.bias",
        "bert.encoder.layer.1.intermediate.dense.weight",
        "bert.encoder.layer.1.output.dense.weight",
        "bert.encoder.layer.1.output.LayerNorm.weight",
        "entity_head.dense.weight",
        "head_head.dense.weight",
        "tail_head.dense.weight",
    ):
        assert n in names


def test_onnx_export_matches_onnxruntime(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = _model()
    path = tmp_path / "spo.onnx"
    ins, outs = ["input_ids", "token_type_ids", "attention_mask"], ["entity", "so_head", "so_tail"]
    axes = {n: {0: "batch", 1: "seq"} for n in ins} | {n: {0: "batch", 2: "seq", 3: "seq"} for n in outs}
    torch.onnx.export(
        model,
        _inputs(2, 8),
        str(path),
        opset_version=13,
        dynamo=False,
        input_names=ins,
        output_names=outs,
        dynamic_axes=axes,
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, length in ((1, 5), (3, 23)):
        inputs = _inputs(batch, length, pad=2)
        got = sess.run(None, {n: t.numpy() for n, t in zip(ins, inputs, strict=True)})
        with torch.no_grad():
            ref = model(*inputs)
        for g, r in zip(got, ref, strict=True):
            assert g.shape == tuple(r.shape)
            np.testing.assert_allclose(g, r.numpy(), atol=1e-4, rtol=0)


def test_few_training_steps_reduce_loss(tmp_path) -> None:
    from conversion.demo_data import write_dataset
    from conversion.train_spo import collate, gplinker_loss, make_example, read_jsonl, read_predicates
    from pipeline.tokenizer import IETokenizer

    data = write_dataset(tmp_path, seed=5, n_train=24, n_test=4)
    tok = IETokenizer.from_file(data / "vocab.txt")
    names = [p["name"] for p in read_predicates(data)]
    index = {n: i for i, n in enumerate(names)}
    recs = [r for r in read_jsonl(data / "train.jsonl") if len(r["text"]) < 60][:16]
    examples = [
        make_example(r, e, index)
        for r, e in zip(recs, tok.encode_batch([r["text"] for r in recs]), strict=True)
    ]
    assert all(ex.entity and ex.head and ex.tail for ex in examples)
    torch.manual_seed(0)
    cfg = SPOConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=64, num_predicates=len(names), head_size=16,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
    model = SPOModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = collate(examples, len(names))
    losses = []
    for _ in range(15):
        loss = gplinker_loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_sparse_multilabel_ce_matches_dense_formula() -> None:
    from conversion.train_spo import sparse_multilabel_ce

    g = torch.Generator().manual_seed(1)
    y_pred = torch.randn(3, 2, 40, generator=g) * 4
    pos = [[[3, 7], []], [[39], [1, 2]], [[], [5]]]
    y_true = torch.zeros(3, 2, 2, dtype=torch.long)
    for b, row in enumerate(pos):
        for c, idx in enumerate(row):
            y_true[b, c, : len(idx)] = torch.tensor(idx, dtype=torch.long)
    got = sparse_multilabel_ce(y_true, y_pred)
    for b, row in enumerate(pos):
        for c, idx in enumerate(row):
            s = y_pred[b, c].double()
            is_pos = torch.zeros(40, dtype=torch.bool)
            is_pos[idx] = True
            ref = torch.log1p(torch.exp(-s[is_pos]).sum()) + torch.log1p(torch.exp(s[~is_pos]).sum())
            assert abs(got[b, c].item() - ref.item()) < 1e-4


def test_init_relation_logits_start_negative() -> None:
    cfg = SPOConfig(vocab_size=50, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                    max_position_embeddings=64, num_predicates=P, head_size=16,
                    relation_init_offset=8.0)  # fmt: skip
    torch.manual_seed(0)
    model = SPOModel(cfg).eval()
    assert abs(model.bert.encoder.layer[0].attention.self.query.weight.std().item() - 0.02) < 0.005
    with torch.no_grad():
        _, head, tail = model(*_inputs(2, 10))
    for out in (head, tail):
        assert out.max().item() < -6 and out.min().item() > -10


def test_train_spo_writes_checkpoint(tmp_path) -> None:
    from conversion.demo_data import write_dataset
    from conversion.train_spo import SERVE_MAX_LEN, train_spo

    data = write_dataset(tmp_path / "data", seed=3, n_train=40, n_test=6)
    small = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64, "head_size": 16}
    hp = {"max_steps": 3, "batch_size": 8, "first_eval": 100}
    result = train_spo(data, tmp_path / "ckpt", seed=0, hparams=hp, model_overrides=small)
    assert result["steps"] == 3 and 0.0 <= result["f1"] <= 1.0
    assert set(result) == {"f1", "precision", "recall", "dev", "seconds", "steps", "max_seq_len"}
    assert set(result["dev"]) == {"f1", "precision", "recall"}
    assert result["max_seq_len"] == SERVE_MAX_LEN  # the bridge serves the model at this length
    for name in ("config.json", "model.pt", "predicates.json", "vocab.txt", "metrics.json"):
        assert (tmp_path / "ckpt" / name).is_file()
    model = load_spo_checkpoint(tmp_path / "ckpt")
    assert model.config.max_position_embeddings == 256 and model.config.hidden_size == 32
