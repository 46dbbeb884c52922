"""Checkpoints as bert4torch writes them (``save_weights``), against bert4torch's own model.

The model is built with bert4torch's classes as its GPLinker example builds it
(``bert4torch_example.py``); the references are its forward and the example's decoding.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conversion import bridge
from conversion.errors import CheckpointError
from conversion.models.spo_checkpoint import load_spo_checkpoint
from pipeline.tokenizer import build_vocab
from tests.conversion.bert4torch_example import (
    example_model,
    extract_spoes,
    import_bert4torch,
    spread_heads_,
    write_bert4torch_config,
)

PREDICATES = ["出生地", "毕业院校", "妻子"]
MAXLEN = 128  # the example's training length


def _texts() -> list[str]:
    """Demo texts that fit one row at MAXLEN (the example truncates longer ones)."""
    return [t for t in bridge.parity_inputs(0).texts if len(t) <= MAXLEN - 2][:16]


def _checkpoint(ckpt: Path, efficient: bool, weights: str, **config: object):
    """A random GPLinker built and saved as the example does; (model, bert4torch tokenizer)."""
    ckpt.mkdir(parents=True)
    build_vocab(bridge.parity_inputs(0).texts, ckpt / "vocab.txt")
    vocab_size = len((ckpt / "vocab.txt").read_text(encoding="utf-8").splitlines())
    path = write_bert4torch_config(ckpt / "bert4torch_config.json", vocab_size, **config)
    torch.manual_seed(0)
    model = example_model(path, len(PREDICATES), efficient=efficient)
    tokenizer = import_bert4torch().Tokenizer(str(ckpt / "vocab.txt"), do_lower_case=True)
    spread_heads_(model, tokenizer, max(_texts(), key=len), (0.01, 0.2) if efficient else (0.03, 0.3))
    model.save_weights(str(ckpt / weights))
    (ckpt / "predicates.json").write_text(json.dumps(PREDICATES, ensure_ascii=False), encoding="utf-8")
    return model, tokenizer


@pytest.mark.parametrize(
    ("efficient", "weights"),
    [(False, "best_model.pt"), (True, "best_model.safetensors"), (False, "pytorch_model.bin")],
)
def test_save_weights_is_read_with_bert4torchs_logits(tmp_path, efficient, weights) -> None:
    ckpt = tmp_path / "ckpt"
    ref, tokenizer = _checkpoint(ckpt, efficient, weights)
    assert any(k.startswith("bert.encoderLayer.") for k in ref.state_dict())  # its own names
    mine = load_spo_checkpoint(ckpt)
    assert mine.config.efficient_heads == efficient
    for text in _texts()[:6]:
        token_ids, segment_ids = tokenizer.encode(text, maxlen=MAXLEN)
        ids, segments = torch.tensor([token_ids]), torch.tensor([segment_ids])
        with torch.no_grad():
            theirs = ref(ids, segments)
            ours = mine(ids, segments, torch.ones_like(ids))
        for t, o in zip(theirs, ours, strict=True):
            t, o = t.numpy(), o.numpy()
            scored = np.isfinite(t) & (t > -1e6)  # cells bert4torch does not mask
            assert scored.any()
            assert np.abs(t[scored] - o[scored]).max() < 1e-4


def test_keys_of_neither_encoder_nor_heads_are_refused_naming_the_fix(tmp_path) -> None:
    ckpt = tmp_path / "ckpt"
    _checkpoint(ckpt, False, "best_model.pt")
    state = torch.load(ckpt / "best_model.pt", weights_only=True)
    state["classifier.weight"] = torch.zeros(2, 32)
    torch.save(state, ckpt / "best_model.pt")
    with pytest.raises(CheckpointError) as info:
        load_spo_checkpoint(ckpt)
    message = str(info.value)
    assert "classifier.weight" in message and "bert.encoderLayer" not in message
    assert "bert4torch" in message and "head_keys" in message


@pytest.mark.slow  # a bridge build and a live server
def test_a_save_weights_checkpoint_is_served_at_its_length_with_bert4torchs_triples(tmp_path) -> None:
    from client import rpc_client
    from client.bench.local_server import run_server

    ckpt = tmp_path / "ckpt"
    ref, tokenizer = _checkpoint(ckpt, False, "best_model.pt", maxlen=MAXLEN)
    out = tmp_path / "serving_model"
    assert bridge.build(out, tmp_path / "work", spo_checkpoint=ckpt, only="spo", int8=False) == 0
    card = json.loads((out / "spo" / "model_card.json").read_text(encoding="utf-8"))
    assert card["max_seq_len"] == MAXLEN  # said in bert4torch_config.json; position table 512
    assert card["max_seq_len_source"] == "bert4torch_config.json maxlen"

    texts = _texts()
    expected = [extract_spoes(ref, tokenizer, t, PREDICATES, MAXLEN) for t in texts]
    assert sum(map(len, expected)) > 0, "bert4torch decodes no triple: nothing would be compared"
    with run_server(tmp_path / "srv", backend="onnx", models={"spo": {"dir": str(out / "spo")}}) as srv:
        served = rpc_client.predict("spo", texts, endpoint=srv.rpc_endpoint)
    keys = ("subject", "predicate", "object", "subject_start", "object_start")
    assert [{tuple(t[k] for k in keys) for t in r["spo_list"]} for r in served] == expected
