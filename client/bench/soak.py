"""Load and soak: many mixed UIE/SPO requests at high concurrency against a live server.

    python -m client.bench.soak [--requests 10000] [--concurrency 32] [--backend onnx] [--out DIR]

Starts the service on free loopback ports, computes each distinct request's answer once, then
replays the requests concurrently and checks every answer against its own request's (no
cross-talk between auto-batched requests), counting errors and sampling the server's RSS.
Prints a JSON summary and a table; writes ``soak.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from client import rpc_client
from client.request import build_request, parse_response, results_close

logger = logging.getLogger(__name__)


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` and its children (MiB), from /proc."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def distinct_requests(n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` different requests (1-4 held-out demo texts each), alternating UIE and SPO."""
    from conversion.demo_data import generate, uie_schema

    _, test = generate(seed=seed)
    texts = [r["text"] for r in test]
    out = []
    for i in range(n):
        k = 1 + i % 4
        chunk = [texts[(i * 3 + j) % len(texts)] for j in range(k)]
        task = "uie" if i % 2 else "spo"
        out.append(build_request(task, chunk, uie_schema() if task == "uie" else None))
    return out


def soak(endpoint: str, pid: int, total: int, concurrency: int, distinct: int = 64) -> dict:
    """Replay ``total`` requests; returns the figures."""
    client = rpc_client.connect(endpoint)
    reqs = distinct_requests(distinct)
    expected = []
    for kv in reqs:
        resp = client.predict(feed_dict=kv, fetch=None)
        expected.append(parse_response(resp.err_no, resp.err_msg, list(resp.key), list(resp.value)))
    lock = threading.Lock()
    state = {"done": 0, "errors": 0, "mismatches": 0, "rss": {}}
    latencies: list[float] = []
    local = threading.local()

    def one(i: int) -> None:
        c = getattr(local, "client", None) or rpc_client.connect(endpoint)
        local.client = c
        kv = reqs[i % len(reqs)]
        t0 = time.perf_counter()
        try:
            resp = c.predict(feed_dict=kv, fetch=None)
            answer = parse_response(resp.err_no, resp.err_msg, list(resp.key), list(resp.value))
            ok, same = True, results_close(answer, expected[i % len(reqs)])
        except Exception:
            logger.exception("request %d failed", i)
            ok, same = False, False
        with lock:
            latencies.append(time.perf_counter() - t0)
            state["done"] += 1
            state["errors"] += not ok
            state["mismatches"] += ok and not same
            if state["done"] in (1, 2000, 4000, 6000, 8000, total):
                state["rss"][state["done"]] = round(rss_mb(pid), 1)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(total)))
    wall = time.perf_counter() - t0
    latencies.sort()
    rss = state["rss"]
    base = rss.get(2000) or rss.get(min(rss))
    return {
        "requests": total,
        "concurrency": concurrency,
        "distinct_requests": len(reqs),
        "errors": state["errors"],
        "mismatches": state["mismatches"],
        "wall_s": round(wall, 1),
        "throughput_rps": round(total / wall, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
        "rss_mb": rss,
        "rss_growth_2000_to_end_pct": round((rss[total] - base) / base * 100, 1) if base else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Load and soak test of the IE service.")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--backend", default="onnx", choices=["onnx", "paddle", "auto"])
    parser.add_argument("--out", type=Path, default=Path("bench_out"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from client.bench.local_server import run_server

    with tempfile.TemporaryDirectory() as tmp, run_server(Path(tmp), backend=args.backend) as srv:
        result = soak(srv.rpc_endpoint, srv.proc.pid, args.requests, args.concurrency)
    result["backend"] = args.backend
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    print("| requests | concurrency | errors | mismatches | rps | p50 ms | p99 ms | RSS growth 2000->end |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {result['requests']} | {result['concurrency']} | {result['errors']} | {result['mismatches']} "
        f"| {result['throughput_rps']} | {result['p50_ms']} | {result['p99_ms']} "
        f"| {result['rss_growth_2000_to_end_pct']}% |"
    )
    return 0 if result["errors"] == 0 and result["mismatches"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
