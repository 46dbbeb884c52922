"""client/bench/benchmark.py: its pure parts, the load generator against a local server, and a
``--quick`` smoke run checking the output files and their schema (no timing assertions)."""

from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from client.bench.common import percentile, summarize
from client.bench.loadgen import answered_ok, http_sender, loopback_target, run_load
from client.bench.models import ROOT, is_built, pad_vocab
from client.bench.report import RUN_KEYS, evaluate_targets, markdown, merge_runs, profile_shares, top_frames
from client.request import results_close


def test_percentile_interpolates_and_handles_empty():
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 100) == 5.0
    assert percentile(values, 0) == 1.0
    assert percentile(values, 95) == pytest.approx(4.8)
    assert math.isnan(percentile([], 50))


def test_summarize_counts_ok_requests_only_in_throughput():
    s = summarize([0.010, 0.020, 0.030], errors=2, wall_s=1.5)
    assert s["requests"] == 5 and s["errors"] == 2
    assert s["throughput_rps"] == pytest.approx(2.0)
    assert s["p50_ms"] == pytest.approx(20.0)


@pytest.mark.parametrize("target", ["10.0.0.1:80", "localhost:8088", "example.com:80", "127.0.0.1:x"])
def test_load_generator_refuses_non_loopback_targets(target):
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        loopback_target(target)


def test_answered_ok_sees_request_and_text_errors():
    ok = {"err_no": 0, "key": ["result"], "value": ['[{"spo_list": []}]']}
    assert answered_ok(ok)
    assert not answered_ok({"err_no": 5000, "err_msg": "bad", "key": [], "value": []})
    bad_text = {"err_no": 0, "key": ["result"], "value": ['[{"error": {"code": 5000}}]']}
    assert not answered_ok(bad_text)


def test_pad_vocab_pads_and_never_truncates():
    assert pad_vocab(["a", "b"], 4) == ["a", "b", "[unused0]", "[unused1]"]
    assert pad_vocab(["a", "b", "c"], 2) == ["a", "b", "c"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the service's gateway
    fail_every = 0
    seen = 0

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen += 1
        err = 5000 if self.fail_every and type(self).seen % self.fail_every == 0 else 0
        answer = {"err_no": err, "key": ["result"], "value": [json.dumps([{"echo": body["value"][0]}])]}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_load_generator_is_bounded_and_counts_errors():
    _Handler.fail_every, _Handler.seen = 4, 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        body = json.dumps({"key": ["task", "text"], "value": ["spo", "x"]}).encode()
        target = f"127.0.0.1:{server.server_address[1]}"
        result = run_load(lambda: http_sender(target, body), 3, 10.0, 40, warmup_per_worker=1)
    finally:
        server.shutdown()
    assert result["requests"] == 40  # the request bound stops it long before the time bound
    assert 5 <= result["errors"] <= 15  # every 4th answer is an error (warm-ups shift the phase)
    assert result["throughput_rps"] > 0 and result["p50_ms"] <= result["p99_ms"]


def _row(**kw):
    base = dict(model="spo", size="nano", backend="onnx", concurrency=1, batch=1, seq_len=128,
                auto_batching=False, p95_ms=1.0, p99_ms=1.0, errors=0)  # fmt: skip
    return {**base, **kw}


def test_targets_compare_served_raw_naive_and_backends():
    runs = [
        _row(mode="raw", batch=1, throughput_rps=100.0, p50_ms=10.0),
        _row(mode="raw", batch=8, throughput_rps=200.0, p50_ms=40.0),
        _row(mode="raw", batch=8, seq_len=256, throughput_rps=999.0, p50_ms=40.0),  # other seq
        _row(mode="rpc", concurrency=1, throughput_rps=80.0, p50_ms=11.0),
        _row(mode="rpc", concurrency=8, throughput_rps=190.0, p50_ms=42.0, auto_batching=True),
        _row(mode="http", concurrency=1, throughput_rps=60.0, p50_ms=16.0),
        _row(mode="http", concurrency=8, throughput_rps=500.0, p50_ms=5.0, errors=3),  # errors: ignored
        _row(mode="naive", concurrency=8, throughput_rps=100.0, p50_ms=80.0),
        _row(mode="raw", backend="paddle", batch=8, throughput_rps=250.0, p50_ms=30.0),
        _row(mode="triton", concurrency=8, throughput_rps=200.0, p50_ms=40.0, p99_ms=0.9),
        _row(mode="raw", backend="onnx-int8", batch=8, throughput_rps=610.0, p50_ms=13.0),
        _row(mode="rpc", backend="onnx-int8", concurrency=8, throughput_rps=380.0, p50_ms=20.0),
    ]
    targets = {(t["target"], t["backend"]): t for t in evaluate_targets(runs)}
    served = targets[("served best throughput >= 0.9x raw best", "onnx")]
    assert served["value"] == pytest.approx(0.95) and served["status"] == "met"
    assert targets[("rpc p50 at concurrency 1 <= raw batch-1 p50 + 1.5 ms", "onnx")]["status"] == "met"
    http = targets[("http p50 at concurrency 1 <= raw batch-1 p50 + 1.5 ms", "onnx")]
    assert http["value"] == pytest.approx(6.0) and http["status"] == "missed"
    naive = targets[("served >= 1.5x naive throughput at concurrency 8", "onnx")]
    assert naive["value"] == pytest.approx(1.9) and naive["status"] == "met"
    assert naive["ceiling"] == pytest.approx(2.0)  # raw best 200/s over naive 100/s
    backends = targets[("onnx raw throughput >= 0.9x paddle", "onnx/paddle")]
    assert backends["value"] == pytest.approx(0.8) and backends["status"] == "missed"
    int8_raw = targets[("onnx-int8 raw throughput >= 3.0x onnx", "onnx-int8/onnx")]
    assert int8_raw["value"] == pytest.approx(3.05) and int8_raw["status"] == "met"
    int8_served = targets[("onnx-int8 served throughput >= 3.0x onnx", "onnx-int8/onnx")]
    assert int8_served["value"] == pytest.approx(2.0) and int8_served["status"] == "missed"
    triton = targets[("served >= 1.1x triton throughput at concurrency 8, p99 <= 1.2x", "onnx")]
    assert triton["value"] == pytest.approx(0.95) and triton["status"] == "missed"
    assert "p99 ratio 1.11" in triton["detail"]
    assert triton["ceiling"] == pytest.approx(1.0)  # Triton already runs at the engine's best
    assert served["ceiling"] is None
    assert targets[("served best throughput >= 0.9x raw best", "paddle")]["status"] == "n/a"
    table = markdown({"machine": _machine(), "runs": runs})
    assert table.count("\n| spo | nano |") == len(runs)
    assert "| 1.5 | 2.00 | met |" in table  # the naive target's row with its ceiling


def _machine():
    return {"cpu": "x", "cores": 2, "python": "3.11", "libraries": {"numpy": "1"}, "intra_op_threads": 2,
            "inter_op_threads": 1}  # fmt: skip


def test_merge_replaces_only_the_re_measured_modes():
    old_rows = [
        _row(mode="naive", concurrency=8, throughput_rps=1.0),
        _row(mode="naive", backend="paddle", concurrency=8, throughput_rps=2.0),
        _row(mode="rpc", concurrency=8, throughput_rps=3.0),
    ]
    new_rows = [_row(mode="naive", concurrency=8, throughput_rps=9.0)]
    old = {"machine": _machine(), "runs": old_rows}
    new = {"machine": {**_machine(), "wall_s": 5.0, "plan": {"naive": True}}, "runs": new_rows}
    merged = merge_runs(old, new)
    got = sorted((r["backend"], r["mode"], r["throughput_rps"]) for r in merged["runs"])
    assert got == [("onnx", "naive", 9.0), ("onnx", "rpc", 3.0), ("paddle", "naive", 2.0)]
    assert merged["machine"]["merged"] == [
        {"plan": {"naive": True}, "load_average_start": None, "load_average_end": None, "wall_s": 5.0,
         "replaced": ["nano/onnx/naive"]}
    ]  # fmt: skip
    assert old["runs"] == old_rows and "merged" not in old["machine"]  # the inputs are left alone


def test_top_frames_ranks_self_samples():
    collapsed = "main;a;b 6\nmain;a 2\nmain;c;b 2\nnot a stack line\n"
    top = top_frames(collapsed, 2)
    assert top[0] == ("b", pytest.approx(0.8))
    assert top[1] == ("a", pytest.approx(0.2))


def test_profile_shares_sort_samples_by_the_file_of_their_leaf_frame():
    run = "run (onnxruntime/capi/onnxruntime_inference_collection.py:273)"
    collapsed = (
        f"thread;_serve (grpc/_server.py:10);{run} 6\n"  # the engine, called from gRPC's thread
        "thread;_serve (grpc/_server.py:1317) 2\n"  # gRPC's loop waiting for a request
        "thread;_serve (grpc/_server.py:1317);_on_call_completed (grpc/_server.py:1200) 1\n"
        "thread;_work (pipeline/lanes.py:60);_next_job (pipeline/lanes.py:50) 3\n"
        "thread;finish (pipeline/service.py:142);emit (logging/__init__.py:1113) 1\n"
        "thread;decode (pipeline/spo_decode.py:51);_wrapfunc (numpy/core/fromnumeric.py:59) 1\n"
        "thread;_work (pipeline/lanes.py:66) 1\n"  # the lane's own code, not its wait
    )
    shares = profile_shares(collapsed)
    assert shares["engine"] == pytest.approx(6 / 15) and shares["waiting"] == pytest.approx(5 / 15)
    assert shares["grpc"] == pytest.approx(1 / 15) and shares["logging"] == pytest.approx(1 / 15)
    assert shares["ours"] == pytest.approx(1 / 15) and shares["other"] == pytest.approx(1 / 15)
    assert sum(shares.values()) == pytest.approx(1.0)


@pytest.mark.slow
def test_quick_run_writes_results_with_the_schema(tmp_path: Path):
    if not is_built("demo"):
        pytest.skip("demo models not built (make models)")
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "-m", "client.bench.benchmark", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert {"cpu", "cores", "python", "libraries", "intra_op_threads"} <= set(doc["machine"])
    assert {"paddlepaddle", "onnxruntime", "numpy"} <= set(doc["machine"]["libraries"])
    modes = {r["mode"] for r in doc["runs"]}
    assert {"raw", "http", "rpc", "naive", "tokenize", "decode"} <= modes
    for r in doc["runs"]:
        assert set(RUN_KEYS) <= set(r)
        assert r["model"] in ("uie", "spo") and r["size"] == "demo" and r["backend"] in ("paddle", "onnx")
        assert isinstance(r["throughput_rps"], float) and r["throughput_rps"] > 0
        assert r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
        assert r["errors"] == 0
    table = (out / "results.md").read_text(encoding="utf-8")
    assert "| model | size | backend | mode |" in table and "## Targets" in table
    assert sorted(p.name for p in out.glob("*.png")) == ["latency_demo.png", "throughput_demo.png"]
    assert table.strip().splitlines()[-1] in proc.stdout  # the table is printed at the end


@pytest.mark.parametrize("task", ["uie", "spo"])
def test_request_text_gives_rows_of_the_asked_length(tmp_path: Path, task: str):
    from client.bench.common import request_text
    from client.bench.models import write_vocab
    from pipeline.tokenizer import IETokenizer

    assert write_vocab(tmp_path / "vocab.txt", 1000) == 1000  # padded
    tokenizer = IETokenizer.from_file(tmp_path / "vocab.txt")
    prompt = "人物" if task == "uie" else None
    for seq in (64, 128, 256):
        text = request_text(tokenizer, task, seq)
        assert len(tokenizer.encode(text, prompt, max_len=4096)) == seq
        assert tokenizer.unk_id not in tokenizer.encode(text, prompt).input_ids


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() != "x86_64", reason="PyTriton ships an x86-64 tritonserver")
def test_triton_baseline_answers_like_the_service(tmp_path: Path):
    if not is_built("demo"):
        pytest.skip("demo models not built (make models)")
    from client.bench.benchmark import setup_triton, triton_python
    from client.bench.common import MODEL_NAME, answer_of, bench_settings, infer_body
    from client.bench.naive_server import NaiveService
    from client.bench.servers import run_triton
    from client.request import build_request

    setup_triton()
    root = ROOT / "serving_model"
    requests = [
        build_request("spo", ["张伟出生于杭州。", "李娜毕业于北辰大学，是一名软件工程师。"]),
        build_request("uie", "张伟出生于杭州。", ["人物", "地点"]),
        {"task": "nope", "text": "x"},
    ]
    bodies = [{"key": list(kv), "value": list(kv.values())} for kv in requests]
    expected = NaiveService(bench_settings(root, "onnx", 2)).answer_many(bodies)
    with run_triton(
        tmp_path, root, "onnx", 2, triton_python(), max_batch_size=8, queue_delay_us=2000
    ) as port:
        for body, want in zip(bodies, expected, strict=True):
            payload = json.dumps(infer_body(json.dumps(body, ensure_ascii=False))).encode()
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/v2/models/{MODEL_NAME}/infer", data=payload, method="POST"
            )
            with urllib.request.urlopen(req, timeout=60) as resp:
                got = answer_of(json.loads(resp.read()))
            assert got["err_no"] == want["err_no"]
            if want["err_no"] == 0:
                assert results_close(json.loads(got["value"][0]), json.loads(want["value"][0]))
        assert want["err_no"] != 0  # the unknown task is refused, as by the service
        cmd = [
            sys.executable,
            "-m",
            "client.bench.loadgen",
            "--kind",
            "triton",
            "--target",
            f"127.0.0.1:{port}",
        ]
        cmd += ["--task", "spo", "--text", "张伟出生于杭州。", "--concurrency", "4", "--max-requests", "40"]
        load = subprocess.run(
            cmd,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert load.returncode == 0, load.stderr[-3000:]
    result = json.loads(load.stdout.strip().splitlines()[-1])
    assert result["requests"] == 40 and result["errors"] == 0


@pytest.mark.slow
def test_int8_ab_measures_both_precisions_in_turn(tmp_path: Path):
    if not is_built("demo"):
        pytest.skip("demo models not built (make models)")
    from client.bench import int8_ab

    assert int8_ab.main(["--out", str(tmp_path), "--sizes", "demo", "--batches", "1,2", "--rounds", "3"]) == 0
    rows = json.loads((tmp_path / "int8_ab.json").read_text(encoding="utf-8"))["rows"]
    assert [(r["model"], r["batch"]) for r in rows] == [("uie", 1), ("uie", 2), ("spo", 1), ("spo", 2)]
    for r in rows:
        assert r["fp32_rows_per_s"] > 0 and r["int8_rows_per_s"] > 0
        assert r["int8_speedup"] == pytest.approx(r["int8_rows_per_s"] / r["fp32_rows_per_s"])
    assert (tmp_path / "int8_ab.md").read_text(encoding="utf-8").count("| demo |") == 4
