"""In-process measurements: the engine alone (``raw``), and tokenize / decode per request."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from client.bench.common import request_kv, request_text, summarize

logger = logging.getLogger(__name__)


def _timed(fn: Callable[[], object], budget_s: float, min_reps: int, max_reps: int) -> list[float]:
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


@dataclass(frozen=True)
class RawCell:
    model: str
    batch: int
    seq_len: int
    streams: int = 1  # threads calling the engine at once (as a server with concurrent requests)


def measure_raw(
    backend, model, cell: RawCell, budget_s: float, warmup_s: float = 0.5, min_reps: int = 3
) -> dict[str, float | int]:
    """Engine calls on a ``batch`` x ``seq_len`` feed from ``streams`` threads: latency per
    call, rows per second over the wall time."""
    from pipeline.runner import build_feed

    text = request_text(model.tokenizer, cell.model, cell.seq_len)
    prompt = "人物" if cell.model == "uie" else None
    row = model.tokenizer.encode(text, prompt, max_len=4096)
    feed = build_feed([row] * cell.batch, model.card.inputs, model.tokenizer.pad_id)
    per_stream: list[list[float]] = [[] for _ in range(cell.streams)]

    def stream(i: int) -> None:
        # oneDNN builds its kernels over the first calls of a shape: warm up for ``warmup_s``
        # (one call at least)
        _timed(lambda: backend.infer(feed), warmup_s, 1, 200)
        barrier.wait()
        per_stream[i] = _timed(lambda: backend.infer(feed), budget_s, min_reps, 10_000)

    barrier = threading.Barrier(cell.streams + 1)
    threads = [threading.Thread(target=stream, args=(i,)) for i in range(cell.streams)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    times = [x for s in per_stream for x in s]
    stats = summarize(times, 0, wall)
    stats["throughput_rps"] = cell.batch * len(times) / wall
    stats["reps"] = len(times)
    return stats


def measure_host_steps(
    settings, backend, model_name: str, seq_len: int, budget_s: float
) -> dict[str, dict[str, float | int]]:
    """Per-request host time apart from the engine: ``tokenize`` (parse, validate, tokenize:
    ``build_job``) and ``decode`` (``consume`` of the engine outputs + results + JSON)."""
    from pipeline.job_factory import build_job
    from pipeline.models import load_served_models
    from pipeline.runner import build_feed
    from pipeline.schemas import encode_results

    models = load_served_models(settings)
    model = models[model_name]
    kv = request_kv(model_name, request_text(model.tokenizer, model_name, seq_len))
    tok_times = _timed(lambda: build_job(kv, models, settings.limits), budget_s / 2, 5, 2000)
    rows = build_job(kv, models, settings.limits).engine.next_rows()
    fetch = backend.infer(build_feed(rows, model.card.inputs, model.tokenizer.pad_id))
    outputs = [[fetch[name][i] for i in range(len(rows))] for name in model.card.outputs]
    dec_times: list[float] = []
    deadline = time.perf_counter() + budget_s / 2
    while len(dec_times) < 5 or (time.perf_counter() < deadline and len(dec_times) < 2000):
        job = build_job(kv, models, settings.limits)
        job.engine.next_rows()
        t0 = time.perf_counter()
        job.engine.consume(*outputs)
        encode_results(job.results())
        dec_times.append(time.perf_counter() - t0)
    return {
        "tokenize": summarize(tok_times, 0, sum(tok_times)),
        "decode": summarize(dec_times, 0, sum(dec_times)),
    }
