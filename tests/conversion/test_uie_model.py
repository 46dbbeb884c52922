"""UIE model in Paddle: shapes, masking, PaddleNLP checkpoint layout, static export + Paddle Inference."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import paddle
import pytest

from conversion.models.uie_paddle import (
    MODEL_STATE,
    UIE,
    CheckpointError,
    UIEConfig,
    load_uie_checkpoint,
    save_uie_checkpoint,
)

INPUT_NAMES = ("input_ids", "token_type_ids", "position_ids", "attention_mask")


def tiny_config(**kw) -> UIEConfig:
    base = dict(
        vocab_size=60,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    base.update(kw)
    return UIEConfig(**base)


def make_model(seed: int = 0, **kw) -> UIE:
    paddle.seed(seed)
    model = UIE(tiny_config(**kw))
    model.eval()
    return model


def make_batch(lengths: list[int], seed: int = 1) -> dict[str, np.ndarray]:
    """Rows of ``[CLS] prompt [SEP] text [SEP]``-like ids, padded to the longest row."""
    rng = np.random.default_rng(seed)
    b, width = len(lengths), max(lengths)
    ids = np.zeros((b, width), dtype="int64")
    types = np.zeros((b, width), dtype="int64")
    mask = np.zeros((b, width), dtype="int64")
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(5, 60, n)
        types[i, n // 2 : n] = 1
        mask[i, :n] = 1
    pos = np.tile(np.arange(width, dtype="int64"), (b, 1))
    return {"input_ids": ids, "token_type_ids": types, "position_ids": pos, "attention_mask": mask}


def run(model: UIE, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    with paddle.no_grad():
        start, end = model(*(paddle.to_tensor(batch[k]) for k in INPUT_NAMES))
    return start.numpy(), end.numpy()


def write_vocab(path: Path, n: int = 60) -> Path:
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"t{i}" for i in range(n - 5)]
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def test_shapes_and_probability_range():
    model = make_model()
    start, end = run(model, make_batch([9, 6, 3]))
    assert start.shape == end.shape == (3, 9)
    assert start.dtype == np.float32
    real = make_batch([9, 6, 3])["attention_mask"] == 1
    assert np.all((start[real] > 0) & (start[real] < 1))
    assert np.all((end[real] > 0) & (end[real] < 1))
    assert np.all(start[~real] == 0) and np.all(end[~real] == 0)


def test_padding_invariance():
    model = make_model()
    alone = make_batch([7])
    padded = make_batch([7, 12])  # same seed -> row 0 has the same ids, now padded to 12
    assert np.array_equal(padded["input_ids"][0, :7], alone["input_ids"][0])
    s1, e1 = run(model, alone)
    s2, e2 = run(model, padded)
    np.testing.assert_allclose(s2[0, :7], s1[0], atol=1e-5)
    np.testing.assert_allclose(e2[0, :7], e1[0], atol=1e-5)


def test_eval_is_deterministic_and_train_uses_dropout():
    model = make_model()
    batch = make_batch([10, 8])
    a, _ = run(model, batch)
    b, _ = run(model, batch)
    np.testing.assert_array_equal(a, b)
    model.train()
    c, _ = run(model, batch)
    assert not np.allclose(a, c)


def test_parameter_names_match_paddlenlp():
    names = set(make_model().state_dict())
    for name in (
        "ernie.embeddings.word_embeddings.weight",
        "ernie.embeddings.position_embeddings.weight",
        "ernie.embeddings.token_type_embeddings.weight",
        "ernie.embeddings.task_type_embeddings.weight",
        "ernie.embeddings.layer_norm.weight",
        "ernie.encoder.layers.1.self_attn.q_proj.weight",
        "ernie.encoder.layers.1.self_attn.out_proj.bias",
        "ernie.encoder.layers.1.linear1.weight",
        "ernie.encoder.layers.1.linear2.bias",
        "ernie.encoder.layers.1.norm1.weight",
        "ernie.encoder.layers.1.norm2.bias",
        "ernie.pooler.dense.weight",
        "linear_start.weight",
        "linear_end.bias",
    ):
        assert name in names, name
    assert "ernie.embeddings.task_type_embeddings.weight" not in make_model(use_task_id=False).state_dict()


def test_config_json_roundtrip_and_legacy_format(tmp_path):
    cfg = tiny_config(hidden_act="relu", type_vocab_size=2)
    cfg.to_json(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["architectures"] == ["UIE"] and data["hidden_size"] == 32
    assert UIEConfig.from_checkpoint_dir(tmp_path) == cfg
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    args = {k: v for k, v in data.items() if k not in ("architectures", "model_type", "intermediate_size")}
    args["init_class"] = "ErnieModel"
    (legacy / "model_config.json").write_text(json.dumps({"init_args": [args], "init_class": "UIE"}))
    got = UIEConfig.from_checkpoint_dir(legacy)
    assert got.intermediate_size == 4 * 32  # ERNIE default when the old file omits it
    assert got.hidden_act == "relu" and got.type_vocab_size == 2


@pytest.mark.parametrize("style", ["config.json", "model_config.json"])
def test_checkpoint_roundtrip_both_config_styles(tmp_path, style):
    model = make_model(seed=3)
    cfg = model.config
    vocab = write_vocab(tmp_path / "src_vocab.txt")
    ckpt = save_uie_checkpoint(model, cfg, vocab, tmp_path / "ckpt")
    if style == "model_config.json":
        data = json.loads((ckpt / "config.json").read_text())
        (ckpt / "config.json").unlink()
        data.pop("architectures")
        data["init_class"] = "ErnieModel"
        (ckpt / "model_config.json").write_text(json.dumps({"init_args": [data], "init_class": "UIE"}))
    assert (ckpt / "vocab.txt").read_text() == vocab.read_text()
    loaded, loaded_cfg = load_uie_checkpoint(ckpt)
    assert loaded_cfg == cfg
    batch = make_batch([11, 5])
    for want, got in zip(run(model, batch), run(loaded, batch), strict=True):
        np.testing.assert_array_equal(want, got)


def test_legacy_encoder_prefix_and_bookkeeping_key_load(tmp_path):
    model = make_model(seed=4)
    ckpt = save_uie_checkpoint(model, model.config, write_vocab(tmp_path / "v.txt"), tmp_path / "ckpt")
    state = paddle.load(str(ckpt / MODEL_STATE), return_numpy=True)
    old = {("encoder." + k[len("ernie.") :] if k.startswith("ernie.") else k): v for k, v in state.items()}
    old["StructuredToParameterName@@"] = {k: f"param_{i}" for i, k in enumerate(old)}
    paddle.save(old, str(ckpt / MODEL_STATE))
    loaded, _ = load_uie_checkpoint(ckpt)
    batch = make_batch([6])
    np.testing.assert_array_equal(run(model, batch)[0], run(loaded, batch)[0])


def test_missing_unexpected_and_mismatched_keys_raise(tmp_path):
    model = make_model()
    ckpt = save_uie_checkpoint(model, model.config, write_vocab(tmp_path / "v.txt"), tmp_path / "ckpt")
    state = paddle.load(str(ckpt / MODEL_STATE), return_numpy=True)

    missing = dict(state)
    del missing["linear_end.weight"]
    paddle.save(missing, str(ckpt / MODEL_STATE))
    with pytest.raises(CheckpointError, match=r"missing=\['linear_end.weight'\]"):
        load_uie_checkpoint(ckpt)

    extra = dict(state, **{"classifier.weight": np.zeros((2, 2), "float32")})
    paddle.save(extra, str(ckpt / MODEL_STATE))
    with pytest.raises(CheckpointError, match=r"classifier\.weight"):
        load_uie_checkpoint(ckpt)

    wrong = dict(state, **{"linear_start.bias": np.zeros((3,), "float32")})
    paddle.save(wrong, str(ckpt / MODEL_STATE))
    with pytest.raises(CheckpointError, match=r"linear_start\.bias"):
        load_uie_checkpoint(ckpt)

    (ckpt / "vocab.txt").unlink()
    with pytest.raises(CheckpointError, match=r"vocab\.txt"):
        load_uie_checkpoint(ckpt)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_pdparams_that_runs_code_is_refused_without_running_it(tmp_path):
    model = make_model()
    ckpt = save_uie_checkpoint(model, model.config, write_vocab(tmp_path / "v.txt"), tmp_path / "ckpt")
    state = paddle.load(str(ckpt / MODEL_STATE), return_numpy=True)
    marker = tmp_path / "was-run"
    with (ckpt / MODEL_STATE).open("wb") as f:
        pickle.dump({**state, "linear_end.bias": _RunsCode(marker)}, f, protocol=4)
    with pytest.raises(CheckpointError, match=r"not a plain state dict of arrays \(posix\.mkdir"):
        load_uie_checkpoint(ckpt)
    assert not marker.exists()
    with (ckpt / MODEL_STATE).open("wb") as f:  # the same dict without it loads as before
        pickle.dump(state, f, protocol=4)
    loaded, _ = load_uie_checkpoint(ckpt)
    batch = make_batch([6])
    np.testing.assert_array_equal(run(model, batch)[0], run(loaded, batch)[0])


def test_a_safetensors_checkpoint_loads_like_pdparams(tmp_path):
    from safetensors.numpy import save_file

    model = make_model(seed=2)
    ckpt = save_uie_checkpoint(model, model.config, write_vocab(tmp_path / "v.txt"), tmp_path / "ckpt")
    state = paddle.load(str(ckpt / MODEL_STATE), return_numpy=True)
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(ckpt / "model.safetensors"))
    (ckpt / MODEL_STATE).unlink()
    loaded, _ = load_uie_checkpoint(ckpt)
    batch = make_batch([7])
    np.testing.assert_array_equal(run(model, batch)[0], run(loaded, batch)[0])


def test_static_export_and_paddle_inference_match(tmp_path):
    from paddle import inference
    from paddle.static import InputSpec

    model = make_model(seed=5)
    batches = [make_batch([9, 4, 7], seed=2), make_batch([20], seed=3)]
    expected = [run(model, b) for b in batches]

    spec = [InputSpec([None, None], "int64", name) for name in INPUT_NAMES]
    static = paddle.jit.to_static(model, input_spec=spec, full_graph=True)
    prefix = tmp_path / "export" / "inference"
    paddle.jit.save(static, str(prefix))
    written = sorted(p.name for p in prefix.parent.iterdir())
    assert "inference.pdiparams" in written
    model_file = prefix.with_suffix(".json")
    if not model_file.exists():  # legacy program format
        model_file = prefix.with_suffix(".pdmodel")
    assert model_file.exists(), written

    config = inference.Config(str(model_file), str(prefix.with_suffix(".pdiparams")))
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(1)
    predictor = inference.create_predictor(config)
    assert list(predictor.get_input_names()) == list(INPUT_NAMES)
    for batch, (want_start, want_end) in zip(batches, expected, strict=True):
        for name in INPUT_NAMES:
            predictor.get_input_handle(name).copy_from_cpu(batch[name])
        predictor.run()
        outs = [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]
        assert len(outs) == 2
        np.testing.assert_allclose(outs[0], want_start, atol=1e-5)
        np.testing.assert_allclose(outs[1], want_end, atol=1e-5)


def _torch_hidden(model, ids, types, mask):
    import torch

    add = ((1.0 - mask.to(torch.float32)) * -1e4)[:, None, None, :]
    x = model.ernie.embeddings(ids, types, torch.arange(ids.shape[1]).expand_as(ids))
    for layer in model.ernie.encoder.layers:
        x = layer(x, add)
    return x


def test_uie_encoder_started_from_a_bert_encoder_reads_text_as_bert_does():
    import torch

    from conversion.models.spo_torch import SPOConfig, SPOModel
    from conversion.models.uie_torch import TorchUIE, init_from_bert_encoder, init_torch_uie
    from conversion.train_uie import tiny_config

    torch.manual_seed(0)
    bert = SPOModel(SPOConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=48, max_position_embeddings=24, num_predicates=3,
                              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).eval()  # fmt: skip
    uie = TorchUIE(tiny_config(50, 32, 2, 4, intermediate_size=48))
    init_torch_uie(uie, seed=0)
    assert init_from_bert_encoder(uie, bert.state_dict()) == 5 + 2 * 16
    ids = torch.randint(1, 50, (2, 10))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    want = bert.bert(ids, torch.zeros_like(ids), mask, torch.arange(10))
    got = _torch_hidden(uie, ids, torch.ones_like(ids), mask)  # UIE's text segment is 1
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-5, rtol=1e-5)

    narrow = TorchUIE(tiny_config(50, 32, 2, 4))  # intermediate 128: not the BERT's 48
    with pytest.raises(ValueError, match=r"intermediate\.dense\.weight"):
        init_from_bert_encoder(narrow, bert.state_dict())
