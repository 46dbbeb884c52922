"""Paddle vs ONNX Runtime, raw engine vs served (HTTP, RPC) vs a naive Flask server, side by side.

python -m client.bench --setup --out bench_out            # full run (minutes; idle machine)
python -m client.bench --setup --quick --out bench_out    # demo size, few cells, < 1 minute

Writes OUT/results.json, OUT/results.md and OUT/*.png and prints the JSON and the table.
``--setup`` installs requirements-bench.txt (Flask, matplotlib, py-spy) into
build/bench/pylib, beside the project's environment.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from client.bench import models as bench_models
from client.bench.report import machine_info, merge_runs, write_outputs

logger = logging.getLogger(__name__)

ROOT = bench_models.ROOT
PYLIB = bench_models.BENCH_DIR / "pylib"
TRITON_VENV = bench_models.BENCH_DIR / "triton-venv"


@dataclass(frozen=True)
class Plan:
    """What to measure; every cell is bounded by ``duration_s`` / ``max_requests``."""

    sizes: tuple[str, ...] = bench_models.ALL_SIZES
    backends: tuple[str, ...] = ("paddle", "onnx")
    served_backends: tuple[str, ...] = ("paddle", "onnx")
    models: tuple[str, ...] = ("uie", "spo")
    precisions: tuple[str, ...] = ("fp32",)  # int8: ONNX Runtime on the bridge's INT8 files
    batches: tuple[int, ...] = (1, 4, 8, 16)
    seq_lens: tuple[int, ...] = (64, 128, 256)
    serve_seq_len: int = 128
    concurrencies: tuple[int, ...] = (1, 4, 8, 16, 32)
    # (op.model.batch_size, op.model.concurrency) of each service run; batch_size > 1 = auto-batching
    served_variants: tuple[tuple[int, int], ...] = ((1, 1), (16, 1), (16, 2))
    raw_streams: tuple[int, ...] = (1, 2)  # engine callers at once (batch 1, serve_seq_len)
    raw: bool = True  # the engine-only cells
    service: bool = True  # the service over HTTP and RPC
    naive: bool = True
    triton: bool = False  # the PyTriton baseline (needs x86-64; --setup-triton once)
    triton_max_batch_size: int = 16
    triton_queue_delay_us: int = 4000
    threads: int = 2
    instances: int = 1  # engine calls at once per model: the service's and Triton's instances
    batching_timeout_ms: int = 4
    batchings: tuple[str, ...] = ("adaptive",)  # ie.batching of the batch_size > 1 variants
    duration_s: float = 3.0
    max_requests: int = 3000
    raw_budget_s: float = 2.0
    warmup: int = 2
    profile: bool = False


MODES = ("raw", "service", "naive", "triton")  # what --only can pick
PROFILED_CONCURRENCIES = (1, 8, 32)  # --profile: py-spy the service at these


def engines(plan: Plan, kinds: tuple[str, ...]) -> list[str]:
    """The engine labels (``paddle``, ``onnx``, ``onnx-int8``) of ``kinds`` at ``plan.precisions``;
    Paddle serves FP32 only."""
    from pipeline.backends import engine_label

    return [
        engine_label(kind, precision)
        for kind in kinds
        for precision in plan.precisions
        if precision == "fp32" or kind == "onnx"
    ]


QUICK = Plan(
    sizes=("demo",),
    served_backends=("onnx",),
    batches=(1, 8),
    seq_lens=(128,),
    concurrencies=(1, 8),
    served_variants=((16, 1),),
    duration_s=1.0,
    max_requests=300,
    raw_budget_s=0.3,
    warmup=1,
)


def _row(model: str, size: str, backend: str, mode: str, **fields) -> dict:
    keys = ("concurrency", "batch", "seq_len", "auto_batching", "throughput_rps", "p50_ms", "p95_ms")
    row = {"model": model, "size": size, "backend": backend, "mode": mode}
    row.update({k: fields.get(k) for k in (*keys, "p99_ms")})
    row["errors"] = fields.get("errors", 0)
    row.update({k: v for k, v in fields.items() if k not in row})
    return row


def _log(row: dict) -> None:
    logger.info(
        "%s %s %s %s c%s b%s s%s ab=%s: %.1f/s p50 %.2f ms errors %s",
        *(row[k] for k in ("mode", "size", "backend", "model", "concurrency", "batch", "seq_len")),
        row["auto_batching"],
        row["throughput_rps"],
        row["p50_ms"],
        row["errors"],
    )


def run_raw(plan: Plan, size: str, root: Path) -> list[dict]:
    """Engine-only cells (and tokenize/decode per request) for every backend of ``plan``."""
    from client.bench.common import bench_settings, engine_of
    from client.bench.raw import RawCell, measure_host_steps, measure_raw
    from pipeline.backends import create_backend
    from pipeline.models import load_served_models

    cells = [(seq, b, 1) for seq in plan.seq_lens for b in plan.batches]
    cells += [(plan.serve_seq_len, b, n) for n in plan.raw_streams if n > 1 for b in plan.batches[:1]]
    rows = []
    for kind in engines(plan, plan.backends):
        settings = bench_settings(root, kind, plan.threads)
        models = load_served_models(settings)
        engine, precision = engine_of(kind)
        for name in plan.models:
            model = models[name]
            backend = create_backend(
                engine, model.dir, model.card, plan.threads, settings.use_onednn, precision
            )
            try:
                for seq, batch, streams in cells:
                    cell = RawCell(name, batch, seq, streams)
                    stats = measure_raw(backend, model, cell, plan.raw_budget_s)
                    common = dict(batch=batch, seq_len=seq, auto_batching=False)
                    rows.append(_row(name, size, kind, "raw", concurrency=streams, **common, **stats))
                    _log(rows[-1])
                steps = measure_host_steps(settings, backend, name, plan.serve_seq_len, plan.raw_budget_s)
                common = dict(concurrency=1, batch=1, seq_len=plan.serve_seq_len, auto_batching=False)
                rows += [_row(name, size, kind, mode, **common, **stats) for mode, stats in steps.items()]
            finally:
                backend.close()
    return rows


def loadgen(
    plan: Plan, kind: str, target: str, model: str, text: str, workdir: Path, profile_pid: int | None = None
) -> list[dict]:
    """One load-generator process per concurrency level; its summaries in order. With
    ``profile_pid``, the levels of :data:`PROFILED_CONCURRENCIES` get a second, unmeasured run
    under py-spy (the profiler takes a core of its own: measured rows never run beside it)."""
    from client.bench.common import UIE_SCHEMA

    out = []
    for conc in plan.concurrencies:
        cmd = [sys.executable, "-m", "client.bench.loadgen", "--kind", kind, "--target", target]
        cmd += ["--task", model, "--text", text, "--concurrency", str(conc)]
        cmd += ["--duration", str(plan.duration_s), "--max-requests", str(plan.max_requests)]
        cmd += ["--warmup", str(plan.warmup)]
        if model == "uie":
            cmd += ["--schema", UIE_SCHEMA]
        budget = 120 + conc * plan.warmup * 30 + plan.duration_s * 2
        result = _run_loadgen(cmd, workdir, budget)
        result["concurrency"] = conc
        out.append(result)
        if profile_pid is not None and conc in PROFILED_CONCURRENCIES:
            path = workdir / f"profile_{model}_{kind}_c{conc}.txt"
            spy = start_profiler(profile_pid, path, plan.duration_s)
            _run_loadgen(cmd, workdir, budget)
            spy.wait(timeout=plan.duration_s + 60)  # its window may outlast the load
    return out


def _run_loadgen(cmd: list[str], workdir: Path, budget: float) -> dict:
    """Run one load generator; its JSON summary."""
    proc = subprocess.run(
        cmd,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=budget,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def start_profiler(pid: int, path: Path, duration_s: float) -> subprocess.Popen:
    """py-spy record of ``pid`` (collapsed stacks, per thread): the load generator's start-up,
    warm-up and ``duration_s`` of measurement."""
    cmd = [str(PYLIB / "bin" / "py-spy"), "record", "--pid", str(pid), "--format", "raw", "--threads"]
    cmd += ["--duration", str(int(duration_s) + 4), "--rate", "200", "--nonblocking"]
    cmd += ["--output", str(path)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_served(plan: Plan, size: str, root: Path, work: Path) -> list[dict]:
    """The service over HTTP and RPC (each model-op variant of ``plan``), and the naive server."""
    from client.bench.common import bench_settings, request_text
    from client.bench.servers import run_naive, run_service, run_triton
    from pipeline.models import load_served_models

    rows = []
    for kind in engines(plan, plan.served_backends):
        settings = bench_settings(root, kind, plan.threads)
        models = load_served_models(settings)
        texts = {m: request_text(models[m].tokenizer, m, plan.serve_seq_len) for m in plan.models}
        cells = [
            (batch_size, op_concurrency, batching)
            for batch_size, op_concurrency in (plan.served_variants if plan.service else ())
            for batching in (plan.batchings if batch_size > 1 else ("none",))
        ]
        for batch_size, op_concurrency, batching in cells:
            cell_dir = work / f"{size}-{kind}-bs{batch_size}-mc{op_concurrency}-{batching}"
            op = dict(batch_size=batch_size, concurrency=op_concurrency, batching=batching)
            shutil.rmtree(cell_dir, ignore_errors=True)  # no profile or log of an earlier run
            with run_service(
                cell_dir, settings, plan.batching_timeout_ms, instances=plan.instances, **op
            ) as server:
                for mode, target in (("http", f"127.0.0.1:{server.http_port}"), ("rpc", server.rpc_endpoint)):
                    for m in plan.models:
                        profiled = plan.profile and mode == "rpc" and (batch_size, op_concurrency) == (16, 1)
                        pid = server.proc.pid if profiled else None
                        for res in loadgen(plan, mode, target, m, texts[m], cell_dir, pid):
                            common = dict(batch=1, seq_len=plan.serve_seq_len, auto_batching=batch_size > 1)
                            extra = dict(model_batch_size=batch_size, model_op_concurrency=op_concurrency)
                            extra["batching"] = batching
                            rows.append(_row(m, size, kind, mode, **common, **extra, **res))
                            _log(rows[-1])
        if plan.naive:
            cell_dir = work / f"{size}-{kind}-naive"
            with _baseline("naive", cell_dir), run_naive(cell_dir, root, kind, plan.threads, PYLIB) as port:
                for m in plan.models:
                    for res in loadgen(plan, "http", f"127.0.0.1:{port}", m, texts[m], cell_dir):
                        common = dict(batch=1, seq_len=plan.serve_seq_len, auto_batching=False)
                        rows.append(_row(m, size, kind, "naive", **common, **res))
                        _log(rows[-1])
        if plan.triton:
            cell_dir = work / f"{size}-{kind}-triton"
            tri = dict(max_batch_size=plan.triton_max_batch_size, queue_delay_us=plan.triton_queue_delay_us)
            with (
                _baseline("triton", cell_dir),
                run_triton(
                    cell_dir, root, kind, plan.threads, triton_python(), instances=plan.instances, **tri
                ) as port,
            ):
                for m in plan.models:
                    for res in loadgen(plan, "triton", f"127.0.0.1:{port}", m, texts[m], cell_dir):
                        common = dict(batch=1, seq_len=plan.serve_seq_len, auto_batching=True)
                        extra = {f"triton_{k}": v for k, v in tri.items()}
                        rows.append(_row(m, size, kind, "triton", **common, **extra, **res))
                        _log(rows[-1])
    return rows


@contextmanager
def _baseline(name: str, cell_dir: Path) -> Iterator[None]:
    """A baseline server that cannot start or dies is logged and skipped; the run goes on."""
    try:
        yield
    except (RuntimeError, TimeoutError, OSError) as e:
        logger.error(
            "%s baseline failed, its rows are missing (log in %s): %s", name, cell_dir, str(e)[-500:]
        )


def triton_python() -> Path:
    """The interpreter of the Triton baseline's venv (:func:`setup_triton` makes it)."""
    return TRITON_VENV / "bin" / "python"


def setup_triton(requirements: Path = ROOT / "requirements-triton.txt", venv: Path = TRITON_VENV) -> None:
    """A venv for the Triton baseline: PyTriton and its newer protobuf/grpcio/tritonclient in its
    own site-packages, then (through a .pth file) the project's .venv for numpy, the engines and
    tokenizers. The project's .venv is not changed. Skipped when already made from this file."""
    import sysconfig

    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    stamp = venv / ".requirements-triton.txt"
    pins = requirements.read_text(encoding="utf-8")
    if stamp.is_file() and stamp.read_text(encoding="utf-8") == pins:
        return
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site)]
    subprocess.run([*cmd, "-r", str(requirements)], check=True)
    (site / "ie_project_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    stamp.write_text(pins, encoding="utf-8")


def setup(requirements: Path = ROOT / "requirements-bench.txt", target: Path = PYLIB) -> None:
    """pip-install ``requirements`` (exact pins, no dependency resolution) into ``target``;
    skipped when ``target`` already holds this exact file's pins."""
    stamp = target / ".requirements-bench.txt"
    pins = requirements.read_text(encoding="utf-8")
    if stamp.is_file() and stamp.read_text(encoding="utf-8") == pins:
        return
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade"]
    cmd += ["--target", str(target), "-r", str(requirements)]
    subprocess.run(cmd, check=True)
    stamp.write_text(pins, encoding="utf-8")


def run(plan: Plan, out: Path) -> dict:
    """Measure every size of ``plan``; write and return the results document."""
    out.mkdir(parents=True, exist_ok=True)
    work = bench_models.BENCH_DIR / "runs"
    machine = machine_info(plan.threads)
    machine["plan"] = asdict(plan)
    machine["load_average_start"] = os.getloadavg()
    runs: list[dict] = []
    t0 = time.perf_counter()
    for size in plan.sizes:
        root = bench_models.build_size(size)
        if plan.raw:
            runs += run_raw(plan, size, root)
        runs += run_served(plan, size, root, work)
        if plan.profile:
            for path in sorted(work.glob(f"{size}-*/profile_*.txt")):
                target = out / f"{size}_{path.parent.name.split('-', 1)[1]}_{path.name}"
                target.write_bytes(path.read_bytes())
    machine["load_average_end"] = os.getloadavg()
    machine["wall_s"] = round(time.perf_counter() - t0, 1)
    doc = {"machine": machine, "runs": runs}
    write_outputs(doc, out)
    return doc


def configure_logging() -> None:
    """INFO from ``client.*`` to stderr. Importing Paddle Serving's pipeline (done here first)
    reconfigures logging to its files and disables the loggers that exist at that point."""
    import pipeline.paddle_serving.compat  # noqa: F401

    for name, existing in logging.root.manager.loggerDict.items():
        if name.startswith("client.") and isinstance(existing, logging.Logger):
            existing.disabled = False
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("client", __name__):  # __main__ under `python -m client.bench`
        own = logging.getLogger(name)
        own.disabled = False
        own.addHandler(handler)
        own.setLevel(logging.INFO)
        own.propagate = False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="demo size, few cells, < 1 minute")
    parser.add_argument("--setup", action="store_true", help="install requirements-bench.txt first")
    parser.add_argument("--sizes", help="comma list of demo,nano,base")
    parser.add_argument("--backends", help="comma list of paddle,onnx (raw and served)")
    parser.add_argument("--models", help="comma list of uie,spo")
    parser.add_argument("--precisions", help="comma list of fp32,int8 (int8: ONNX Runtime rows only)")
    parser.add_argument("--concurrency", help="comma list of load-generator concurrencies")
    parser.add_argument(
        "--variants", help="comma list of model-op BATCH_SIZExCONCURRENCY, e.g. 1x1,16x1,16x2"
    )
    parser.add_argument(
        "--batching", help="comma list of adaptive,timeout: ie.batching of the batch_size > 1 variants"
    )
    parser.add_argument("--no-naive", action="store_true", help="skip the naive server")
    parser.add_argument("--triton", action="store_true", help="also the PyTriton baseline (x86-64)")
    parser.add_argument("--setup-triton", action="store_true", help="(re)make its venv first")
    parser.add_argument("--triton-queue-delay-us", type=int, help="Triton max_queue_delay_microseconds")
    parser.add_argument("--duration", type=float, help="seconds per served cell")
    parser.add_argument("--threads", type=int, help="engine intra-op threads (default 2)")
    parser.add_argument(
        "--instances", type=int, help="engine instances per model, the service's and Triton's (default 1)"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the service at concurrency 1, 8, 32")
    parser.add_argument("--only", help=f"comma list of {','.join(MODES)}: measure only these")
    parser.add_argument(
        "--merge-into",
        type=Path,
        help="an earlier run's folder: its rows of the (size, backend, mode) measured now are replaced",
    )
    args = parser.parse_args(argv)
    configure_logging()
    if args.setup or not (PYLIB / "flask").is_dir():
        setup()  # Flask, matplotlib, py-spy: the naive server, the plots, --profile
    sys.path.append(str(PYLIB))
    plan = QUICK if args.quick else Plan()
    for flag, key in (("sizes", "sizes"), ("models", "models"), ("precisions", "precisions")):
        if getattr(args, flag):
            plan = replace(plan, **{key: tuple(getattr(args, flag).split(","))})
    if args.backends:
        kinds = tuple(args.backends.split(","))
        plan = replace(plan, backends=kinds, served_backends=kinds)
    if args.concurrency:
        plan = replace(plan, concurrencies=tuple(int(c) for c in args.concurrency.split(",")))
    if args.variants:
        variants = tuple(tuple(int(x) for x in v.split("x")) for v in args.variants.split(","))
        plan = replace(plan, served_variants=variants)
    if args.batching:
        batchings = tuple(args.batching.split(","))
        if set(batchings) - {"adaptive", "timeout"}:
            parser.error(f"--batching takes adaptive,timeout, got {args.batching}")
        plan = replace(plan, batchings=batchings)
    if args.no_naive:
        plan = replace(plan, naive=False)
    if args.only:
        only = set(args.only.split(","))
        if only - set(MODES):
            parser.error(f"--only takes {','.join(MODES)}, got {args.only}")
        plan = replace(plan, **{m: m in only for m in MODES})
    if args.triton or args.setup_triton or plan.triton:
        setup_triton()  # a no-op when its venv is already made from requirements-triton.txt
        plan = replace(plan, triton=True)
    if args.triton_queue_delay_us is not None:
        plan = replace(plan, triton_queue_delay_us=args.triton_queue_delay_us)
    if args.duration:
        plan = replace(plan, duration_s=args.duration)
    if args.threads:
        plan = replace(plan, threads=args.threads)
    if args.instances:
        plan = replace(plan, instances=args.instances)
    plan = replace(plan, profile=args.profile)
    doc = run(plan, args.out)
    if args.merge_into:
        old = json.loads((args.merge_into / "results.json").read_text(encoding="utf-8"))
        doc = merge_runs(old, doc)
        write_outputs(doc, args.merge_into)
        args.out = args.merge_into
    print(json.dumps(doc, indent=1, ensure_ascii=False))
    print((args.out / "results.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
