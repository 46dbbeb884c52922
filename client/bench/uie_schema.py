"""UIE at a real schema: 20 entity types with 5 relations each over a 2,000-character text.

python -m client.bench.uie_schema --out bench_out/uie_schema [--sizes demo,base] [--chars 2000]

Builds the request the service would (``pipeline.job_factory.build_job``, config.yml's limits),
then runs its stages through ONNX Runtime as the model op does: per stage the rows, their tokens,
the distinct (prompt, window) rows among them, host time (building rows, decoding) and engine time,
and what a row costs. Then the same request once through the real service over HTTP. Writes
OUT/results.json and OUT/results.md and prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from client.bench import models as bench_models
from client.bench.common import bench_settings

logger = logging.getLogger(__name__)

EXTRA_TYPES = ("疾病", "药物", "症状", "产品", "品牌", "事件", "奖项", "球队", "法律")


def schema_20x5() -> list[dict[str, list[str]]]:
    """20 entity types (the demo's 11 and 9 more), each with 5 relation names (the demo's
    predicates where they fit, cycled)."""
    from conversion import demo_data

    predicates = [p["name"] for p in demo_data.schema_dict()["predicates"]]
    types = [*demo_data.ENTITY_TYPES, *EXTRA_TYPES][:20]
    return [{t: [predicates[(5 * i + k) % len(predicates)] for k in range(5)]} for i, t in enumerate(types)]


def long_text(chars: int) -> str:
    """Demo test records joined up to ``chars`` characters."""
    from conversion import demo_data

    _, records = demo_data.generate(11, n_train=0, n_test=400)
    text = ""
    for r in records:
        if len(text) + len(r["text"]) > chars:
            break
        text += r["text"]
    return text


def measure_stages(model_root: Path, schema: list, text: str, threads: int) -> dict:
    """The request's stages run as the model op runs them (16 rows per engine call)."""
    from pipeline.backends import create_backend
    from pipeline.job_factory import build_job
    from pipeline.models import load_served_models
    from pipeline.runner import build_feed

    settings = bench_settings(model_root, "onnx", threads)
    models = load_served_models(settings)
    model = models["uie"]
    kv = {"task": "uie", "text": text, "schema": json.dumps(schema, ensure_ascii=False)}
    t0 = time.perf_counter()
    request = build_job(kv, models, settings.limits)
    build_s = time.perf_counter() - t0
    job = request.engine
    engine = create_backend("onnx", model.dir, model.card, threads=threads)
    stages = []
    try:
        while True:
            t0 = time.perf_counter()
            rows = job.next_rows()
            host = time.perf_counter() - t0
            if not rows:
                break
            engine_s = 0.0
            order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
            for k in range(0, len(order), 16):
                part = order[k : k + 16]
                feed = build_feed([rows[i] for i in part], model.card.inputs, model.tokenizer.pad_id)
                t1 = time.perf_counter()
                fetch = engine.infer(feed)
                engine_s += time.perf_counter() - t1
                t2 = time.perf_counter()
                for b, i in enumerate(part):
                    job.row_done(i, *(fetch[name][b] for name in model.card.outputs))
                host += time.perf_counter() - t2
            t0 = time.perf_counter()
            job.stage_done()
            host += time.perf_counter() - t0
            tokens = sum(len(r) for r in rows)
            distinct = len({tuple(r.input_ids) for r in rows})
            stages.append({
                "stage": len(stages) + 1, "rows": len(rows), "distinct_rows": distinct, "tokens": tokens,
                "max_row_tokens": max(len(r) for r in rows), "engine_s": round(engine_s, 3),
                "host_s": round(host, 3), "engine_ms_per_row": round(1000 * engine_s / len(rows), 2),
                "engine_us_per_token": round(1e6 * engine_s / tokens, 1),
            })  # fmt: skip
    finally:
        engine.close()
    results = request.results()
    found = results[0] if isinstance(results[0], dict) else {}
    relations = sum(len(v.get("relations", {})) for items in found.values() for v in items)
    return {
        "schema_nodes": sum(1 + len(v) for node in schema for v in node.values()),
        "text_chars": len(text),
        "max_seq_len": model.max_seq_len,
        "build_s": round(build_s, 3),
        "stages": stages,
        "rows": sum(s["rows"] for s in stages),
        "entities_found": sum(len(v) for v in found.values()),
        "relation_groups_found": relations,
    }


def measure_served(model_root: Path, schema: list, text: str, work: Path) -> dict:
    """The same request once through the service over HTTP (accepted by config.yml's limits)."""
    from client import http_client
    from client.bench.local_server import run_server

    with run_server(work, backend="onnx", models={"uie": {"dir": str(model_root / "uie")}}) as srv:
        t0 = time.perf_counter()
        [result] = http_client.predict("uie", text, schema=schema, url=srv.http_url, timeout=600)
        seconds = time.perf_counter() - t0
    return {"served_s": round(seconds, 2), "served_entities": sum(len(v) for v in result.values())}


def markdown(doc: dict) -> str:
    cols = ("stage", "rows", "distinct_rows", "tokens", "max_row_tokens", "engine_s", "host_s")
    cols += ("engine_ms_per_row", "engine_us_per_token")
    lines = []
    for run in doc["runs"]:
        head = {k: v for k, v in run.items() if k != "stages"}
        lines += [f"## {run['size']}", "", "`" + json.dumps(head, ensure_ascii=False) + "`", ""]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---:|" * len(cols)]
        lines += ["| " + " | ".join(str(s[c]) for c in cols) + " |" for s in run["stages"]]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from client.bench.benchmark import configure_logging

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes", default="demo", help="comma list of demo,nano,base (built ones)")
    parser.add_argument("--chars", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    configure_logging()
    schema, text = schema_20x5(), long_text(args.chars)
    runs = []
    for size in args.sizes.split(","):
        root = bench_models.build_size(size)
        run = {"size": size, **measure_stages(root, schema, text, args.threads)}
        run |= measure_served(root, schema, text, args.out / f"srv_{size}")
        runs.append(run)
        logger.info("%s", run)
    doc = {"schema": schema, "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", "utf-8")
    (args.out / "results.md").write_text(markdown(doc), "utf-8")
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
