"""The INT8 hop on the demo models: why the graph is cleaned first, what is refused, the accuracy bar."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from client.bench.local_server import SERVING_MODEL
from conversion import bridge
from conversion.accuracy import AccuracyLossError, agreement_f1
from conversion.int8_hop import INT8_ONNX
from conversion.metrics import spo_gold_facts, spo_predicted_facts
from conversion.parity import make_cases, spo_decoder
from conversion.quantize import QUANTIZED_OPS, QuantizationError, op_counts, quantize_model, quantize_weights
from conversion.spec import SPO_SPEC, UIE_SPEC, Int8Spec
from pipeline.model_card import load_model_card, load_relation_heads_of
from pipeline.tokenizer import IETokenizer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SERVING_MODEL / "parity.json").exists(), reason="demo models not built"),
]


def _quantized(path: Path) -> int:
    counts = op_counts(path)
    return sum(counts[op] for op in QUANTIZED_OPS)


def _cases(spec, model_dir: Path, n: int = 4):
    card = load_model_card(model_dir)
    tokenizer = IETokenizer.from_file(model_dir / card.vocab, card.tokenizer.settings)
    inputs = bridge.parity_inputs(0)
    prompts = inputs.prompts if spec.uses_prompts else None
    return make_cases(spec, tokenizer, inputs.texts, 0, prompts=prompts)[:n], card, tokenizer, inputs


def test_the_paddle2onnx_uie_graph_quantizes_only_once_cleaned(tmp_path) -> None:
    fp32 = SERVING_MODEL / "uie" / "model.onnx"
    # as paddle2onnx writes it, every MatMul weight comes through an Identity node
    quantize_weights(fp32, tmp_path / "raw.int8.onnx", UIE_SPEC.int8)
    assert _quantized(tmp_path / "raw.int8.onnx") == 0
    cases, card, *_ = _cases(UIE_SPEC, SERVING_MODEL / "uie")
    arch = card.model_extra["architecture"]
    report = quantize_model(
        fp32, tmp_path / "model.int8.onnx", tmp_path / "work", UIE_SPEC, arch["num_attention_heads"],
        arch["hidden_size"], cases,
    )  # fmt: skip
    assert report.quantized_nodes == _quantized(tmp_path / "model.int8.onnx") > 0
    assert report.int8_bytes < report.fp32_bytes / 2
    assert report.fp32_rewrite_max_abs_diff <= UIE_SPEC.atol
    assert report.fused.get("SkipLayerNormalization", 0) > 0


def test_a_graph_without_weights_is_refused(tmp_path) -> None:
    import onnx
    from onnx import TensorProto, helper

    # the UIE contract's inputs and outputs, but no weight to quantize
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "l"]) for n in UIE_SPEC.inputs]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["b", "l"]) for n in UIE_SPEC.outputs]
    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["start_prob"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["input_ids"], ["end_prob"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(nodes, "no_weights", inputs, outputs)
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    cases, *_ = _cases(UIE_SPEC, SERVING_MODEL / "uie")
    spec = dataclasses.replace(UIE_SPEC, int8=Int8Spec(fuse=False))
    with pytest.raises(QuantizationError, match="no weight was quantized"):
        quantize_model(path, tmp_path / "model.int8.onnx", tmp_path / "work", spec, 1, 1, cases)


def test_agreement_of_two_empty_answers_is_full() -> None:
    assert agreement_f1([set(), set()], [set(), set()]) == 1.0
    assert agreement_f1([{1}, set()], [set(), set()]) == 0.0
    assert agreement_f1([{1, 2}], [{1}]) == pytest.approx(2 / 3)


def _spo_hop_args(out_dir: Path, texts_n: int = 60) -> dict:
    """``bridge.int8_hop``'s arguments for the demo SPO model copied to ``out_dir``, judged on the
    first ``texts_n`` records of the demo test split."""
    cases, card, tokenizer, inputs = _cases(SPO_SPEC, out_dir, n=6)
    full = inputs.evaluation(True, spo_gold_facts)
    evaluation = dataclasses.replace(full, texts=full.texts[:texts_n], gold=full.gold[:texts_n])
    heads = load_relation_heads_of(out_dir, card)
    decode = spo_decoder(evaluation.texts, tokenizer, card.predicate_names, card.max_seq_len, heads)
    return {
        "out_dir": out_dir, "work_dir": None, "arch": card.model_extra["architecture"], "cases": cases,
        "decode": decode, "facts": spo_predicted_facts, "evaluation": evaluation, "convert": True,
        "previous": None,
    }  # fmt: skip


def test_the_int8_hop_scores_against_gold_and_names_the_file(tmp_path) -> None:
    out_dir = tmp_path / "spo"
    shutil.copytree(SERVING_MODEL / "spo", out_dir)
    log = bridge.ParityLog(tmp_path / "parity.json")
    bridge.int8_hop(SPO_SPEC, log=log, **_spo_hop_args(out_dir))
    [row] = log.rows
    assert row["passed"] and row["kind"] == "accuracy" and row["texts"] == 60
    assert row["f1_from"] > 0.8 and abs(row["f1_delta"]) <= SPO_SPEC.int8.max_f1_drop
    card = json.loads((out_dir / "model_card.json").read_text(encoding="utf-8"))
    assert card["int8"]["file"] == INT8_ONNX and (out_dir / INT8_ONNX).is_file()
    assert card["int8"]["accuracy"]["f1_to"] == row["f1_to"]


def test_an_int8_model_below_the_bar_is_refused_and_removed(tmp_path) -> None:
    out_dir = tmp_path / "spo"
    shutil.copytree(SERVING_MODEL / "spo", out_dir)
    # a bar no quantized model meets: INT8 must beat FP32 by half of F1
    strict = dataclasses.replace(SPO_SPEC, int8=Int8Spec(max_f1_drop=-0.5))
    log = bridge.ParityLog(tmp_path / "parity.json")
    args = _spo_hop_args(out_dir)
    with pytest.raises(AccuracyLossError, match=r"may drop -0\.5"):
        bridge.int8_hop(strict, log=log, **args)
    assert bridge._run_logged(lambda: bridge.int8_hop(strict, log=log, **args), log) == 2
    rows = json.loads((tmp_path / "parity.json").read_text(encoding="utf-8"))["hops"]
    assert len(rows) == 2 and all(r["passed"] is False and r["max_f1_drop"] == -0.5 for r in rows)
    card = json.loads((out_dir / "model_card.json").read_text(encoding="utf-8"))
    assert "int8" not in card and not (out_dir / INT8_ONNX).exists()


def test_a_users_gold_records_judge_their_model(tmp_path) -> None:
    """``--eval-data``: a user's model is scored on their gold records, as the demo is on its split."""
    from conversion.errors import CheckpointError

    data = tmp_path / "mine.jsonl"
    held_out = bridge.parity_inputs(0).held_out[100:140]
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in held_out) + "\n", "utf-8")
    inputs = dataclasses.replace(
        bridge.parity_inputs(0), eval_records=bridge.read_eval_records(data), eval_name=data.name
    )
    evaluation = inputs.evaluation(False, spo_gold_facts)  # not the demo: only the given records
    assert evaluation.name == "mine.jsonl (40 records)" and len(evaluation.gold) == 40
    out_dir = tmp_path / "spo"
    shutil.copytree(SERVING_MODEL / "spo", out_dir)
    args = _spo_hop_args(out_dir)
    card = load_model_card(out_dir)
    tokenizer = IETokenizer.from_file(out_dir / card.vocab, card.tokenizer.settings)
    args["evaluation"] = evaluation
    heads = load_relation_heads_of(out_dir, card)
    args["decode"] = spo_decoder(evaluation.texts, tokenizer, card.predicate_names, card.max_seq_len, heads)
    log = bridge.ParityLog(tmp_path / "parity.json")
    bridge.int8_hop(SPO_SPEC, log=log, **args)
    [row] = log.rows
    assert row["eval_set"] == evaluation.name and row["f1_from"] > 0.8 and "max_f1_drop" in row

    data.write_text('{"text": "张伟出生于杭州。", "spo_list": []}\n{"spo_list": []}\n', "utf-8")
    with pytest.raises(CheckpointError, match=r"mine\.jsonl line 2 has no text"):
        bridge.read_eval_records(data)


def test_the_schema_of_gold_records_asks_for_their_facts() -> None:
    from conversion import demo_data

    def normalized(schema: list) -> tuple[set, dict]:
        plain = {n for n in schema if isinstance(n, str)}
        nested = {k: set(v) for n in schema if isinstance(n, dict) for k, v in n.items()}
        return plain, nested

    # the demo's held-out records hold every fact kind the demo schema asks for
    got = normalized(bridge.schema_of_records(bridge.parity_inputs(0).held_out))
    assert got == normalized(demo_data.uie_schema())
