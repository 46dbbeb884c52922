"""The real service on loopback: HTTP (Paddle Serving's Go gateway) and RPC (PipelineClient),
both backends, the held-out demo sentences against their ground truth, and per-text errors."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from client import http_client, rpc_client
from client.bench.local_server import SERVING_MODEL, run_server
from client.request import results_close as close
from conversion.demo_data import generate, uie_schema
from conversion.metrics import (
    micro_prf,
    spo_gold_facts,
    spo_predicted_facts,
    uie_gold_facts,
    uie_predicted_facts,
)
from pipeline.schemas import PROFILE_KEY

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (SERVING_MODEL / "parity.json").exists(),
        reason="demo models not built: run `python -m conversion.bridge build`",
    ),
]

TARGET_F1 = 0.95


@pytest.fixture(scope="module")
def held_out() -> list[dict]:
    """The whole held-out split (names never seen in training), long multi-sentence texts first."""
    _, test = generate(seed=0)
    return sorted(test, key=lambda r: -len(r["text"]))


def offline_f1(task: str) -> float | None:
    """The F1 the trainer measured on the same held-out split, from the model card."""
    card = json.loads((SERVING_MODEL / task / "model_card.json").read_text(encoding="utf-8"))
    return (card.get("training_metrics") or {}).get("f1")


@pytest.fixture(scope="module", params=["paddle", "onnx"])
def server(request, tmp_path_factory):
    with run_server(tmp_path_factory.mktemp(f"srv-{request.param}"), backend=request.param) as srv:
        srv.backend = request.param
        yield srv


@pytest.fixture(scope="module")
def answers(server, held_out) -> dict[str, list[dict]]:
    """The held-out texts through RPC, 8 texts per request, both tasks."""
    client = rpc_client.connect(server.rpc_endpoint)
    texts = [r["text"] for r in held_out]
    out: dict[str, list[dict]] = {"uie": [], "spo": []}
    for i in range(0, len(texts), 8):
        out["uie"] += rpc_client.predict("uie", texts[i : i + 8], uie_schema(), client=client)
        out["spo"] += rpc_client.predict("spo", texts[i : i + 8], client=client)
    return out


def check_f1(task: str, prf: dict[str, float]) -> None:
    """The served F1 equals the trainer's own figure; then the demo target, reported as xfail when
    the demo model itself is below it (a trainer stops on the dev split's F1 or when its 3-minute
    budget runs out, so a build on a slow machine can end under it on the test split)."""
    offline = offline_f1(task)
    if offline is not None:  # the service reproduces the model's own measured quality
        assert prf["f1"] == pytest.approx(offline, abs=0.01), (prf, offline)
    if prf["f1"] < TARGET_F1 and offline is not None and offline < TARGET_F1:
        pytest.xfail(f"demo {task} model held-out F1 {offline:.3f} < {TARGET_F1} (under-trained)")
    assert prf["f1"] >= TARGET_F1, prf


def test_uie_held_out_f1(answers, held_out):
    check_f1(
        "uie",
        micro_prf([uie_gold_facts(r) for r in held_out], [uie_predicted_facts(a) for a in answers["uie"]]),
    )


def test_spo_held_out_f1(answers, held_out):
    check_f1(
        "spo",
        micro_prf([spo_gold_facts(r) for r in held_out], [spo_predicted_facts(a) for a in answers["spo"]]),
    )


def test_offsets_point_at_the_text(answers, held_out):
    for record, result in zip(held_out, answers["spo"], strict=True):
        for spo in result["spo_list"]:
            assert record["text"][spo["subject_start"] : spo["subject_end"]] == spo["subject"]
            assert record["text"][spo["object_start"] : spo["object_end"]] == spo["object"]
            assert 0.0 < spo["score"] <= 1.0
    for record, result in zip(held_out, answers["uie"], strict=True):
        for items in result.values():
            for it in items:
                assert record["text"][it["start"] : it["end"]] == it["text"]
                assert 0.5**2 < it["probability"] <= 1.0  # p_start * p_end, each above 0.5


def test_http_equals_rpc(server, held_out):
    texts = [r["text"] for r in held_out[:6]]
    for task, schema in (("uie", uie_schema()), ("spo", None)):
        over_http = http_client.predict(task, texts, schema, url=server.http_url)
        over_rpc = rpc_client.predict(task, texts, schema, endpoint=server.rpc_endpoint)
        assert over_http == over_rpc


def test_single_text_equals_its_batched_answer_and_position_prob_filters(server, held_out, answers):
    found = [(r, a) for r, a in zip(held_out, answers["uie"], strict=True) if any(a.values())]
    assert found, "the UIE model found nothing in the held-out split"
    record, batched = found[0]
    [alone] = rpc_client.predict("uie", record["text"], uie_schema(), endpoint=server.rpc_endpoint)
    assert close(alone, batched)
    [strict] = rpc_client.predict("uie", record["text"], uie_schema(), 0.999999, endpoint=server.rpc_endpoint)
    spans = lambda result: {(k, it["start"], it["end"]) for k, items in result.items() for it in items}  # noqa: E731
    assert spans(strict) <= spans(alone)
    assert all(it["probability"] > 0.999999**2 for items in strict.values() for it in items)


def test_per_text_errors_keep_the_others(server):
    texts = ["张伟出生于杭州。", "", "   ", "陈静毕业于北辰大学。"]
    for predict, where in (
        (rpc_client.predict, {"endpoint": server.rpc_endpoint}),
        (http_client.predict, {"url": server.http_url}),
    ):
        results = predict("spo", json.dumps(texts, ensure_ascii=False), **where)
        assert len(results) == 4
        assert "spo_list" in results[0] and "spo_list" in results[3]
        for bad in (results[1], results[2]):
            assert bad["error"]["code"] == 5000 and bad["error"]["type"] == "invalid_text"
    mixed = http_client.post_raw(
        {"key": ["task", "text"], "value": ["spo", json.dumps(["张伟出生于杭州。", 7])]}, server.http_url
    )
    items = json.loads(mixed["value"][0])
    assert "spo_list" in items[0] and items[1]["error"]["type"] == "invalid_text"


def test_command_lines_print_the_answer_or_the_request_error(server, held_out, capsys):
    texts = [r["text"] for r in held_out[-2:]]
    schema = json.dumps(uie_schema(), ensure_ascii=False)
    expected = rpc_client.predict("uie", texts, schema, endpoint=server.rpc_endpoint)
    for main, where in (
        (http_client.main, ["--url", server.http_url]),
        (rpc_client.main, ["--endpoint", server.rpc_endpoint]),
    ):
        assert main(["--task", "uie", "--schema", schema, *where, *texts]) == 0
        assert json.loads(capsys.readouterr().out) == expected
        assert main(["--task", "uie", *where, texts[0]]) == 1  # no schema: the whole request fails
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.startswith("error 5000:") and "schema" in captured.err


@pytest.mark.parametrize(
    ("kv", "needle"),
    [
        ({"task": "ner", "text": "x"}, "unknown task"),
        ({"text": "x"}, "missing key 'task'"),
        ({"task": "uie", "text": "张伟"}, "schema"),
        ({"task": "uie", "text": "张伟", "schema": "{}"}, "empty"),
    ],
)
def test_whole_request_errors(server, kv, needle):
    answer = http_client.post_raw({"key": list(kv), "value": list(kv.values())}, server.http_url)
    assert answer["err_no"] == 5000 and needle in answer["err_msg"], answer
    resp = rpc_client.connect(server.rpc_endpoint).predict(feed_dict=kv, fetch=None)
    assert resp.err_no == 5000 and needle in resp.err_msg, resp


def test_concurrent_requests_get_their_own_answers(server, held_out, answers):
    """Requests merged by auto-batching come back to their own caller, equal to sequential answers."""
    texts = [r["text"] for r in held_out[:48]]  # the answers fixture holds their sequential answers

    def one(i: int) -> tuple[int, list[dict]]:
        task = "uie" if i % 2 else "spo"
        schema = uie_schema() if task == "uie" else None
        return i, rpc_client.predict(task, texts[i], schema, endpoint=server.rpc_endpoint)

    with ThreadPoolExecutor(16) as pool:
        for i, [result] in pool.map(one, range(len(texts))):
            assert close(result, answers["uie" if i % 2 else "spo"][i])


def test_a_profile_asked_for_times_its_own_request_only(server):
    """``PipelineClient.predict(..., profile=True)`` under concurrency: the DAG's timestamps in
    each answer's ``pipeline.profile`` are of that request's data id alone."""
    kv = {"task": "spo", "text": "张伟出生于北京。"}

    def one(_: int) -> set[str]:
        resp = rpc_client.connect(server.rpc_endpoint).predict(feed_dict=kv, fetch=None, profile=True)
        assert resp.err_no == 0, resp
        profile = dict(zip(resp.key, resp.value, strict=True))[PROFILE_KEY]
        stamps = re.findall(r"\b(call|prepack|postpack)_(\d+)#\S*?_([01]):\d+", profile)
        assert sorted(name + tag for name, _, tag in stamps) == [
            "call0", "call1", "postpack0", "postpack1", "prepack0", "prepack1"
        ], profile  # fmt: skip
        return {data_id for _, data_id, _ in stamps}

    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(one, range(64)))
    assert all(len(own) == 1 for own in ids), ids
    assert len(set().union(*ids)) == 64


_BY_BACKEND: dict[str, dict] = {}


def test_paddle_and_onnx_answer_the_same(server, answers):
    """Runs once per backend; the second run compares with the first."""
    _BY_BACKEND[server.backend] = answers
    if len(_BY_BACKEND) < 2:
        pytest.skip("compared when the second backend's server has answered")
    assert close(_BY_BACKEND["paddle"], _BY_BACKEND["onnx"])
