"""The HTTP gateways side by side: Paddle Serving's Go gateway (HTTP -> loopback gRPC) against the
in-process Python one, on the same models, engine and requests, in one run.

    python -m client.bench.gateways --out docs/benchmarks/gateways [--duration 8] [--backend onnx]

For each gateway a server runs alone; the load generator (client/bench/loadgen.py, a separate process)
posts the demo sentence at each concurrency, for both tasks. Prints a table and writes
``results.json`` beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from client.bench.common import UIE_SCHEMA
from client.bench.local_server import ROOT, run_server

logger = logging.getLogger(__name__)

TEXT = "张伟，1985年3月出生于杭州，毕业于北辰大学。"
GATEWAYS = ("go", "python")


def measure(target: str, task: str, concurrency: int, duration_s: float, workdir: Path) -> dict:
    """One load-generator run; its JSON summary."""
    cmd = [sys.executable, "-m", "client.bench.loadgen", "--kind", "http", "--target", target, "--task", task]
    cmd += ["--text", TEXT, "--concurrency", str(concurrency), "--duration", str(duration_s)]
    cmd += ["--max-requests", "100000", "--warmup", "3"]
    if task == "uie":
        cmd += ["--schema", UIE_SCHEMA]
    proc = subprocess.run(
        cmd,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=duration_s * 3 + 120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(out: Path, backend: str, concurrencies: list[int], duration_s: float) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for gateway in GATEWAYS:
            with run_server(Path(tmp) / gateway, backend=backend, http_gateway=gateway) as srv:
                target = f"127.0.0.1:{srv.http_port}"
                for task in ("uie", "spo"):
                    for conc in concurrencies:
                        row = measure(target, task, conc, duration_s, Path(tmp))
                        row.update(gateway=gateway, task=task, concurrency=conc, backend=backend)
                        logger.info(
                            "%s %s c%d: %.1f req/s p50 %.1f ms p99 %.1f ms",
                            gateway, task, conc, row["throughput_rps"], row["p50_ms"], row["p99_ms"],
                        )  # fmt: skip
                        rows.append(row)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    (out / "table.md").write_text(table(rows), encoding="utf-8")
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: per task and concurrency, both gateways and the Python/Go ratios."""
    by = {(r["gateway"], r["task"], r["concurrency"]): r for r in rows}
    lines = [
        "| task | c | Go req/s | Python req/s | ratio | Go p50 / p99 ms | Python p50 / p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for task in ("uie", "spo"):
        for conc in sorted({r["concurrency"] for r in rows}):
            go, py = by.get(("go", task, conc)), by.get(("python", task, conc))
            if go is None or py is None:
                continue
            ratio = py["throughput_rps"] / go["throughput_rps"] if go["throughput_rps"] else float("nan")
            lines.append(
                f"| {task} | {conc} | {go['throughput_rps']:.1f} | {py['throughput_rps']:.1f} | "
                f"{ratio:.2f}x | {go['p50_ms']:.1f} / {go['p99_ms']:.1f} | "
                f"{py['p50_ms']:.1f} / {py['p99_ms']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backend", default="onnx", choices=["onnx", "paddle"])
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--duration", type=float, default=8.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rows = run(args.out, args.backend, [int(c) for c in args.concurrency.split(",")], args.duration)
    sys.stdout.write(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
