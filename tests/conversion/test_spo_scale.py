"""A GPLinker model at a real schema's size (500 predicates, like the seeds' COVID-19 knowledge
graph model, served at 256 tokens) goes through the bridge in bounded memory and is served,
sparse, with the triples and scores of the dense model it was trained as."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.bench.models import widen_spo_checkpoint
from conversion import bridge

ROOT = Path(__file__).resolve().parents[2]
DEMO_SPO = ROOT / "build" / "demo" / "spo_ckpt"
PREDICATES, MAX_SEQ_LEN = 500, 256

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DEMO_SPO / "model.pt").is_file(), reason="demo SPO checkpoint not trained"),
]


def _key(triple: dict) -> tuple:
    return tuple(
        triple[k] for k in ("subject_start", "subject_end", "predicate", "object_start", "object_end")
    )


def test_500_predicates_convert_in_bounded_memory_and_serve_the_dense_models_triples(tmp_path) -> None:
    from client import http_client
    from client.bench.local_server import run_server
    from conversion import demo_data
    from conversion.export_spo import torch_engine
    from conversion.models.spo_checkpoint import load_spo_checkpoint
    from conversion.parity import spo_decoder
    from conversion.spec import SPO_DENSE_SPEC
    from pipeline.model_card import load_model_card
    from pipeline.tokenizer import IETokenizer

    ckpt = widen_spo_checkpoint(DEMO_SPO, tmp_path / "ckpt", PREDICATES, max_seq_len=MAX_SEQ_LEN)
    out = tmp_path / "serving_model"
    assert bridge.build(out, tmp_path / "work", seed=0, spo_checkpoint=ckpt, only="spo", int8=False) == 0
    rows = json.loads((out / "parity.json").read_text(encoding="utf-8"))["hops"]
    assert all(r["passed"] for r in rows)
    [sparse] = [r for r in rows if r["to"] == "served sparse"]
    assert sparse["decoded_equal"] and sparse["max_abs_diff"] <= sparse["atol"]
    assert max(r["peak_rss_mib"] for r in rows) < 4096

    card = load_model_card(out / "spo")
    assert len(card.predicates) == PREDICATES and card.max_seq_len == MAX_SEQ_LEN
    assert card.relation_heads is not None and card.outputs == ["entity", "hidden"]
    assert card.output_bytes_per_row(MAX_SEQ_LEN) < 2 * 2**20  # dense: 263 MB

    # the dense reference: the checkpoint's own so_head / so_tail maps, decoded as GPLinker does
    _, records = demo_data.generate(3, n_train=0, n_test=60)
    short = [r["text"] for r in records]
    texts = short[:24] + ["".join(short[i : i + 6]) for i in range(24, 60, 6)]  # and 6 long ones
    tokenizer = IETokenizer.from_file(ckpt / "vocab.txt")
    dense = torch_engine(load_spo_checkpoint(ckpt), SPO_DENSE_SPEC)
    predicates = card.predicate_names
    expected = spo_decoder(texts, tokenizer, predicates, MAX_SEQ_LEN)(dense)
    assert sum(len(r["spo_list"]) for r in expected) > 40, "too few triples to compare"
    assert max(len(t) for t in texts) > 200  # rows of 200+ tokens, not only the demo's short ones

    for backend in ("onnx", "paddle"):
        with run_server(
            tmp_path / backend, backend=backend, models={"spo": {"dir": str(out / "spo")}}
        ) as srv:
            served = http_client.predict("spo", texts, url=srv.http_url, timeout=300)
        for got, want in zip(served, expected, strict=True):
            assert [_key(t) for t in got["spo_list"]] == [_key(t) for t in want["spo_list"]], backend
            for a, b in zip(got["spo_list"], want["spo_list"], strict=True):
                assert a["score"] == pytest.approx(b["score"], abs=1e-4)
