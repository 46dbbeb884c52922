"""Each error a request can end with, on every route: RPC and the HTTP gateway answer its
``err_no`` and ``error_type``, KServe the HTTP status of the one mapping, all with one message."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from client import rpc_client
from client.bench.local_server import SERVING_MODEL
from client.request import ServiceError
from pipeline.errors import InvalidRequest, InvalidSchema, LimitExceeded, NestedTooDeeply

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SERVING_MODEL / "parity.json").exists(), reason="demo models not built"),
]

CASES = [
    # (error class, key/value pairs over RPC and HTTP, KServe inputs or None where it cannot say it)
    (InvalidRequest, {"task": "spo", "text": "张伟", "colour": "blue"}, None),
    (
        InvalidSchema,
        {"task": "uie", "text": "张伟", "schema": '{"人物": [1]}'},
        ("uie", ["张伟"], '{"人物": [1]}'),
    ),
    (NestedTooDeeply, {"task": "spo", "text": "[" * 100 + "]" * 100}, None),
    (LimitExceeded, {"task": "spo", "text": json.dumps(["张伟"] * 65)}, ("spo", ["张伟"] * 65, None)),
]


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server


def kserve(server, task: str, texts: list[str], schema: str | None) -> tuple[int, dict]:
    inputs = [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]
    if schema is not None:
        inputs.append({"name": "schema", "datatype": "BYTES", "shape": [1], "data": [schema]})
    url = f"http://127.0.0.1:{server.kserve_port}/v2/models/{task}/infer"
    request = urllib.request.Request(url, data=json.dumps({"inputs": inputs}).encode())
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize(("cls", "kv", "kserve_call"), CASES, ids=[c[0].kind for c in CASES])
def test_error_on_every_route(server, cls, kv, kserve_call):
    rpc = rpc_client.connect(server.rpc_endpoint).predict(feed_dict=kv, fetch=None)
    rpc_values = dict(zip(rpc.key, rpc.value, strict=True))
    assert (rpc.err_no, rpc_values.get("error_type")) == (cls.err_no, cls.kind), rpc
    body = json.dumps({"key": list(kv), "value": list(kv.values())}).encode()
    with urllib.request.urlopen(urllib.request.Request(server.http_url, data=body), timeout=30) as resp:
        http = json.loads(resp.read())
    assert (http["err_no"], http["err_msg"]) == (rpc.err_no, rpc.err_msg)
    assert dict(zip(http["key"], http["value"], strict=True)) == rpc_values
    if kserve_call is not None:
        status, answer = kserve(server, *kserve_call)
        assert status == cls.http_status and answer["error"] == rpc.err_msg


def test_the_rpc_client_raises_with_the_kind(server):
    with pytest.raises(ServiceError) as err:
        rpc_client.predict("uie", "张伟", {"人物": [1]}, endpoint=server.rpc_endpoint)
    assert err.value.error_type == "invalid_schema" and err.value.err_no == 5000
