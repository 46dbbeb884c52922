"""SPO cost against the schema's size: dense vs sparse relation heads, engine and served.

python -m client.bench.spo_scale --out bench_out/spo_scale                      # nano and base
python -m client.bench.spo_scale --out bench_out/spo_scale --sizes nano --predicates 48,500 \\
    --seq-lens 256,512 --duration 8

Per encoder size and predicate count P, a random-weight GPLinker checkpoint (plain GlobalPointer,
head size 64; the encoder and entity head the same for every P, the entity head set so a row of
each ``--seq-lens`` has about ``--candidates`` subject and object spans per 256 tokens (one model
per length), the relation heads offset-initialised, as an untrained model's) goes through the
bridge (its time and peak RSS recorded), and is measured three ways:

* ``raw dense``: ONNX Runtime on the dense export (``so_head`` / ``so_tail`` [P, L, L]) plus the
  cell extraction decoding needs, per row, at batch 1 and 8;
* ``raw sparse``: the served sparse model (``entity`` + encoder states) plus the relation heads
  scored at the candidate pairs (``pipeline.spo_heads``), per row, at batch 1 and 8;
* ``served``: the service over HTTP at concurrency 1 and 4 (rows/s, latency, server RSS), on
  each ``--served-backends`` engine; and ``served dense`` on ONNX Runtime for the same model.

Writes OUT/results.json, OUT/results.md, OUT/spo_scale.png and prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from client.bench import models as bench_models
from client.bench.common import request_text
from client.bench.soak import rss_mb

logger = logging.getLogger(__name__)

ROOT = bench_models.ROOT
WORK = bench_models.BENCH_DIR / "spo_scale"
DENSE_CALL_BOUND = 2 * 2**30  # bytes of dense outputs one measured engine call may make
RELATION_OFFSET = 8.0


@dataclass(frozen=True)
class Plan:
    sizes: tuple[str, ...] = ("nano", "base")
    predicates: tuple[int, ...] = (48, 500)
    seq_lens: tuple[int, ...] = (256, 512)
    batches: tuple[int, ...] = (1, 8)
    concurrencies: tuple[int, ...] = (1, 4)
    served_backends: tuple[str, ...] = ("onnx", "paddle")
    served_dense: bool = True
    candidates: int = 16
    duration_s: float = 8.0
    threads: int = 2


# -- models ------------------------------------------------------------------------------------


def _entity_counts(model, feeds) -> tuple[int, int]:
    import torch

    with torch.no_grad():
        entity, _ = model.entity_and_hidden(*feeds)
    return int((entity[0, 0] > 0).sum()), int((entity[0, 1] > 0).sum())


def _calibrate_entity_head(model, feeds, candidates: int) -> None:
    """Set the entity head's offset so the row ``feeds`` has about ``candidates`` subject and
    object spans (bisection on the offset of ``_offset_init_``)."""
    from conversion.models.spo_torch import offset_init_

    lo, hi = 0.0, 200.0
    for _ in range(30):
        mid = (lo + hi) / 2
        offset_init_(model.entity_head, mid)
        if sum(_entity_counts(model, feeds)) / 2 > candidates:
            lo = mid
        else:
            hi = mid
    offset_init_(model.entity_head, hi)


def scale_checkpoint(
    size: str, predicates: int, work: Path, candidates: int, calibrate_len: int = 256, seed: int = 0
) -> Path:
    """A random-weight SPO checkpoint of encoder ``size`` with ``predicates`` relations (see the
    module docstring), its entity head set on a row of ``calibrate_len`` tokens to about
    ``candidates`` spans per 256 tokens; its directory."""
    import torch

    from conversion import demo_data
    from conversion.models.spo_torch import SPOConfig, SPOModel
    from pipeline.tokenizer import IETokenizer

    ckpt = work / "ckpt"
    if (ckpt / "model.safetensors").is_file():
        return ckpt
    shape = bench_models.SIZES[size]
    vocab = work / "vocab.txt"
    work.mkdir(parents=True, exist_ok=True)
    vocab_size = bench_models.write_vocab(vocab, shape.vocab)
    config = SPOConfig(
        vocab_size=vocab_size, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads, intermediate_size=4 * shape.hidden, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, max_position_embeddings=512, num_predicates=predicates,
        head_size=64, relation_init_offset=RELATION_OFFSET,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = SPOModel(config).eval()
    # the encoder and entity head of one fixed model, whatever P: every P then finds the same
    # spans, and only the relation heads differ
    torch.manual_seed(seed)
    shared = SPOModel(replace(config, num_predicates=1)).eval()
    model.bert.load_state_dict(shared.bert.state_dict())
    model.entity_head.load_state_dict(shared.entity_head.state_dict())
    tokenizer = IETokenizer.from_file(vocab)
    enc = tokenizer.encode(request_text(tokenizer, "spo", calibrate_len), max_len=calibrate_len)
    ids = torch.tensor([enc.input_ids])
    feeds = (ids, torch.tensor([enc.token_type_ids]), torch.ones_like(ids))
    _calibrate_entity_head(model, feeds, candidates * calibrate_len // 256)
    logger.info(
        "%s P=%d: %s subject / object spans in a %d-token row",
        size,
        predicates,
        _entity_counts(model, feeds),
        calibrate_len,
    )
    bench_models.save_hf_layout(model, ckpt)
    shutil.copyfile(vocab, ckpt / "vocab.txt")
    names = [{"name": f"关系{i}", "subject_type": "实体", "object_type": "实体"} for i in range(predicates)]
    names[: len(demo_data.schema_dict()["predicates"])] = demo_data.schema_dict()["predicates"][:predicates]
    (ckpt / "predicates.json").write_text(json.dumps(names, ensure_ascii=False), encoding="utf-8")
    (ckpt / "metrics.json").write_text(json.dumps({"max_seq_len": 512}), encoding="utf-8")
    return ckpt


def build_served(ckpt: Path, work: Path) -> dict:
    """The sparse serving model of ``ckpt`` through the bridge (once); the bridge's time and
    peak RSS from its parity.json."""
    out = work / "serving_model"
    if not (out / "spo" / "model_card.json").is_file():
        cmd = [sys.executable, "-m", "conversion.bridge", "build", "--only", "spo", "--no-int8"]
        cmd += ["--spo-checkpoint", str(ckpt), "--out", str(out), "--work", str(work / "bridge")]
        logger.info("bridge: %s", " ".join(cmd))
        subprocess.run(cmd, cwd=ROOT, check=True)
    hops = json.loads((out / "parity.json").read_text(encoding="utf-8"))["hops"]
    return {
        "dir": str(out / "spo"),
        "bridge_s": round(sum(h["seconds"] for h in hops), 1),
        "bridge_peak_rss_mib": max(max(h["peak_rss_mib"], h.get("children_peak_rss_mib") or 0) for h in hops),
        "hops_passed": all(h["passed"] for h in hops),
    }


def dense_model_dir(ckpt: Path, sparse_dir: Path, work: Path) -> Path:
    """A copy of the served model whose ONNX file is the dense export (ONNX Runtime only)."""
    from conversion.export_spo import export_onnx
    from conversion.models.spo_checkpoint import load_spo_checkpoint
    from conversion.spec import SPO_DENSE_SPEC

    out = work / "dense"
    if (out / "model_card.json").is_file():
        return out
    shutil.copytree(sparse_dir, out, ignore=shutil.ignore_patterns("serving_server", "*.onnx", "*.npz"))
    export_onnx(load_spo_checkpoint(ckpt), out / "model.onnx", SPO_DENSE_SPEC)
    card = json.loads((out / "model_card.json").read_text(encoding="utf-8"))
    card["outputs"] = list(SPO_DENSE_SPEC.outputs)
    card["output_axes"] = {
        k: {str(a): n for a, n in v.items()}
        for k, v in SPO_DENSE_SPEC.dynamic_axes().items()
        if k in SPO_DENSE_SPEC.outputs
    }
    for key in ("relation_heads", "int8", "paddle_files", "serving_server"):
        card.pop(key, None)
    (out / "model_card.json").write_text(json.dumps(card, ensure_ascii=False, indent=1), encoding="utf-8")
    return out


# -- measurements ------------------------------------------------------------------------------


def measure_raw(
    model_dir: Path, dense: bool, seq_len: int, batch: int, budget_s: float, threads: int
) -> dict:
    """ONNX Runtime calls of ``batch`` rows of ``seq_len`` tokens, each followed by the cell
    extraction of every row; per-row time and output bytes."""
    from pipeline.backends import create_backend
    from pipeline.model_card import load_model_card, load_relation_heads_of
    from pipeline.runner import build_feed
    from pipeline.spo_decode import extract_cells, extract_sparse_cells
    from pipeline.tokenizer import IETokenizer

    card = load_model_card(model_dir)
    tokenizer = IETokenizer.from_file(model_dir / card.vocab, card.tokenizer.settings)
    row = tokenizer.encode(request_text(tokenizer, "spo", seq_len), max_len=seq_len)
    feed = build_feed([row] * batch, card.inputs, tokenizer.pad_id)
    heads = load_relation_heads_of(model_dir, card)
    engine = create_backend("onnx", model_dir, card, threads=threads)
    found: list[tuple[int, int]] = []
    out_bytes = [0.0]

    def call() -> None:
        fetch = engine.infer(feed)
        found.clear()
        for b in range(batch):
            if dense:
                cells = extract_cells(
                    fetch["entity"][b], fetch["so_head"][b], fetch["so_tail"][b], row.text_start, row.text_end
                )
            else:
                cells = extract_sparse_cells(
                    fetch["entity"][b], fetch["hidden"][b], heads, row.text_start, row.text_end
                )
            found.append((len(cells.subjects), len(cells.objects)))
        out_bytes[0] = sum(v.nbytes for v in fetch.values()) / batch

    try:
        call()  # warm-up
        times = []
        deadline = time.perf_counter() + budget_s
        while len(times) < 3 or (time.perf_counter() < deadline and len(times) < 200):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
    finally:
        engine.close()
    per_row = float(np.median(times)) / batch
    return {
        "ms_per_row": round(per_row * 1000, 2), "rows_per_s": round(1 / per_row, 2), "calls": len(times),
        "out_mb_per_row": round(out_bytes[0] / 2**20, 3), "spans_per_row": found[0],
    }  # fmt: skip


def measure_served(model_dir: Path, backend: str, seq_len: int, plan: Plan, work: Path) -> list[dict]:
    """The service on ``backend`` over HTTP at each concurrency: rows/s, latency, peak RSS."""
    from client.bench.loadgen import http_body, http_sender, request_body, run_load
    from client.bench.local_server import run_server
    from pipeline.model_card import load_model_card
    from pipeline.tokenizer import IETokenizer

    card = load_model_card(model_dir)
    tokenizer = IETokenizer.from_file(model_dir / card.vocab, card.tokenizer.settings)
    body = http_body(request_body("spo", request_text(tokenizer, "spo", seq_len), None)).encode()
    rows = []
    with run_server(work, backend=backend, models={"spo": {"dir": str(model_dir)}}) as srv:
        target = f"127.0.0.1:{srv.http_port}"
        for c in plan.concurrencies:
            peak = [rss_mb(srv.proc.pid)]
            done = threading.Event()

            def sample(peak=peak, done=done) -> None:
                while not done.wait(0.2):
                    peak[0] = max(peak[0], rss_mb(srv.proc.pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            stats = run_load(lambda: http_sender(target, body, timeout_s=300), c, plan.duration_s, 100_000)
            done.set()
            sampler.join()
            rows.append({
                "concurrency": c, "rows_per_s": round(stats["throughput_rps"], 2), "errors": stats["errors"],
                "p50_ms": round(stats["p50_ms"], 1), "p99_ms": round(stats["p99_ms"], 1),
                "server_rss_mib": round(peak[0]),
            })  # fmt: skip
    return rows


def run(plan: Plan, out: Path, work: Path = WORK) -> dict:
    from client.bench.report import machine_info

    results: list[dict] = []
    builds: list[dict] = []
    for size in plan.sizes:
        for p in plan.predicates:
            for length in plan.seq_lens:
                # a model per length, its entity head set at that length (a random model's span
                # count does not grow linearly with the row; set at one length, it finds none or
                # hundreds at the other)
                cell = work / f"{size}-p{p}-L{length}"
                ckpt = scale_checkpoint(size, p, cell, plan.candidates, calibrate_len=length)
                t0 = time.perf_counter()
                built = build_served(ckpt, cell)
                wall_s = round(time.perf_counter() - t0, 1)
                builds.append({"size": size, "predicates": p, "seq_len": length, **built, "wall_s": wall_s})
                logger.info("built %s", builds[-1])
                sparse_dir = Path(built["dir"])
                dense_dir = dense_model_dir(ckpt, sparse_dir, cell)
                base = {"size": size, "predicates": p, "seq_len": length}
                for batch in plan.batches:
                    for path, model_dir, dense in (
                        ("raw dense", dense_dir, True),
                        ("raw sparse", sparse_dir, False),
                    ):
                        row = {**base, "path": path, "batch": batch}
                        bytes_per_row = (2 + (2 * p if dense else 0)) * length * length * 4
                        if batch * bytes_per_row > DENSE_CALL_BOUND:
                            row["skipped"] = f"{batch * bytes_per_row / 2**30:.1f} GiB of outputs per call"
                        else:
                            row |= measure_raw(
                                model_dir, dense, length, batch, plan.duration_s / 2, plan.threads
                            )
                        results.append(row)
                        logger.info("%s", row)
                served = [(f"served {b}", sparse_dir, b) for b in plan.served_backends]
                if plan.served_dense:
                    served.append(("served dense onnx", dense_dir, "onnx"))
                for path, model_dir, backend in served:
                    for r in measure_served(
                        model_dir, backend, length, plan, cell / "srv" / path.replace(" ", "_")
                    ):
                        results.append({**base, "path": path, **r})
                        logger.info("%s", results[-1])
    doc = {"machine": machine_info(plan.threads), "plan": plan.__dict__, "builds": builds, "rows": results}
    doc["targets"] = targets(doc)
    write_outputs(doc, out)
    return doc


# -- report ------------------------------------------------------------------------------------


def _get(rows: list[dict], **match) -> list[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in match.items()) and "skipped" not in r]


def _target(what: str, value: str, met: bool) -> dict:
    return {"target": what, "value": value, "met": met}


def _served_sparse(row: dict) -> bool:
    return row["path"].startswith("served") and "dense" not in row["path"]


def targets(doc: dict) -> list[dict]:
    """Issue 33's targets, each with the figures it was judged on."""
    rows, out = doc["rows"], []
    big, small = max(doc["plan"]["predicates"]), min(doc["plan"]["predicates"])
    for r in _get(rows, path="raw sparse", predicates=big, seq_len=256, batch=1):
        mb = r["out_mb_per_row"]
        out.append(_target(f"outputs per row, P={big} L=256 < 2 MB ({r['size']})", f"{mb} MB", mb < 2))
    for r in filter(_served_sparse, _get(rows, predicates=big)):
        where = {k: r[k] for k in ("size", "seq_len", "path", "concurrency")}
        for ref in _get(rows, predicates=small, **where):
            ratio = r["rows_per_s"] / ref["rows_per_s"] if ref["rows_per_s"] else float("nan")
            what = f"served rows/s P={big} >= 0.8x P={small} ({', '.join(map(str, where.values()))})"
            out.append(_target(what, f"{ratio:.2f}x ({r['rows_per_s']} / {ref['rows_per_s']})", ratio >= 0.8))
    for r in _get(rows, batch=8):
        where = {k: r[k] for k in ("size", "predicates", "seq_len", "path")}
        for one in _get(rows, batch=1, **where):
            what = f"rows/s batch 8 >= batch 1 ({', '.join(map(str, where.values()))})"
            ok = r["rows_per_s"] >= one["rows_per_s"]
            out.append(_target(what, f"{r['rows_per_s']} vs {one['rows_per_s']}", ok))
    for r in filter(_served_sparse, _get(rows, size="nano", predicates=big)):
        what = f"server RSS, P={big} < 1.5 GB (nano, L={r['seq_len']}, {r['path']}, c{r['concurrency']})"
        out.append(_target(what, f"{r['server_rss_mib']} MiB", r["server_rss_mib"] < 1536))
    return out


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]


ROW_FIELDS = (
    "ms_per_row",
    "rows_per_s",
    "out_mb_per_row",
    "spans_per_row",
    "p50_ms",
    "p99_ms",
    "errors",
    "server_rss_mib",
)


def markdown(doc: dict) -> str:
    build_cols = ("size", "predicates", "seq_len", "hops_passed", "bridge_s", "bridge_peak_rss_mib")
    lines = ["## Builds (conversion.bridge build --only spo --no-int8)", ""]
    lines += _table(list(build_cols), [[b[k] for k in build_cols] for b in doc["builds"]])
    rows = []
    for r in doc["rows"]:
        head = [r["size"], r["predicates"], r["seq_len"], r["path"], r.get("batch", r.get("concurrency"))]
        rows.append(
            head + ([f"skipped: {r['skipped']}"] if "skipped" in r else [r.get(k) for k in ROW_FIELDS])
        )
    lines += ["", "## Rows", ""]
    lines += _table(["size", "P", "L", "path", "batch / conc.", *ROW_FIELDS], rows)
    lines += ["", "## Targets", ""]
    lines += _table(["target", "value", "met"], [[t["target"], t["value"], t["met"]] for t in doc["targets"]])
    return "\n".join(lines) + "\n"


def plot(doc: dict, path: Path) -> None:
    """Per-row engine time and output size against P, per (size, L), dense vs sparse, batch 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_b) = plt.subplots(1, 2, figsize=(12, 4.5))
    raw = [
        r for r in doc["rows"] if r["path"].startswith("raw") and r.get("batch") == 1 and "skipped" not in r
    ]
    for key in sorted({(r["size"], r["seq_len"], r["path"]) for r in raw}):
        pts = sorted(
            (r["predicates"], r["ms_per_row"], r["out_mb_per_row"])
            for r in raw
            if (r["size"], r["seq_len"], r["path"]) == key
        )
        label = f"{key[2]} {key[0]} L={key[1]}"
        style = "-o" if "sparse" in key[2] else "--x"
        ax_t.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
        ax_b.plot([p[0] for p in pts], [p[2] for p in pts], style, label=label)
    for ax, title in ((ax_t, "engine + cell extraction, ms per row"), (ax_b, "engine outputs, MB per row")):
        ax.set_xlabel("predicates P")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax_b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_outputs(doc: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", "utf-8")
    (out / "results.md").write_text(markdown(doc), "utf-8")
    plot(doc, out / "spo_scale.png")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def main(argv: list[str] | None = None) -> int:
    from client.bench.benchmark import PYLIB, configure_logging, setup

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes", default="nano,base")
    parser.add_argument("--predicates", default="48,500")
    parser.add_argument("--seq-lens", default="256,512")
    parser.add_argument("--served-backends", default="onnx,paddle")
    parser.add_argument("--no-served-dense", action="store_true")
    parser.add_argument("--candidates", type=int, default=16, help="subject / object spans per 256 tokens")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per served cell (raw: half)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args(argv)
    configure_logging()
    if not (PYLIB / "matplotlib").is_dir():
        setup()
    sys.path.append(str(PYLIB))
    plan = Plan(
        sizes=tuple(args.sizes.split(",")),
        predicates=_ints(args.predicates),
        seq_lens=_ints(args.seq_lens),
        served_backends=tuple(b for b in args.served_backends.split(",") if b),
        served_dense=not args.no_served_dense,
        candidates=args.candidates,
        duration_s=args.duration,
        threads=args.threads,
    )
    doc = run(plan, args.out, args.work)
    print(json.dumps(doc["targets"], indent=1, ensure_ascii=False))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
