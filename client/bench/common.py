"""What the benchmark's modules share: the request they send, the settings they serve, the
Triton baseline's wire format and the latency summary. A leaf: it imports no other bench module."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

UIE_SCHEMA = '["人物"]'  # one prompt, one stage: one engine row per request
_CJK = ("\u4e00", "\u9fff")


ENGINES = ("paddle", "onnx", "onnx-int8")  # what a benchmark row's ``backend`` names


def engine_of(label: str) -> tuple[str, str]:
    """``(backend, precision)`` of an engine label: ``onnx-int8`` -> ``("onnx", "int8")``."""
    if label not in ENGINES:
        raise ValueError(f"unknown engine {label!r}; use one of {', '.join(ENGINES)}")
    kind, _, precision = label.partition("-")
    return kind, precision or "fp32"


def bench_settings(models_root: Path, engine: str, threads: int, instances: int = 1):
    """IESettings serving ``models_root``'s uie/ and spo/ on ``engine`` (a label of
    :data:`ENGINES`) with ``threads`` per engine call and ``instances`` calls of a model at once."""
    from pipeline.config import IESettings

    kind, precision = engine_of(engine)
    models = {name: {"dir": str(models_root / name), "precision": precision} for name in ("uie", "spo")}
    ie = {"backend": kind, "intra_op_threads": threads, "engine_instances": instances, "models": models}
    return IESettings.model_validate(ie)


def request_text(tokenizer, task: str, seq_len: int) -> str:
    """A text of CJK characters whose request row (prompt included, for UIE) has ``seq_len`` tokens."""
    from conversion import demo_data

    _, records = demo_data.generate(7, n_train=0, n_test=40)
    chars = [c for r in records for c in r["text"] if _CJK[0] <= c <= _CJK[1]]
    prompt = "人物" if task == "uie" else None
    overhead = len(tokenizer.encode("一", prompt)) - 1
    n = seq_len - overhead
    if n < 1:
        raise ValueError(f"seq_len {seq_len} leaves no room for text")
    text = "".join(chars[i % len(chars)] for i in range(n))
    got = len(tokenizer.encode(text, prompt, max_len=4096))
    if got != seq_len:
        raise ValueError(f"built a {got}-token row for seq_len {seq_len}")
    return text


def request_kv(task: str, text: str) -> dict[str, str]:
    """The service's key/value pairs for one text."""
    kv = {"task": task, "text": text}
    if task == "uie":
        kv["schema"] = UIE_SCHEMA
    return kv


MODEL_NAME = "ie"
INPUT = "request"
OUTPUT = "response"


def infer_body(body: str) -> dict:
    """The KServe v2 infer body carrying one service request (JSON text) to :data:`MODEL_NAME`."""
    return {"inputs": [{"name": INPUT, "shape": [1, 1], "datatype": "BYTES", "data": [body]}]}


def answer_of(infer_response: dict) -> dict:
    """The Paddle Serving answer inside a KServe v2 infer response."""
    out = next(o for o in infer_response["outputs"] if o["name"] == OUTPUT)
    return json.loads(out["data"][0])


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ascending values, linear interpolation; nan when empty."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(latencies_s: Sequence[float], errors: int, wall_s: float) -> dict[str, float | int]:
    """Throughput (answered requests per second) and p50/p95/p99 latency in ms."""
    ok = sorted(latencies_s)
    return {
        "requests": len(ok) + errors,
        "errors": errors,
        "wall_s": round(wall_s, 3),
        "throughput_rps": len(ok) / wall_s if wall_s > 0 else 0.0,
        "p50_ms": percentile(ok, 50) * 1000,
        "p95_ms": percentile(ok, 95) * 1000,
        "p99_ms": percentile(ok, 99) * 1000,
    }
