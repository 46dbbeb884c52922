"""inference_model_to_serving: layout, prototxt contents, stream file, alias mapping at run time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import paddle
import pytest
from google.protobuf import text_format
from paddle.static import InputSpec

from conversion.serving_export import (
    CLIENT_CONF,
    CLIENT_CONF_STREAM,
    SERVER_CONF,
    SERVER_CONF_STREAM,
    ServingExportError,
    find_model_files,
    inference_model_to_serving,
    load_serving_config,
    match_feed_alias,
    positional_fetch_alias,
    read_model_vars,
    read_serving_conf,
    serving_dir_engine,
)

pb = pytest.importorskip("paddle_serving_server.proto.general_model_config_pb2")


class Small(paddle.nn.Layer):
    def __init__(self) -> None:
        super().__init__()
        self.emb = paddle.nn.Embedding(20, 3)
        self.lin = paddle.nn.Linear(3, 2)

    def forward(self, ids, feat):
        h = self.emb(ids) + feat.unsqueeze(1)
        return paddle.nn.functional.sigmoid(self.lin(h)).sum(-1), h.mean(-1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("small")
    paddle.seed(0)
    layer = Small()
    layer.eval()
    spec = [
        InputSpec([None, None], "int64", name="x2paddle_ids"),
        InputSpec([None, 3], "float32", name="feat"),
    ]
    paddle.jit.save(paddle.jit.to_static(layer, input_spec=spec, full_graph=True), str(out / "inference"))
    return out


def test_read_model_vars(model_dir: Path) -> None:
    feeds, fetches = read_model_vars(model_dir, "inference.json", "inference.pdiparams")
    assert [(v.name, v.dtype, v.shape) for v in feeds] == [
        ("x2paddle_ids", "int64", (-1, -1)),
        ("feat", "float32", (-1, 3)),
    ]
    assert [(v.name, v.dtype) for v in fetches] == [("fetch_name_0", "float32"), ("fetch_name_1", "float32")]
    assert find_model_files(model_dir) == ("inference.json", "inference.pdiparams")


def test_layout_and_prototxt(model_dir: Path, tmp_path: Path) -> None:
    server, client = tmp_path / "serving_server", tmp_path / "serving_client"
    inference_model_to_serving(
        model_dir,
        server,
        client,
        "inference.json",
        "inference.pdiparams",
        feed_alias={"x2paddle_ids": "input_ids"},
        fetch_alias={"fetch_name_0": "score", "fetch_name_1": "pooled"},
    )
    assert sorted(p.name for p in server.iterdir()) == sorted(
        ["inference.json", "inference.pdiparams", SERVER_CONF, SERVER_CONF_STREAM]
    )
    assert sorted(p.name for p in client.iterdir()) == sorted([CLIENT_CONF, CLIENT_CONF_STREAM])
    for name in ("inference.json", "inference.pdiparams"):
        assert (server / name).read_bytes() == (model_dir / name).read_bytes()

    conf = pb.GeneralModelConfig()
    text_format.Parse((server / SERVER_CONF).read_text(encoding="utf-8"), conf)
    feeds = [(v.name, v.alias_name, v.is_lod_tensor, v.feed_type, list(v.shape)) for v in conf.feed_var]
    # Serving keeps only the non-negative dims: dynamic [-1, -1] -> [], [-1, 3] -> [3]
    assert feeds == [("x2paddle_ids", "input_ids", False, 0, []), ("feat", "feat", False, 1, [3])]
    fetches = [(v.name, v.alias_name, v.fetch_type) for v in conf.fetch_var]
    assert fetches == [("fetch_name_0", "score", 1), ("fetch_name_1", "pooled", 1)]

    stream = pb.GeneralModelConfig()
    stream.ParseFromString((server / SERVER_CONF_STREAM).read_bytes())
    assert stream == conf
    assert load_serving_config(client / CLIENT_CONF_STREAM) == conf
    assert load_serving_config(client / CLIENT_CONF) == conf

    feeds_map, fetch_map = read_serving_conf(server)
    assert feeds_map == {"input_ids": "x2paddle_ids", "feat": "feat"}
    assert fetch_map == {"score": "fetch_name_0", "pooled": "fetch_name_1"}


def test_serving_engine_maps_aliases(model_dir: Path, tmp_path: Path) -> None:
    server = tmp_path / "serving_server"
    inference_model_to_serving(
        model_dir, server, tmp_path / "client", None, None,
        {"x2paddle_ids": "input_ids"}, {"fetch_name_0": "score", "fetch_name_1": "pooled"},
    )  # fmt: skip
    engine = serving_dir_engine(server, "inference.json", "inference.pdiparams")
    ids = np.array([[1, 2, 3], [4, 5, 0]], dtype=np.int64)
    feat = np.arange(6, dtype=np.float32).reshape(2, 3) / 10
    out = engine({"input_ids": ids, "feat": feat})
    layer = paddle.jit.load(str(model_dir / "inference"))
    score, pooled = layer(paddle.to_tensor(ids), paddle.to_tensor(feat))
    np.testing.assert_allclose(out["score"], score.numpy(), atol=1e-6)
    np.testing.assert_allclose(out["pooled"], pooled.numpy(), atol=1e-6)
    assert out["score"].shape == (2, 3)


def test_unknown_alias_is_rejected(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ServingExportError, match="unknown variables"):
        inference_model_to_serving(
            model_dir, tmp_path / "s", tmp_path / "c", None, None, {"nope": "input_ids"}, None
        )


def test_alias_matching() -> None:
    logical = ("input_ids", "attention_mask")
    assert match_feed_alias(["x2paddle_input_ids", "attention_mask"], logical) == {
        "x2paddle_input_ids": "input_ids",
        "attention_mask": "attention_mask",
    }
    with pytest.raises(ServingExportError):
        match_feed_alias(["x2paddle_input_ids", "token_type_ids"], logical)
    with pytest.raises(ServingExportError):
        match_feed_alias(["input_ids"], logical)
    uie = ("input_ids", "token_type_ids", "position_ids", "attention_mask")  # PaddleNLP 2.x names
    assert match_feed_alias(["input_ids", "token_type_ids", "pos_ids", "att_mask"], uie) == {
        "input_ids": "input_ids",
        "token_type_ids": "token_type_ids",
        "pos_ids": "position_ids",
        "att_mask": "attention_mask",
    }
    assert positional_fetch_alias(["fetch_name_0", "fetch_name_1"], ["a", "b"]) == {
        "fetch_name_0": "a",
        "fetch_name_1": "b",
    }
    with pytest.raises(ServingExportError):
        positional_fetch_alias(["fetch_name_0"], ["a", "b"])
