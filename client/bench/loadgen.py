"""Closed-loop load generator: N workers send one request after another to a server on 127.0.0.1.

python -m client.bench.loadgen --kind http --target 127.0.0.1:18082 --task spo --text 张伟… \\
    --concurrency 8 --duration 5 --max-requests 2000

Bounded in requests and time. Prints one JSON object: throughput, latency percentiles, errors.
``http`` posts Paddle Serving's JSON to ``/ie/prediction`` (the service's gateway and the naive
server take the same body); ``rpc`` uses Paddle Serving's ``PipelineClient``; ``triton`` posts
the same body inside a KServe v2 infer request to the Triton baseline (client/bench/triton_server.py).
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from client.bench.common import summarize
from client.request import build_request

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
HTTP_PATH = "/ie/prediction"
Sender = Callable[[], bool]  # one request; True when it was answered without error


def loopback_target(target: str) -> tuple[str, int]:
    """``127.0.0.1:PORT`` -> (host, port); any other host is refused."""
    host, _, port = target.rpartition(":")
    if host != LOOPBACK or not port.isdigit():
        raise ValueError(f"the load generator targets {LOOPBACK}:PORT only, got {target!r}")
    return host, int(port)


@dataclass
class _Shared:
    deadline: float
    max_requests: int
    started: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self) -> bool:
        with self.lock:
            if self.started >= self.max_requests or time.perf_counter() >= self.deadline:
                return False
            self.started += 1
            return True


def run_load(
    make_sender: Callable[[], Sender],
    concurrency: int,
    duration_s: float,
    max_requests: int,
    warmup_per_worker: int = 2,
) -> dict[str, float | int]:
    """Run ``concurrency`` workers, each with its own sender, for at most ``duration_s`` seconds
    and ``max_requests`` requests after a warm-up of ``warmup_per_worker`` requests each."""
    barrier = threading.Barrier(concurrency + 1)
    shared = _Shared(deadline=float("inf"), max_requests=max_requests)
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            send = make_sender()
            for _ in range(warmup_per_worker):
                send()
        except BaseException as e:  # a sender that cannot even connect: counted below
            failures.append(e)
            send = None
        barrier.wait()
        while send is not None and shared.claim():
            t0 = time.perf_counter()
            try:
                ok = send()
            except Exception:
                ok = False
            elapsed = time.perf_counter() - t0
            with shared.lock:
                if ok:
                    shared.latencies.append(elapsed)
                else:
                    shared.errors += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    shared.deadline = start + duration_s
    for t in threads:
        t.join(timeout=duration_s + 120)
    wall = time.perf_counter() - start
    result = summarize(shared.latencies, shared.errors + len(failures), wall)
    if failures:
        result["worker_failures"] = [repr(e) for e in failures[:3]]
    return result


def http_sender(
    target: str,
    body: bytes,
    timeout_s: float = 60.0,
    path: str = HTTP_PATH,
    unwrap: Callable[[dict], dict] = lambda answer: answer,
) -> Sender:
    """Keep-alive HTTP POSTs of ``body`` to ``target``'s ``path``; reconnects when closed.

    ``unwrap`` takes the Paddle Serving answer out of the response JSON.
    """
    host, port = loopback_target(target)
    state: dict[str, http.client.HTTPConnection | None] = {"conn": None}
    headers = {"Content-Type": "application/json"}

    def send() -> bool:
        for attempt in (0, 1):
            conn = state["conn"] or http.client.HTTPConnection(host, port, timeout=timeout_s)
            state["conn"] = conn
            try:
                conn.request("POST", path, body, headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    conn.close()
                    state["conn"] = None
            except (ConnectionError, http.client.HTTPException):
                conn.close()
                state["conn"] = None
                if attempt:
                    raise
                continue
            return resp.status == 200 and answered_ok(unwrap(json.loads(data)))
        return False

    return send


def answered_ok(answer: dict) -> bool:
    """A Paddle Serving answer with ``err_no`` 0 and no per-text error object."""
    if int(answer.get("err_no", -1)) != 0:
        return False
    values = dict(zip(answer.get("key", []), answer.get("value", []), strict=False))
    return not any("error" in item for item in json.loads(values.get("result", "[{}]")))


def rpc_sender(target: str, kv: dict[str, str]) -> Sender:
    """``PipelineClient.predict`` of ``kv`` on its own connection to ``target``."""
    loopback_target(target)
    from pipeline.paddle_serving.compat import PipelineClient

    client = PipelineClient()
    client.connect([target])

    def send() -> bool:
        resp = client.predict(feed_dict=kv, fetch=None)
        if resp.err_no != 0:
            return False
        return answered_ok({"err_no": 0, "key": list(resp.key), "value": list(resp.value)})

    return send


def request_body(task: str, text: str, schema: str | None) -> dict[str, str]:
    """The request's key/value pairs (one text)."""
    return build_request(task, text, schema)


def http_body(kv: dict[str, str]) -> str:
    """Paddle Serving's JSON body (``key`` / ``value`` lists) carrying ``kv``."""
    return json.dumps({"key": list(kv), "value": list(kv.values())}, ensure_ascii=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["http", "rpc", "triton"], required=True)
    parser.add_argument("--target", required=True, help="127.0.0.1:PORT")
    parser.add_argument("--task", choices=["uie", "spo"], required=True)
    parser.add_argument("--text", required=True)
    parser.add_argument("--schema", default=None, help="UIE schema as JSON")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of measurement (bound)")
    parser.add_argument("--max-requests", type=int, default=5000, help="requests of measurement (bound)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up requests per worker")
    args = parser.parse_args(argv)
    kv = request_body(args.task, args.text, args.schema)
    loopback_target(args.target)
    body = http_body(kv)
    if args.kind == "http":

        def make() -> Sender:
            return http_sender(args.target, body.encode())
    elif args.kind == "triton":
        from client.bench.common import MODEL_NAME, answer_of, infer_body

        wrapped = json.dumps(infer_body(body), ensure_ascii=False).encode()

        def make() -> Sender:
            return http_sender(args.target, wrapped, path=f"/v2/models/{MODEL_NAME}/infer", unwrap=answer_of)
    else:

        def make() -> Sender:
            return rpc_sender(args.target, kv)

    result = run_load(make, args.concurrency, args.duration, args.max_requests, args.warmup)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
