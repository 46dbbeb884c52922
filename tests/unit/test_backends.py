"""Engine backends on the built demo models: equal answers; Paddle predictors reused across threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from client.bench.local_server import SERVING_MODEL
from pipeline.backends import create_backend
from pipeline.model_card import load_model_card

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SERVING_MODEL / "parity.json").exists(), reason="demo models not built"),
]


def _feed(card, batch: int = 2, length: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feed = {}
    for name in card.inputs:
        if name == "input_ids":
            feed[name] = rng.integers(5, 200, (batch, length)).astype("int64")
        elif name == "attention_mask":
            feed[name] = np.ones((batch, length), dtype="int64")
        elif name == "position_ids":
            feed[name] = np.tile(np.arange(length, dtype="int64"), (batch, 1))
        else:
            feed[name] = np.zeros((batch, length), dtype="int64")
    return feed


@pytest.fixture(scope="module", params=["uie", "spo"])
def model(request):
    model_dir = SERVING_MODEL / request.param
    return model_dir, load_model_card(model_dir)


def test_paddle_and_onnx_backends_agree(model):
    model_dir, card = model
    feed = _feed(card)
    paddle = create_backend("paddle", model_dir, card, threads=1)
    onnx = create_backend("onnx", model_dir, card, threads=1)
    try:
        got_p, got_o = paddle.infer(feed), onnx.infer(feed)
        assert set(got_p) == set(got_o) == set(card.outputs)
        for name in card.outputs:
            np.testing.assert_allclose(got_p[name], got_o[name], atol=1e-4)
    finally:
        paddle.close()
        onnx.close()


def _in_threads(backend, feed, n: int, together: bool) -> list[dict]:
    """``n`` calls, each from its own new thread: all at once, or one thread after another."""
    out: list[dict] = [{}] * n
    barrier = threading.Barrier(n) if together else None

    def call(i: int) -> None:
        if barrier is not None:
            barrier.wait()
        out[i] = backend.infer(feed)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
        if not together:
            t.join()
    for t in threads:
        t.join()
    return out


def test_paddle_predictors_are_reused_by_new_threads(model):
    # a Flask-style server runs each request on a new thread: it must not clone a predictor per call
    model_dir, card = model
    feed = _feed(card)
    backend = create_backend("paddle", model_dir, card, threads=1)
    try:
        want = backend.infer(feed)
        one_by_one = _in_threads(backend, feed, 6, together=False)
        assert backend.predictors == 1
        together = _in_threads(backend, feed, 4, together=True)
        assert 1 <= backend.predictors <= 4
        for got in one_by_one + together:
            for name in card.outputs:
                np.testing.assert_array_equal(got[name], want[name])
    finally:
        backend.close()


def test_int8_answers_do_not_depend_on_the_batch(model):
    """Dynamic quantization scales a call's activations together: the INT8 backend runs each row
    alone at its own length, so a row answers the same alone, padded, or beside another."""
    model_dir, card = model
    backend = create_backend("onnx", model_dir, card, threads=1, precision="int8")
    fp32 = create_backend("onnx", model_dir, card, threads=1)
    short, other = _feed(card, batch=1, length=9), _feed(card, batch=1, length=20)
    other["input_ids"] += 7
    padded = {n: np.pad(short[n], ((0, 0), (0, 11))) for n in card.inputs}  # zeros: mask 0, pad id 0
    mixed = {n: np.concatenate([padded[n], other[n]]) for n in card.inputs}
    alone = backend.infer(short)
    together = backend.infer(mixed)
    for name in card.outputs:
        seq = [a for a, kind in card.output_axes[name].items() if kind == "seq"]
        index = tuple(slice(0, 9) if axis in seq else slice(None) for axis in range(1, alone[name].ndim))
        np.testing.assert_array_equal(together[name][0][index], alone[name][0][index])
        # and it is a quantized model: not the FP32 answer
        assert not np.array_equal(alone[name], fp32.infer(short)[name])
    backend.close()
    fp32.close()


def test_int8_of_a_card_without_an_int8_file_says_how_to_build_it(tmp_path):
    import json
    import shutil

    from pipeline.errors import ModelLoadError

    model_dir = tmp_path / "spo"
    shutil.copytree(SERVING_MODEL / "spo", model_dir)
    card = json.loads((model_dir / "model_card.json").read_text(encoding="utf-8"))
    del card["int8"]
    (model_dir / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(ModelLoadError, match="names no INT8 model: build it with"):
        create_backend("onnx", model_dir, load_model_card(model_dir), precision="int8")


def test_served_onnx_engines_stop_spinning_after_calls_unless_asked():
    """``ie.onnx_spin_wait`` (off by default) reaches every served ONNX Runtime session: off, the
    engine threads stop spinning when a call ends; they spin within a call either way. The bridge
    and the benchmark's raw engine keep ONNX Runtime's default (spinning after calls too)."""
    from pipeline.config import IESettings
    from pipeline.service import IEService

    within, stop = "session.intra_op.allow_spinning", "session.force_spinning_stop"
    models = {name: {"dir": str(SERVING_MODEL / name)} for name in ("uie", "spo")}
    for asked, expected_stop in ((None, "1"), (True, "0")):
        extra = {} if asked is None else {"onnx_spin_wait": asked}
        settings = IESettings.model_validate({"backend": "onnx", "models": models, **extra})
        service = IEService(settings, "onnx")
        service.start_engines()
        engines = {name: m.engine for name, m in service.registry.snapshot().items()}
        assert sorted(engines) == ["spo", "uie"]
        assert {e.session_option(within) for e in engines.values()} == {"1"}
        assert {e.session_option(stop) for e in engines.values()} == {expected_stop}
        service.registry.each(lambda m: m.stop_engine())
    model_dir = SERVING_MODEL / "uie"
    default = create_backend("onnx", model_dir, load_model_card(model_dir), threads=1)
    assert (default.session_option(within), default.session_option(stop)) == ("1", "0")
    default.close()
