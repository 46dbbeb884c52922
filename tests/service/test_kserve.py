"""KServe v2: the protocol functions, the HTTP server on loopback (with and without a pipeline
behind it), and the real service through the real ``tritonclient[http]``."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.http as triton
from hypothesis import given
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from client import rpc_client
from client.bench.local_server import SERVING_MODEL, free_port, run_server, serving
from pipeline.config import Limits
from pipeline.errors import IEError, http_status_of
from pipeline.health import warmup_request
from pipeline.kserve import KServeApp
from pipeline.kserve.protocol import (
    HEADER_LENGTH,
    KServeError,
    decode_bytes_tensor,
    encode_bytes_tensor,
    infer_response,
    model_metadata,
    parse_infer_request,
)
from pipeline.model_card import ModelCard
from pipeline.schemas import parse_request

UIE_SCHEMA = {"人物": ["出生地"]}


def _cards() -> dict[str, ModelCard]:
    uie = ModelCard(
        name="uie",
        task="uie",
        max_seq_len=64,
        inputs=["input_ids", "token_type_ids", "position_ids", "attention_mask"],
        outputs=["start_prob", "end_prob"],
        schema_example=UIE_SCHEMA,
    )
    spo = ModelCard(
        name="spo",
        task="spo",
        max_seq_len=64,
        inputs=["input_ids", "token_type_ids", "attention_mask"],
        outputs=["entity", "so_head", "so_tail"],
        predicates=[{"name": "出生地"}],
    )
    return {"uie": uie, "spo": spo}


def _bytes_input(name: str, values: list[str], binary: bool) -> triton.InferInput:
    tensor = triton.InferInput(name, [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array([v.encode() for v in values], dtype=np.object_), binary_data=binary)
    return tensor


def _texts(result: triton.InferResult) -> list[dict]:
    return [json.loads(x.decode() if isinstance(x, bytes) else x) for x in result.as_numpy("result")]


# --- protocol, pure ---------------------------------------------------------------------------


@given(st.lists(st.text(max_size=20), max_size=8))
def test_bytes_tensor_round_trip(values):
    items = [v.encode() for v in values]
    assert decode_bytes_tensor(encode_bytes_tensor(items)) == items


def test_truncated_bytes_tensor_is_refused():
    blob = encode_bytes_tensor([b"abcdef"])
    with pytest.raises(KServeError, match="truncated"):
        decode_bytes_tensor(blob[:-1])


def test_model_metadata_lists_schema_for_uie_only():
    uie, spo = model_metadata("uie", "onnx"), model_metadata("spo", "paddle")
    assert [i["name"] for i in uie["inputs"]] == ["text", "schema"]
    assert [i["name"] for i in spo["inputs"]] == ["text"]
    assert uie["platform"] == "onnxruntime_onnx" and spo["versions"] == ["1"]
    assert spo["outputs"] == [{"name": "result", "datatype": "BYTES", "shape": [-1]}]


def test_parse_json_request():
    body = {
        "id": "42",
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [1, 2], "data": [["张伟出生于杭州。", ""]]},
            {"name": "schema", "datatype": "BYTES", "shape": [1], "data": [json.dumps(UIE_SCHEMA)]},
        ],
        "parameters": {"position_prob": 0.6},
    }
    call = parse_infer_request(json.dumps(body).encode(), None, "uie")
    assert json.loads(call.kv["text"]) == ["张伟出生于杭州。", ""]
    assert json.loads(call.kv["schema"]) == UIE_SCHEMA
    assert call.kv["position_prob"] == "0.6" and call.log_id == 42 and not call.binary_output


def test_parse_binary_request_as_tritonclient_sends_it():
    inputs = [_bytes_input("text", ["甲", "乙丙"], binary=True)]
    outputs = [triton.InferRequestedOutput("result", binary_data=True)]
    body, header_length = triton.InferenceServerClient.generate_request_body(inputs, outputs=outputs)
    call = parse_infer_request(body, header_length, "spo")
    assert json.loads(call.kv["text"]) == ["甲", "乙丙"] and call.binary_output


@pytest.mark.parametrize(
    ("inputs", "task", "needle"),
    [
        ([{"name": "text", "datatype": "INT64", "shape": [1], "data": [1]}], "spo", "BYTES"),
        ([{"name": "text", "datatype": "BYTES", "shape": [3], "data": ["a"]}], "spo", "shape"),
        ([{"name": "schema", "datatype": "BYTES", "shape": [1], "data": ["[]"]}], "spo", "no input"),
        (
            [{"name": "schema", "datatype": "BYTES", "shape": [1], "data": ["[]"]}],
            "uie",
            "missing input 'text'",
        ),
        ([{"name": "text", "datatype": "BYTES", "shape": [1], "data": [7]}], "spo", "strings"),
    ],
)
def test_parse_refuses_bad_requests(inputs, task, needle):
    with pytest.raises(KServeError, match=needle) as err:
        parse_infer_request(json.dumps({"inputs": inputs}).encode(), None, task)
    assert err.value.status == 400


def test_binary_response_reads_back_with_tritonclient():
    request = {
        "id": "a",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["x", "y"]}],
        "parameters": {"binary_data_output": True},
    }
    call = parse_infer_request(json.dumps(request).encode(), None, "spo")
    items = [{"spo_list": []}, {"error": {"code": 5000, "type": "invalid_text", "message": "空"}}]
    answer = {"err_no": 0, "err_msg": "", "key": ["result"], "value": [json.dumps(items, ensure_ascii=False)]}
    body, headers = infer_response("spo", call, answer)
    result = triton.InferResult.from_response_body(body, header_length=int(headers[HEADER_LENGTH]))
    assert _texts(result) == items and result.get_response()["id"] == "a"


def test_pipeline_errors_map_to_http_status():
    call = parse_infer_request(
        json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}).encode(),
        None,
        "spo",
    )
    for err_no, status in ((5000, 400), (6000, 504), (3001, 503), (10000, 500)):
        with pytest.raises(IEError) as err:
            infer_response("spo", call, {"err_no": err_no, "err_msg": "boom", "key": [], "value": []})
        assert http_status_of(err.value) == status and err.value.message == "boom"


def test_warm_up_requests_pass_request_validation():
    cards = _cards()
    bare_uie = cards["uie"].model_copy(update={"schema_example": None, "entity_types": ["地点"]})
    for task, card in (("uie", cards["uie"]), ("spo", cards["spo"]), ("uie", bare_uie)):
        request = parse_request(warmup_request(task, card), Limits())
        assert request.task == task and request.texts
    assert json.loads(warmup_request("uie", bare_uie)["schema"]) == ["地点"]


# --- the HTTP server with no pipeline behind it -------------------------------------------------


@pytest.fixture(scope="module")
def lone_server():
    app = KServeApp(_cards(), "onnx", Limits(max_body_bytes=4096))
    with serving(app.asgi) as port:
        yield port


def test_server_without_pipeline_is_live_not_ready(lone_server):
    client = triton.InferenceServerClient(f"127.0.0.1:{lone_server}")
    assert client.is_server_live()
    assert not client.is_server_ready()
    assert not client.is_model_ready("uie")
    assert client.get_server_metadata()["name"] == "ie-serving"
    assert client.get_model_metadata("spo")["platform"] == "onnxruntime_onnx"
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("ner")
    for compression in (None, "gzip", "deflate"):  # reaches the (absent) pipeline once decoded
        with pytest.raises(InferenceServerException, match="pipeline"):
            client.infer(
                "spo",
                [_bytes_input("text", ["张伟"], binary=True)],
                request_compression_algorithm=compression,
            )


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v2/health/live", None, 200),
        ("/v2/health/ready", None, 503),
        ("/v2/models/uie/versions/1", None, 200),
        ("/v2/models/uie/versions/2", None, 404),
        ("/v2/models/ner/ready", None, 404),
        ("/v1/models", None, 404),
        ("/v2/models/spo/infer", b"x", 400),  # not JSON
        ("/v2/models/spo/infer", b"x" * 5000, 413),  # over max_body_bytes
        ("/v2/models/spo", b"{}", 405),
    ],
)
def test_routes_and_statuses(lone_server, path, body, status):
    req = urllib.request.Request(f"http://127.0.0.1:{lone_server}{path}", data=body)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            got, body = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        got, body = e.code, e.read()
    assert got == status
    if status >= 400:
        assert "error" in json.loads(body)


# --- the real service ---------------------------------------------------------------------------

live = pytest.mark.skipif(
    not (SERVING_MODEL / "parity.json").exists(),
    reason="demo models not built: run `python -m conversion.bridge build`",
)


def wait_http_ready(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {timeout}s")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    port = free_port()
    with run_server(
        tmp_path_factory.mktemp("kserve"), backend="onnx", kserve_http_port=port, metrics_port=free_port()
    ) as srv:
        wait_http_ready(f"http://127.0.0.1:{port}/v2/health/ready")
        srv.kserve_port = port
        yield srv


@pytest.fixture(scope="module")
def client(service):
    return triton.InferenceServerClient(f"127.0.0.1:{service.kserve_port}")


@live
@pytest.mark.slow
def test_live_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("uie") and client.is_model_ready("spo")
    meta = client.get_model_metadata("uie")
    assert meta["platform"] == "onnxruntime_onnx"
    assert {i["name"] for i in meta["inputs"]} == {"text", "schema"}


@live
@pytest.mark.slow
@pytest.mark.parametrize("binary", [True, False])
def test_live_infer_equals_rpc(service, client, binary):
    texts = ["张伟出生于杭州。", "", "陈静毕业于北辰大学。"]
    outputs = [triton.InferRequestedOutput("result", binary_data=binary)]
    spo = client.infer("spo", [_bytes_input("text", texts, binary)], outputs=outputs)
    schema = _bytes_input("schema", [json.dumps(UIE_SCHEMA, ensure_ascii=False)], binary)
    uie = client.infer("uie", [_bytes_input("text", texts, binary), schema], outputs=outputs)
    assert _texts(spo) == rpc_client.predict("spo", texts, endpoint=service.rpc_endpoint)
    assert _texts(uie) == rpc_client.predict("uie", texts, UIE_SCHEMA, endpoint=service.rpc_endpoint)
    assert _texts(spo)[1]["error"]["type"] == "invalid_text"


@live
@pytest.mark.slow
def test_live_request_errors(client):
    with pytest.raises(InferenceServerException, match="schema") as err:
        client.infer("uie", [_bytes_input("text", ["张伟出生于杭州。"], True)])
    assert err.value.status() == "400"
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.infer("ner", [_bytes_input("text", ["张伟"], True)])


@live
@pytest.mark.slow
def test_live_log_keeps_texts_out(service, client):
    secret = "赵敏出生于北辰市。"
    client.infer("spo", [_bytes_input("text", [secret], True)], request_id="777001")
    time.sleep(0.3)
    lines = [line for line in service.log().splitlines() if "log_id=777001" in line]
    assert len(lines) == 1 and "outcome=ok" in lines[0] and "task=spo" in lines[0]
    assert secret not in service.log()


def test_forked_children_do_not_keep_the_port():
    """Paddle Serving forks helpers after our port is bound; once we stop, the port is free."""
    import multiprocessing
    import socket

    with serving(KServeApp(_cards(), "onnx", Limits()).asgi) as port:
        child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(30,), daemon=True)
        child.start()
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
            s.listen()
    finally:
        child.kill()
        child.join()
