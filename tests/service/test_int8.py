"""``precision: int8`` on a live server: the bridge's INT8 files are what is served (the same facts as
the INT8 engine decoded offline), close to the FP32 answers, and on ONNX Runtime whatever the backend."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

from client import http_client, rpc_client
from client.bench.local_server import SERVING_MODEL, run_server
from conversion import demo_data
from conversion.accuracy import agreement_f1
from conversion.metrics import spo_predicted_facts, uie_predicted_facts
from pipeline.model_card import load_model_card
from tests.service.offline import held_out_texts, offline_answers

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SERVING_MODEL / "parity.json").exists(), reason="demo models not built"),
]

N_TEXTS = 40
SCHEMA = demo_data.uie_schema()


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return held_out_texts(N_TEXTS)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # backend auto picks Paddle where it is installed: INT8 models still run on ONNX Runtime
    models = {"uie": {"precision": "int8"}, "spo": {"precision": "int8"}}
    with run_server(tmp_path_factory.mktemp("int8"), backend="auto", models=models) as srv:
        yield srv


FACTS = {"uie": uie_predicted_facts, "spo": spo_predicted_facts}


@pytest.mark.parametrize("task", ["uie", "spo"])
def test_int8_answers_are_the_int8_files_and_agree_with_fp32(server, texts, task) -> None:
    schema = SCHEMA if task == "uie" else None
    served = rpc_client.predict(task, texts, schema=schema, endpoint=server.rpc_endpoint)
    over_http = http_client.predict(task, texts, schema=schema, url=server.http_url)
    facts = FACTS[task]
    served_facts = [facts(r) for r in served]
    assert served_facts == [facts(r) for r in over_http]
    assert served_facts == [facts(r) for r in offline_answers(SERVING_MODEL / task, texts, schema, "int8")]
    assert sum(map(len, served_facts)) > N_TEXTS, "too few facts for the comparison to mean anything"
    fp32 = [facts(r) for r in offline_answers(SERVING_MODEL / task, texts, schema)]
    card = load_model_card(SERVING_MODEL / task)
    assert agreement_f1(fp32, served_facts) >= 0.95
    assert card.int8 is not None and card.int8.accuracy["agreement_f1"] >= 0.95


def test_int8_models_run_on_onnx_runtime_and_say_so(server, texts) -> None:
    rpc_client.predict("spo", texts[:2], endpoint=server.rpc_endpoint)
    assert re.search(r"task=spo outcome=ok .*backend=onnx-int8", server.log())
    port = server.config()["ie"]["kserve_http_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/uie", timeout=10) as resp:
        assert json.load(resp)["platform"] == "onnxruntime_onnx"
