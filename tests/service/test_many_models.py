"""Several models on one live server, by name: two UIE models (the demo one and one trained with
another seed) and the SPO model, each answering with its own answers over RPC, HTTP and KServe;
a mixed load without cross-talk; a slow model that stalls no other; and model control (load,
swap, unload under traffic; Triton's client's repository calls)."""

from __future__ import annotations

import json
import random
import re
import shutil
import statistics
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from client import http_client, rpc_client
from client.bench.local_server import SERVING_MODEL, run_server
from client.request import ServiceError, results_close
from conversion import demo_data
from tests.service.offline import held_out_texts, offline_answers

SEED1 = SERVING_MODEL / "seed1" / "uie"  # `make models`: the demo UIE trained with seed 1

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not (SERVING_MODEL / "parity.json").exists(), reason="demo models not built"),
    pytest.mark.skipif(not (SEED1 / "model_card.json").exists(), reason="second UIE not built: make models"),
]

SCHEMA = demo_data.uie_schema()
N_TEXTS = 12
UIE_MODELS = ("uie", "uie_seed1")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return held_out_texts(N_TEXTS)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = {
        "uie": {"default": True},
        # two engine calls at once: its answers and the load tests must not change
        "uie_seed1": {"dir": str(SEED1), "task": "uie", "max_seq_len": 512, "engine_instances": 2},
        "spo": {"intra_op_threads": 1},  # the slow model of the stall test leaves a core to the others
    }
    with run_server(
        tmp_path_factory.mktemp("many"), backend="onnx", models=models, model_control=True
    ) as srv:
        srv.kserve_port = srv.config()["ie"]["kserve_http_port"]
        srv.metrics_port = srv.config()["ie"]["metrics_port"]
        yield srv


@pytest.fixture(scope="module")
def kclient(server):
    return triton.InferenceServerClient(f"127.0.0.1:{server.kserve_port}")


@pytest.fixture(scope="module")
def expected(texts) -> dict[str, list[dict]]:
    return {
        "uie": offline_answers(SERVING_MODEL / "uie", texts, SCHEMA, threads=1),
        "uie_seed1": offline_answers(SEED1, texts, SCHEMA, threads=1),
    }


def kserve_infer(client, name: str, texts: list[str], schema=None, version: str = "") -> list[dict]:
    inputs = [triton.InferInput("text", [len(texts)], "BYTES")]
    inputs[0].set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
    if schema is not None:
        inputs.append(triton.InferInput("schema", [1], "BYTES"))
        inputs[1].set_data_from_numpy(
            np.array([json.dumps(schema, ensure_ascii=False).encode()], dtype=object)
        )
    result = client.infer(name, inputs, model_version=version)
    return [json.loads(x) for x in result.as_numpy("result")]


def get(url: str) -> tuple[int, dict | None]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            body = resp.read()
            return resp.status, json.loads(body) if body else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def post(url: str, payload: dict | None = None) -> tuple[int, dict | None]:
    data = json.dumps(payload or {}).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=120) as resp:
            body = resp.read()
            return resp.status, json.loads(body) if body else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def same(a: list[dict], b: list[dict]) -> bool:
    return results_close(a, b, tol=1e-3)


# --- by name -------------------------------------------------------------------------------------


def test_two_uie_models_answer_with_their_own_answers_on_every_route(server, kclient, texts, expected):
    assert not same(expected["uie"], expected["uie_seed1"]), (
        "the two UIE models must differ to tell them apart"
    )
    for name in UIE_MODELS:
        rpc = rpc_client.predict("uie", texts, SCHEMA, endpoint=server.rpc_endpoint, model=name)
        http = http_client.predict("uie", texts, SCHEMA, url=server.http_url, model=name)
        kserve = kserve_infer(kclient, name, texts, SCHEMA)
        assert same(rpc, expected[name]) and same(http, expected[name]) and same(kserve, expected[name]), name
        # the model alone names the task
        kv = {"model": name, "text": json.dumps(texts, ensure_ascii=False), "schema": json.dumps(SCHEMA)}
        answer = rpc_client.connect(server.rpc_endpoint).predict(feed_dict=kv, fetch=None)
        assert answer.err_no == 0 and same(json.loads(answer.value[0]), expected[name])
    # a request with the task only gets the default model (today's requests, unchanged)
    assert same(rpc_client.predict("uie", texts, SCHEMA, endpoint=server.rpc_endpoint), expected["uie"])
    spo = rpc_client.predict("spo", texts, endpoint=server.rpc_endpoint, model="spo")
    assert spo == rpc_client.predict("spo", texts, endpoint=server.rpc_endpoint)
    assert sum(len(r["spo_list"]) for r in spo) > 0


def test_metadata_and_readiness_by_name_and_version(server, kclient):
    for name in (*UIE_MODELS, "spo"):
        assert kclient.is_model_ready(name)
        meta = kclient.get_model_metadata(name)
        assert meta["name"] == name and meta["versions"] == ["1"]
        assert kclient.is_model_ready(name, model_version="1")
        assert kclient.get_model_metadata(name, model_version="1")["name"] == name
    base = f"http://127.0.0.1:{server.kserve_port}/v2/models"
    status, body = get(f"{base}/uie_seed1/versions/7")
    assert status == 404 and "version 1" in body["error"]
    status, body = get(f"{base}/nope")
    assert status == 404 and all(n in body["error"] for n in (*UIE_MODELS, "spo"))


def test_unknown_model_is_5000_over_rpc_and_http_and_404_over_kserve(server, kclient):
    kv = {"model": "nope", "task": "uie", "text": "张伟", "schema": '["人物"]'}
    rpc = rpc_client.connect(server.rpc_endpoint).predict(feed_dict=kv, fetch=None)
    values = dict(zip(rpc.key, rpc.value, strict=True))
    assert rpc.err_no == 5000 and values["error_type"] == "unknown_model"
    assert all(n in rpc.err_msg for n in (*UIE_MODELS, "spo")), rpc.err_msg
    http = http_client.post_raw({"key": list(kv), "value": list(kv.values())}, server.http_url)
    assert (http["err_no"], http["err_msg"]) == (5000, rpc.err_msg)
    with pytest.raises(InferenceServerException, match="unknown model") as err:
        kserve_infer(kclient, "nope", ["张伟"])
    assert err.value.status() == "404"
    with pytest.raises(ServiceError, match="serves task 'uie', not 'spo'"):
        rpc_client.predict("spo", "张伟", endpoint=server.rpc_endpoint, model="uie_seed1")


def test_metrics_and_log_line_carry_the_model(server, texts):
    rpc_client.predict("uie", texts[:1], SCHEMA, endpoint=server.rpc_endpoint, model="uie_seed1")
    time.sleep(0.3)
    assert re.search(r"task=uie outcome=ok model=uie_seed1 ", server.log())
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    assert re.search(r'ie_model_requests_total\{model="uie_seed1",outcome="ok"\} [1-9]', metrics)
    layout = {"uie": (2, 1), "uie_seed1": (2, 2), "spo": (1, 1)}  # (threads, instances)
    for name in (*UIE_MODELS, "spo"):
        match = re.search(rf'ie_model_resident_memory_bytes\{{model="{name}"\}} ([0-9.e+]+)', metrics)
        assert match and float(match.group(1)) > 1e6, name  # each engine's load added > 1 MB
        assert re.search(
            rf"model {name} \(task \w+, version 1, onnx, threads {layout[name][0]}, "
            rf"instances {layout[name][1]}\): loaded .* resident memory \+",
            server.log(),
        )


# --- under load ----------------------------------------------------------------------------------


def test_mixed_load_has_no_cross_talk(server, texts, expected):
    spo_expected = [rpc_client.predict("spo", [t], endpoint=server.rpc_endpoint)[0] for t in texts]
    failures: list[str] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        rpc = rpc_client.connect(server.rpc_endpoint)
        kclient = triton.InferenceServerClient(f"127.0.0.1:{server.kserve_port}")  # one per thread
        for _ in range(12):
            idx = rng.sample(range(len(texts)), rng.randint(1, 3))
            chosen = [texts[i] for i in idx]
            name = rng.choice([*UIE_MODELS, "spo"])
            route = rng.choice(["rpc", "http", "kserve"])
            try:
                if name == "spo":
                    got = rpc_client.predict("spo", chosen, client=rpc, model=name)
                    want = [spo_expected[i] for i in idx]
                else:
                    want = [expected[name][i] for i in idx]
                    if route == "rpc":
                        got = rpc_client.predict("uie", chosen, SCHEMA, client=rpc, model=name)
                    elif route == "http":
                        got = http_client.predict("uie", chosen, SCHEMA, url=server.http_url, model=name)
                    else:
                        got = kserve_infer(kclient, name, chosen, SCHEMA)
                if not same(got, want):
                    failures.append(f"{name} over {route}: another model's answer")
            except Exception as e:  # every failure is reported
                failures.append(f"{name} over {route}: {e}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_a_slow_model_does_not_stall_another(server, texts):
    joined = "".join(texts)
    for reps in (12, 24, 48):  # many SPO windows: a request of about a second or more
        slow = [(joined * reps)[:20_000]] * 8  # within ie.limits.max_text_chars
        started = time.perf_counter()
        rpc_client.predict("spo", slow, endpoint=server.rpc_endpoint)
        slow_s = time.perf_counter() - started
        if slow_s > 0.8:
            break
    assert slow_s > 0.8, f"the slow request took {slow_s:.2f} s: too fast to show a stall"
    stop = threading.Event()
    slow_done = []

    def slow_client() -> None:
        rpc = rpc_client.connect(server.rpc_endpoint)
        while not stop.is_set():
            rpc_client.predict("spo", slow, client=rpc)
            slow_done.append(1)

    threads = [threading.Thread(target=slow_client) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(slow_s / 2)
    rpc = rpc_client.connect(server.rpc_endpoint)
    latencies = []
    try:
        for i in range(20):
            t0 = time.perf_counter()
            rpc_client.predict("uie", texts[i % len(texts)], ["人物"], client=rpc, model="uie_seed1")
            latencies.append(time.perf_counter() - t0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    fast = statistics.median(latencies)
    # Under one shared model op the fast request would wait for the slow batch (>= slow_s / 2).
    assert slow_done, "the slow model must have run meanwhile"
    assert fast < slow_s / 4, f"fast model median {fast * 1000:.0f} ms with slow requests of {slow_s:.2f} s"


# --- model control -------------------------------------------------------------------------------


def bridge_copy(tmp: Path, source: Path, version: str | None = None) -> Path:
    """A copy of a bridge-built model dir with its parity.json (optionally a new card version)."""
    dest = tmp / source.name
    shutil.copytree(source, dest)
    shutil.copy2(source.parent / "parity.json", tmp / "parity.json")
    if version is not None:
        card = json.loads((dest / "model_card.json").read_text(encoding="utf-8"))
        card["version"] = version
        (dest / "model_card.json").write_text(json.dumps(card, ensure_ascii=False), encoding="utf-8")
    return dest


class Traffic:
    """Clients sending ``uie`` requests (by task and by name) until stopped; every answer kept."""

    def __init__(self, server, texts: list[str], models=("uie",), n: int = 3):
        self.server, self.texts, self.models = server, texts, models
        self.answers: list[tuple[str, list[dict]]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(n)]

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _run(self, seed: int) -> None:
        rpc = rpc_client.connect(self.server.rpc_endpoint)
        rng = random.Random(seed)
        while not self._stop.is_set():
            name = rng.choice(self.models)
            by_task = name == "uie" and rng.random() < 0.5  # the default model of task uie
            try:
                got = rpc_client.predict(
                    "uie", self.texts, SCHEMA, client=rpc, model=None if by_task else name
                )
                self.answers.append((name, got))
            except Exception as e:  # every failure is reported
                self.errors.append(f"{name}: {e}")


def test_swap_a_new_version_under_traffic_without_a_failed_request(
    server, kclient, texts, expected, tmp_path
):
    v2 = bridge_copy(tmp_path, SEED1, version="2")
    base = f"http://127.0.0.1:{server.kserve_port}/v2/repository"
    with Traffic(server, texts) as traffic:
        time.sleep(1.0)
        status, _ = post(f"{base}/models/uie/load", {"parameters": {"dir": str(v2)}})
        assert status == 200
        time.sleep(1.0)
    assert traffic.errors == []
    kinds = [
        ("old" if same(a, expected["uie"]) else "new" if same(a, expected["uie_seed1"]) else "?")
        for _, a in traffic.answers
    ]
    assert "?" not in kinds and kinds[0] == "old" and kinds[-1] == "new", kinds
    assert kinds.index("new") > 0 and "old" not in kinds[kinds.index("new") + 3 :]  # swapped once, for good
    assert kclient.get_model_metadata("uie")["versions"] == ["2"]
    assert same(kserve_infer(kclient, "uie", texts, SCHEMA, version="2"), expected["uie_seed1"])
    assert get(f"http://127.0.0.1:{server.kserve_port}/v2/models/uie/versions/1")[0] == 404
    index = {row["name"]: row for row in kclient.get_model_repository_index()}
    assert index["uie"] == {"name": "uie", "version": "2", "state": "READY", "reason": ""}
    # back to the configured dir (tritonclient's load_model with no config)
    with Traffic(server, texts) as traffic:
        kclient.load_model("uie")
    assert traffic.errors == []
    assert same(rpc_client.predict("uie", texts, SCHEMA, endpoint=server.rpc_endpoint), expected["uie"])
    assert kclient.get_model_metadata("uie")["versions"] == ["1"]


def test_failed_loads_say_why_and_leave_the_old_model_serving(server, kclient, texts, expected, tmp_path):
    base = f"http://127.0.0.1:{server.kserve_port}/v2/repository/models"
    no_parity = bridge_copy(tmp_path / "a", SEED1)
    (no_parity.parent / "parity.json").unlink()
    failing = bridge_copy(tmp_path / "b", SEED1)
    rows = json.loads((failing.parent / "parity.json").read_text(encoding="utf-8"))
    rows["hops"][0]["passed"] = False
    (failing.parent / "parity.json").write_text(json.dumps(rows), encoding="utf-8")
    broken = bridge_copy(tmp_path / "c", SEED1)
    (broken / "model.onnx").write_bytes(b"not an onnx file")
    spo_dir = bridge_copy(tmp_path / "d", SERVING_MODEL / "spo")
    cases = [
        ({"parameters": {"dir": str(tmp_path / "missing")}}, 400, "does not exist"),
        ({"parameters": {"dir": str(no_parity)}}, 400, "parity.json"),
        ({"parameters": {"dir": str(failing)}}, 400, "did not pass"),
        ({"parameters": {"dir": str(broken)}}, 400, "cannot load model 'uie'"),
        ({"parameters": {"dir": str(spo_dir)}}, 400, "'spo' model, not 'uie'"),
        ({"parameters": {"dir": 5}}, 400, "'dir' must be"),
        ({"parameters": {"file:1/model.onnx": "AAAA"}}, 400, "no model files"),
    ]
    with Traffic(server, texts) as traffic:
        for body, status, message in cases:
            got_status, got = post(f"{base}/uie/load", body)
            assert got_status == status and message in got["error"], (body, got)
            assert "Traceback" not in got["error"] and "Error" not in got["error"]
    assert traffic.errors == [] and all(same(a, expected["uie"]) for _, a in traffic.answers)
    status, got = post(f"{base}/nope/load")
    assert status == 404 and "not configured" in got["error"]
    status, got = post(f"{base}/{'x' * 70}/load", {"parameters": {"dir": str(SEED1)}})
    assert status == 400 and "is not allowed" in got["error"]
    status, got = post(f"{base}/nope/unload")
    assert status == 404
    assert get(f"{base}/uie/load")[0] == 405


def test_unload_and_load_back_under_traffic(server, kclient, texts, expected):
    with Traffic(server, texts, models=("uie", "uie_seed1"), n=4) as traffic:
        time.sleep(0.5)
        kclient.unload_model("uie_seed1")
        deadline = time.monotonic() + 10  # until a request sent after the unload was answered
        while not traffic.errors and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
    # requests to the unloaded model that came after it are refused as unknown; none fails otherwise
    assert traffic.errors and all(
        e.startswith("uie_seed1: ") and "unknown model" in e for e in traffic.errors
    )
    assert all(same(a, expected[name]) for name, a in traffic.answers)
    assert {name for name, _ in traffic.answers} == {"uie", "uie_seed1"}
    index = {row["name"]: row for row in kclient.get_model_repository_index()}
    assert index["uie_seed1"]["state"] == "UNAVAILABLE" and index["uie"]["state"] == "READY"
    with pytest.raises(ServiceError, match="unknown model 'uie_seed1'"):
        rpc_client.predict("uie", texts, SCHEMA, endpoint=server.rpc_endpoint, model="uie_seed1")
    assert not kclient.is_model_ready("uie_seed1") and kclient.is_server_ready()
    # a new dir through tritonclient's load_model(config=...): the JSON config names it
    kclient.load_model("uie_seed1", config=json.dumps({"dir": str(SEED1)}))
    assert kclient.is_model_ready("uie_seed1")
    got = rpc_client.predict("uie", texts, SCHEMA, endpoint=server.rpc_endpoint, model="uie_seed1")
    assert same(got, expected["uie_seed1"])
    index = {row["name"]: row for row in kclient.get_model_repository_index()}
    assert index["uie_seed1"]["state"] == "READY"
