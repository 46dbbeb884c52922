"""The Python HTTP gateway answers exactly like Paddle Serving's Go gateway (asked for on x86)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from client import http_client
from client.bench.local_server import SERVING_MODEL, run_server
from pipeline.paddle_serving.compat import go_gateway_runs_here

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SERVING_MODEL / "parity.json").exists(), reason="demo models not built"),
]

BODIES = [
    {"key": ["task", "text"], "value": ["spo", "张伟出生于杭州。"]},
    {"key": ["task", "text", "schema"], "value": ["uie", json.dumps(["张伟出生于杭州。", ""]), '["人物"]']},
    {"key": ["task", "text"], "value": ["ner", "x"]},
    {"key": ["text"], "value": ["x"]},
]


def raw_post(url: str, data: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_go_gateway_binary_is_for_this_x86_host():
    assert go_gateway_runs_here()


def test_python_gateway_answers_like_the_go_gateway(tmp_path):
    answers = {}
    for gateway in ("go", "python"):
        with run_server(tmp_path / gateway, backend="onnx", http_gateway=gateway) as srv:
            assert f"({gateway} gateway)" in srv.log()
            answers[gateway] = [http_client.post_raw(body, srv.http_url) for body in BODIES]
            status, _ = raw_post(srv.http_url, b"{not json")
            answers[gateway].append(status)
    assert answers["python"] == answers["go"]
    assert answers["go"][0]["err_no"] == 0 and answers["go"][2]["err_no"] == 5000
