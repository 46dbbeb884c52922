"""INT8 against FP32 on the same engine, interleaved: one FP32 call, one INT8 call, and again.

python -m client.bench.int8_ab --out DIR [--sizes demo,nano,base] [--batches 1,8] [--rounds 15]

On a shared machine two runs minutes apart see different loads; calls taken in turn see the same
one, so their ratio holds where absolute figures do not. Rows of ``seq_len`` tokens (128) as the
benchmark sends them; the INT8 backend runs each row of a batch alone (``docs/int8.md``). Writes
DIR/int8_ab.json and DIR/int8_ab.md and prints both.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

from client.bench import models as bench_models
from client.bench.common import bench_settings, request_text
from client.bench.report import machine_info

logger = logging.getLogger(__name__)


def measure(size: str, model_name: str, batch: int, seq_len: int, rounds: int, threads: int) -> dict:
    """Median seconds per call of each precision over ``rounds`` alternating pairs, and the ratio."""
    from pipeline.backends import create_backend
    from pipeline.models import load_served_models
    from pipeline.runner import build_feed

    model = load_served_models(bench_settings(bench_models.model_root(size), "onnx", threads))[model_name]
    prompt = "人物" if model_name == "uie" else None
    row = model.tokenizer.encode(request_text(model.tokenizer, model_name, seq_len), prompt, max_len=4096)
    feed = build_feed([row] * batch, model.card.inputs, model.tokenizer.pad_id)
    engines = {
        precision: create_backend("onnx", model.dir, model.card, threads, precision=precision)
        for precision in ("fp32", "int8")
    }
    times: dict[str, list[float]] = {p: [] for p in engines}
    try:
        for engine in engines.values():  # warm-up
            engine.infer(feed)
        for _ in range(rounds):
            for precision, engine in engines.items():
                t0 = time.perf_counter()
                engine.infer(feed)
                times[precision].append(time.perf_counter() - t0)
    finally:
        for engine in engines.values():
            engine.close()
    med = {p: statistics.median(t) for p, t in times.items()}
    return {
        "size": size,
        "model": model_name,
        "batch": batch,
        "seq_len": seq_len,
        "rounds": rounds,
        "fp32_rows_per_s": batch / med["fp32"],
        "int8_rows_per_s": batch / med["int8"],
        "int8_speedup": med["fp32"] / med["int8"],
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| size | model | batch | FP32 rows/s | INT8 rows/s | INT8 / FP32 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['model']} | {r['batch']} | {r['fp32_rows_per_s']:.1f} | "
            f"{r['int8_rows_per_s']:.1f} | {r['int8_speedup']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes", default="demo,nano,base")
    parser.add_argument("--models", default="uie,spo")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rows = []
    for size in args.sizes.split(","):
        bench_models.build_size(size)
        for model_name in args.models.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                rows.append(measure(size, model_name, batch, args.seq_len, args.rounds, args.threads))
                logger.info("%s", rows[-1])
    args.out.mkdir(parents=True, exist_ok=True)
    machine = machine_info(args.threads)
    machine["load_average_end"] = os.getloadavg()
    doc = {"machine": machine, "rows": rows}
    (args.out / "int8_ab.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    (args.out / "int8_ab.md").write_text(markdown(rows), encoding="utf-8")
    print(json.dumps(doc, indent=1))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
