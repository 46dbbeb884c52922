"""The cost limits at a real schema's size: config.yml's defaults let a 20-type x 5-relation UIE
schema over a 2,000-character text through, and a request over ``max_rows_per_request`` is
refused on every route with the limit's name while the server keeps serving."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from client import http_client, rpc_client
from client.bench.local_server import SERVING_MODEL, run_server
from client.bench.uie_schema import long_text, schema_20x5
from client.request import ServiceError
from pipeline.errors import LimitExceeded

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SERVING_MODEL / "parity.json").exists(), reason="demo models not built"),
]

ROW_LIMIT = 40


@pytest.fixture(scope="module")
def text() -> str:
    text = long_text(2000)
    assert 1900 <= len(text) <= 2000
    return text


def test_a_20_type_x_5_relation_schema_over_2000_chars_is_answered(shared_server, text) -> None:
    schema = schema_20x5()
    assert len(schema) == 20 and all(len(v) == 5 for node in schema for v in node.values())
    [result] = http_client.predict("uie", text, schema=schema, url=shared_server.http_url, timeout=300)
    assert result.get("人物"), "the demo model finds the people of its own kind of text"
    assert any(item.get("relations") for item in result["人物"])


@pytest.fixture(scope="module")
def tight(tmp_path_factory):
    with run_server(
        tmp_path_factory.mktemp("limits"), backend="onnx", limits={"max_rows_per_request": ROW_LIMIT}
    ) as srv:
        srv.kserve_port = srv.config()["ie"]["kserve_http_port"]
        yield srv


def test_a_request_over_max_rows_is_refused_naming_the_limit_on_every_route(tight, text) -> None:
    schema = schema_20x5()
    with pytest.raises(ServiceError) as err:
        rpc_client.predict("uie", text, schema, endpoint=tight.rpc_endpoint)
    assert err.value.error_type == LimitExceeded.kind and err.value.err_no == LimitExceeded.err_no
    message = str(err.value)
    assert f"more than {ROW_LIMIT} engine rows" in message and "ie.limits.max_rows_per_request" in message
    assert "Error" not in message and ".py" not in message and "Traceback" not in message

    with pytest.raises(ServiceError) as http_err:
        http_client.predict("uie", text, schema=schema, url=tight.http_url)
    assert http_err.value.error_type == LimitExceeded.kind

    inputs = [
        {"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]},
        {
            "name": "schema",
            "datatype": "BYTES",
            "shape": [1],
            "data": [json.dumps(schema, ensure_ascii=False)],
        },
    ]
    url = f"http://127.0.0.1:{tight.kserve_port}/v2/models/uie/infer"
    request = urllib.request.Request(url, data=json.dumps({"inputs": inputs}).encode())
    with pytest.raises(urllib.error.HTTPError) as kserve:
        urllib.request.urlopen(request, timeout=120)
    assert kserve.value.code == LimitExceeded.http_status
    assert "ie.limits.max_rows_per_request" in json.loads(kserve.value.read())["error"]

    # the server keeps serving
    [small] = rpc_client.predict("uie", "张伟出生于杭州。", {"人物": ["出生地"]}, endpoint=tight.rpc_endpoint)
    assert small["人物"][0]["text"] == "张伟"
    [spo] = rpc_client.predict("spo", text[:300], endpoint=tight.rpc_endpoint)
    assert spo["spo_list"]  # a 300-character demo text: several triples
