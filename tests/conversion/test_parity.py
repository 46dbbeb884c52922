"""The parity checker: feeds, diff rules, named errors, and detection of a perturbed converted weight."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest

from conversion.parity import (
    DecodedMismatchError,
    HopResult,
    MissingOutputError,
    ParityError,
    ShapeMismatchError,
    check,
    compare,
    decoded_equal,
    make_cases,
    max_abs_diff,
    onnx_engine,
    pad_rows,
)
from conversion.spec import SPO_DENSE_SPEC, SPO_SPEC, UIE_SPEC
from pipeline.tokenizer import IETokenizer, build_vocab

TEXTS = [
    "张三出生于北京。",
    "《红楼梦》的作者是曹雪芹，1791年由程伟元出版。",
    "李四是上海人，毕业于复旦大学，现任华为公司工程师。" * 3,
    "王五。",
    "The quick brown fox 跳过了 lazy dog 2024。",
]
PROMPTS = ["人物", "出生地", "张三的出生地", "作品的作者"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> IETokenizer:
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    build_vocab(TEXTS + PROMPTS, path)
    return IETokenizer.from_file(path)


def test_make_cases_cover_batches_lengths_and_padding(tokenizer: IETokenizer) -> None:
    cases = make_cases(UIE_SPEC, tokenizer, TEXTS, seed=3, prompts=PROMPTS)
    assert len(cases) >= 20
    batches = [c["input_ids"].shape[0] for c in cases]
    lengths = [c["input_ids"].shape[1] for c in cases]
    assert min(batches) == 1 and max(batches) == UIE_SPEC.cases.max_batch == 16
    assert min(lengths) <= 8 and max(lengths) == 256 and all(5 <= n <= 256 for n in lengths)
    padded = 0
    for c in cases:
        assert set(c) == set(UIE_SPEC.inputs)
        assert all(a.dtype == np.int64 for a in c.values())
        mask = c["attention_mask"]
        assert np.array_equal(c["position_ids"][0], np.arange(mask.shape[1]))
        assert (c["input_ids"][mask == 0] == 0).all()
        assert (mask[:, 0] == 1).all()
        padded += int((mask == 0).any())
        # pair rows: token type 1 only after the first [SEP]
        assert (c["token_type_ids"][:, :2] == 0).all()
    assert padded >= len(cases) // 2
    again = make_cases(UIE_SPEC, tokenizer, TEXTS, seed=3, prompts=PROMPTS)
    assert all(np.array_equal(a["input_ids"], b["input_ids"]) for a, b in zip(cases, again, strict=True))
    spo = make_cases(SPO_SPEC, tokenizer, TEXTS, seed=3)
    assert set(spo[0]) == set(SPO_SPEC.inputs)
    assert (spo[1]["token_type_ids"] == 0).all()


def test_pad_rows(tokenizer: IETokenizer) -> None:
    rows = tokenizer.encode_batch(["张三", "李四是上海人"])
    feeds = pad_rows(rows, UIE_SPEC.inputs)
    assert feeds["input_ids"].shape == (2, 8)
    assert feeds["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0, 0, 0], [1] * 8]
    assert feeds["position_ids"][0].tolist() == list(range(8))


def test_max_abs_diff_rules() -> None:
    a = np.array([[0.5, -1e4, 2.0]], dtype=np.float32)
    assert max_abs_diff(a, a.copy()) == 0.0
    b = a.copy()
    b[0, 1] = -1e4 + 0.01  # both masked: not compared by value
    assert max_abs_diff(a, b, masked_below=-1e3) == 0.0
    assert max_abs_diff(a, b) == pytest.approx(0.01, abs=2e-3)
    c = a.copy()
    c[0, 1] = 3.0  # masked in one engine only
    assert math.isinf(max_abs_diff(a, c, masked_below=-1e3))
    d = a.copy()
    d[0, 0] = np.nan
    assert math.isinf(max_abs_diff(a, d))


def test_decoded_equal() -> None:
    a = [{"人物": [{"text": "张三", "start": 0, "end": 2, "probability": 0.9}]}]
    b = copy.deepcopy(a)
    b[0]["人物"][0]["probability"] = 0.90001
    assert decoded_equal(a, b, 1e-4) == ""
    b[0]["人物"][0]["end"] = 3
    assert "end" in decoded_equal(a, b, 1e-4)
    assert decoded_equal(a, [], 1e-4)


def _fixed_engine(values: dict[str, np.ndarray]):
    def run(feeds):
        batch = feeds["input_ids"].shape[0]
        return {k: np.repeat(v[None], batch, axis=0) for k, v in values.items()}

    return run


FEEDS = [{n: np.ones((2, 4), dtype=np.int64) for n in UIE_SPEC.inputs}]


def test_structural_errors() -> None:
    good = _fixed_engine({"start_prob": np.zeros(4, np.float32), "end_prob": np.zeros(4, np.float32)})
    missing = _fixed_engine({"start_prob": np.zeros(4, np.float32)})
    short = _fixed_engine({"start_prob": np.zeros(3, np.float32), "end_prob": np.zeros(4, np.float32)})
    with pytest.raises(MissingOutputError) as e:
        compare(UIE_SPEC, "a", "b", good, missing, FEEDS)
    assert e.value.result is not None and e.value.result.as_row()["passed"] is False
    with pytest.raises(ShapeMismatchError):
        compare(UIE_SPEC, "a", "b", good, short, FEEDS)


def test_decoded_mismatch_within_atol() -> None:
    a = _fixed_engine({"start_prob": np.full(4, 0.49999, np.float32), "end_prob": np.zeros(4, np.float32)})
    b = _fixed_engine({"start_prob": np.full(4, 0.50001, np.float32), "end_prob": np.zeros(4, np.float32)})

    def decode(engine):
        return (engine(FEEDS[0])["start_prob"] > 0.5).tolist()

    result = compare(UIE_SPEC, "a", "b", a, b, FEEDS, decode)
    assert result.max_abs_diff < UIE_SPEC.atol and result.decoded_equal is False and not result.passed
    with pytest.raises(DecodedMismatchError):
        check(UIE_SPEC, "a", "b", a, b, FEEDS, decode)
    assert check(UIE_SPEC, "a", "a", a, a, FEEDS, decode).passed


# -- real converted models ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def uie_model(tokenizer: IETokenizer):
    import paddle

    from conversion.models.uie_paddle import UIE, UIEConfig

    paddle.seed(1)
    cfg = UIEConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512,
    )  # fmt: skip
    model = UIE(cfg)
    model.eval()
    return model


def test_uie_static_passes_and_perturbed_param_fails(uie_model, tokenizer: IETokenizer, tmp_path: Path):
    import paddle

    from conversion.export_uie import dygraph_engine, export_static
    from conversion.serving_export import model_dir_engine

    cases = make_cases(UIE_SPEC, tokenizer, TEXTS, seed=0, prompts=PROMPTS)
    reference = dygraph_engine(uie_model)
    export_static(uie_model, tmp_path / "ok")
    ok = model_dir_engine(tmp_path / "ok", "inference.json", "inference.pdiparams", UIE_SPEC)
    result = check(UIE_SPEC, "dygraph", "static", reference, ok, cases)
    assert result.passed and result.max_abs_diff <= 1e-5 and result.cases >= 20

    perturbed = copy.deepcopy(uie_model)
    bias = perturbed.linear_start.bias
    bias.set_value(bias.numpy() + np.float32(1e-2))  # one parameter of the converted model
    export_static(perturbed, tmp_path / "bad")
    bad = model_dir_engine(tmp_path / "bad", "inference.json", "inference.pdiparams", UIE_SPEC)
    with pytest.raises(ParityError) as e:
        check(UIE_SPEC, "dygraph", "static", reference, bad, cases)
    assert e.value.max_abs_diff > UIE_SPEC.atol
    assert isinstance(e.value.result, HopResult) and e.value.result.as_row()["passed"] is False
    assert paddle.in_dynamic_mode()


def test_spo_onnx_passes_and_perturbed_initializer_fails(tokenizer: IETokenizer, tmp_path: Path) -> None:
    import onnx
    import torch
    from onnx import numpy_helper

    from conversion.export_spo import export_onnx, torch_engine
    from conversion.models.spo_torch import SPOConfig, SPOModel

    torch.manual_seed(0)
    cfg = SPOConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_predicates=3, head_size=16,
    )  # fmt: skip
    model = SPOModel(cfg).eval()
    path = export_onnx(model, tmp_path / "spo.onnx", SPO_DENSE_SPEC)
    cases = make_cases(SPO_DENSE_SPEC, tokenizer, TEXTS, seed=0)
    reference = torch_engine(model, SPO_DENSE_SPEC)
    assert check(SPO_DENSE_SPEC, "torch", "onnx", reference, onnx_engine(path), cases).passed

    proto = onnx.load(str(path))
    init = next(i for i in proto.graph.initializer if i.name.endswith("embeddings.LayerNorm.bias"))
    arr = numpy_helper.to_array(init).copy()
    arr.flat[0] += np.float32(1e-2)  # one weight
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(proto, str(tmp_path / "bad.onnx"))
    with pytest.raises(ParityError) as e:
        check(SPO_DENSE_SPEC, "torch", "onnx", reference, onnx_engine(tmp_path / "bad.onnx"), cases)
    assert e.value.max_abs_diff > SPO_DENSE_SPEC.atol
