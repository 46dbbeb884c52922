"""Hypothesis sends generated (mostly bad) requests to a live server: no crash, no hung request,
every answer well formed, and the server still answers normally afterwards."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client import http_client, rpc_client
from client.bench.local_server import SERVING_MODEL

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SERVING_MODEL / "parity.json").exists(), reason="demo models not built"),
]

EXAMPLES = 500

texts = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=50),
    st.sampled_from(
        ["", " ", "\u3000\t\n", "\x00\x01\x7f", "😀🚀", "张伟出生于杭州。", "Кириллица и 中文 mixed"]
    ),
    st.integers(),
    st.none(),
    st.floats(allow_nan=True),
)
schema_leaf = st.one_of(st.text(max_size=12), st.sampled_from(["人物", "地点", "情感倾向[正向，负向]", ""]))
schemas = st.recursive(
    schema_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@st.composite
def requests(draw) -> dict[str, str]:
    kv: dict[str, str] = {}
    if draw(st.booleans()) or draw(st.booleans()):
        kv["task"] = draw(st.sampled_from(["uie", "spo", "ner", "", "UIE"]))
    if draw(st.integers(0, 9)) > 0:
        items = draw(st.lists(texts, min_size=0, max_size=6))
        kv["text"] = draw(
            st.sampled_from([json.dumps(items, ensure_ascii=False), str(items[0]) if items else "", "[1, 2"])
        )
    if draw(st.booleans()):
        kv["schema"] = draw(
            st.one_of(schemas.map(lambda s: json.dumps(s, ensure_ascii=False)), st.text(max_size=20))
        )
    if draw(st.integers(0, 4)) == 0:
        kv["position_prob"] = draw(st.sampled_from(["0", "1", "-1", "0.5", "abc", "1e309", "nan"]))
    if draw(st.integers(0, 9)) == 0:
        kv[draw(st.text(min_size=1, max_size=8))] = draw(st.text(max_size=8))
    return kv


def assert_well_formed(err_no: int, err_msg: str, keys: list, values: list, kv: dict) -> None:
    assert isinstance(err_no, int)
    if err_no != 0:
        assert err_no in (5000, 6000, 10000) and err_msg, (err_no, err_msg, kv)
        return
    items = json.loads(dict(zip(keys, values, strict=True))["result"])
    assert isinstance(items, list) and items
    for item in items:
        assert isinstance(item, dict)
        if "error" in item:
            assert set(item["error"]) == {"code", "type", "message"}
            assert item["error"]["message"]


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server


def test_generated_requests_over_rpc_and_http(server):
    client = rpc_client.connect(server.rpc_endpoint)
    sent = {"n": 0}

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(requests())
    def one(kv: dict[str, str]) -> None:
        sent["n"] += 1
        if sent["n"] % 2:
            resp = client.predict(feed_dict=kv, fetch=None)
            assert_well_formed(resp.err_no, resp.err_msg, list(resp.key), list(resp.value), kv)
        else:
            answer = http_client.post_raw({"key": list(kv), "value": list(kv.values())}, server.http_url, 30)
            assert_well_formed(
                int(answer.get("err_no", 0)),
                answer.get("err_msg", ""),
                answer.get("key", []),
                answer.get("value", []),
                kv,
            )

    one()
    assert sent["n"] >= EXAMPLES
    assert server.proc.poll() is None
    [healthy] = rpc_client.predict("spo", "张伟出生于杭州。", client=client)
    assert "spo_list" in healthy


@pytest.mark.parametrize(
    ("kv", "code"),
    [
        ({"task": "spo", "text": "长" * 1_000_000}, "limit_exceeded"),
        ({"task": "spo", "text": json.dumps(["张伟"] * 1000)}, 5000),
        (
            {
                "task": "uie",
                "text": "张伟",
                "schema": json.dumps({f"k{i}": [f"c{j}" for j in range(20)] for i in range(50)}),
            },
            5000,
        ),
    ],
)
def test_oversized_input_gets_a_clear_error(server, kv, code):
    answer = http_client.post_raw({"key": list(kv), "value": list(kv.values())}, server.http_url, 60)
    if isinstance(code, int):
        assert answer["err_no"] == code and answer["err_msg"]
    else:
        [item] = json.loads(answer["value"][0])
        assert item["error"]["type"] == code
