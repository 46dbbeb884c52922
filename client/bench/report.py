"""The benchmark's outputs: machine info, results.json, results.md (tables, targets) and PNG plots."""

from __future__ import annotations

import json
import logging
import math
import os
import platform
from collections import defaultdict
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RUN_KEYS = (
    "model",
    "size",
    "backend",
    "mode",
    "concurrency",
    "batch",
    "seq_len",
    "auto_batching",
    "throughput_rps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "errors",
)
SERVED = ("http", "rpc")
BASELINES = ("naive", "triton")  # servers this service is compared with
LIBRARIES = ("paddlepaddle", "onnxruntime", "numpy", "tokenizers", "grpcio", "paddle-serving-server", "flask")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(threads: int) -> dict[str, Any]:
    """CPU, cores, Python and library versions, and the engine thread setting."""
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "libraries": versions,
        "intra_op_threads": threads,
        "inter_op_threads": 1,
    }


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _best(rows: Iterable[dict], key: str = "throughput_rps") -> dict | None:
    rows = [r for r in rows if _finite(r.get(key))]
    return max(rows, key=lambda r: r[key]) if rows else None


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "missed")


def _target(
    target: str,
    key: tuple[str, str, str],
    value: float | None,
    bound: float,
    detail: str,
    ok: bool | None,
    ceiling: float | None = None,
) -> dict[str, Any]:
    """One row of the targets table; ``key`` is (model, size, backend). ``ceiling`` is the most
    the value could be on this engine (for ratios against another server), or None."""
    model, size, backend = key
    return {
        "target": target,
        "model": model,
        "size": size,
        "backend": backend,
        "value": value,
        "bound": bound,
        "ceiling": ceiling,
        "detail": detail,
        "status": _verdict(ok),
    }


def _ceiling(best_raw: dict | None, other: dict | None) -> float | None:
    """The engine's best rows/s over another server's throughput: a server calling this engine on
    these cores, one row per request, cannot beat the other by more (up to the raw cells' noise)."""
    if best_raw is None or other is None:
        return None
    return best_raw["throughput_rps"] / other["throughput_rps"]


def evaluate_targets(runs: list[dict], seq_len: int = 128) -> list[dict[str, Any]]:
    """The four targets per (model, size, backend), from the rows at ``seq_len``; each with
    its measured value, the bound and ``met`` / ``missed`` / ``n/a`` (a side not measured)."""
    rows = [r for r in runs if r["seq_len"] == seq_len]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["size"], r["backend"])].append(r)
    out = []
    for (model, size, backend), group in sorted(groups.items()):
        raw = [r for r in group if r["mode"] == "raw"]
        served = [r for r in group if r["mode"] in SERVED and not r["errors"]]
        best_raw, best_served = _best(raw), _best(served)
        ratio = None
        if best_raw and best_served:
            ratio = best_served["throughput_rps"] / best_raw["throughput_rps"]
        key = (model, size, backend)
        detail = _describe(best_served) + " vs raw " + _describe(best_raw)
        ok = None if ratio is None else ratio >= 0.9
        out.append(_target("served best throughput >= 0.9x raw best", key, ratio, 0.9, detail, ok))
        raw1 = next((r for r in raw if r["batch"] == 1 and r["concurrency"] == 1), None)
        for mode in SERVED:
            c1 = [r for r in served if r["mode"] == mode and r["concurrency"] == 1]
            if raw1 is None or not c1:
                continue
            best_c1 = min(c1, key=lambda r: r["p50_ms"])
            over = best_c1["p50_ms"] - raw1["p50_ms"]
            detail = (
                f"{best_c1['p50_ms']:.2f} ms (auto_batching={best_c1['auto_batching']}) "
                f"vs raw {raw1['p50_ms']:.2f} ms"
            )
            target = f"{mode} p50 at concurrency 1 <= raw batch-1 p50 + 1.5 ms"
            out.append(_target(target, key, over, 1.5, detail, over <= 1.5))
        naive8 = _best(r for r in group if r["mode"] == "naive" and r["concurrency"] == 8)
        served8 = _best(r for r in served if r["concurrency"] == 8)
        gain = served8["throughput_rps"] / naive8["throughput_rps"] if naive8 and served8 else None
        detail = _describe(served8) + " vs naive " + _describe(naive8)
        ok = None if gain is None else gain >= 1.5
        target = "served >= 1.5x naive throughput at concurrency 8"
        out.append(_target(target, key, gain, 1.5, detail, ok, _ceiling(best_raw, naive8)))
        out += _vs_triton(key, served, group, best_raw)
    out += _engine_ratios(rows, "onnx", "paddle", 0.9)
    out += _engine_ratios(rows, "onnx-int8", "onnx", 3.0)
    return out


def _vs_triton(
    key: tuple[str, str, str], served: list[dict], group: list[dict], best_raw: dict | None
) -> list[dict]:
    """The service's best throughput at c = 8 and 32 against Triton's, and its p99 there."""
    out = []
    for conc in (8, 32):
        triton = _best(
            r for r in group if r["mode"] == "triton" and r["concurrency"] == conc and not r["errors"]
        )
        ours = _best(r for r in served if r["concurrency"] == conc)
        if triton is None or ours is None:
            continue
        ratio = ours["throughput_rps"] / triton["throughput_rps"]
        p99 = ours["p99_ms"] / triton["p99_ms"]
        detail = f"{_describe(ours)} p99 {ours['p99_ms']:.1f} ms vs triton "
        detail += f"{_describe(triton)} p99 {triton['p99_ms']:.1f} ms"
        target = f"served >= 1.1x triton throughput at concurrency {conc}, p99 <= 1.2x"
        detail += f"; p99 ratio {p99:.2f}"
        ok = ratio >= 1.1 and p99 <= 1.2
        out.append(_target(target, key, ratio, 1.1, detail, ok, _ceiling(best_raw, triton)))
    return out


def _engine_ratios(rows: list[dict], fast: str, slow: str, bound: float) -> list[dict[str, Any]]:
    """Per (model, size), raw and served: ``fast``'s best throughput over ``slow``'s."""
    out = []
    for model, size in sorted({(r["model"], r["size"]) for r in rows}):
        for path, modes in (("raw", ("raw",)), ("served", SERVED)):
            best = {
                b: _best(
                    r
                    for r in rows
                    if (r["model"], r["size"], r["backend"]) == (model, size, b)
                    and r["mode"] in modes
                    and not r["errors"]
                )
                for b in (fast, slow)
            }
            if not best[fast] or not best[slow]:
                continue
            ratio = best[fast]["throughput_rps"] / best[slow]["throughput_rps"]
            detail = f"{fast} {_describe(best[fast])} vs {slow} {_describe(best[slow])}"
            target = f"{fast} {path} throughput >= {bound}x {slow}"
            out.append(_target(target, (model, size, f"{fast}/{slow}"), ratio, bound, detail, ratio >= bound))
    return out


def _describe(row: dict | None) -> str:
    if row is None:
        return "not measured"
    where = f"b{row['batch']}" if row["mode"] == "raw" else f"c{row['concurrency']}"
    if row["mode"] == "raw" and row["concurrency"] > 1:
        where += f" x{row['concurrency']} streams"
    op = f" {_op(row)}" if "model_batch_size" in row else ""
    return f"{row['throughput_rps']:.1f}/s ({row['mode']} {where}{op})"


def _fmt(x: Any, digits: int = 1) -> str:
    if isinstance(x, bool):
        return "on" if x else "off"
    if isinstance(x, float):
        return f"{x:.{digits}f}" if math.isfinite(x) else "-"
    return "-" if x is None else str(x)


def markdown(doc: dict) -> str:
    """results.md: machine, every run (one table), the targets."""
    m = doc["machine"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v)
    lines = [
        "# Benchmark results",
        "",
        f"CPU: {m['cpu']}, {m['cores']} cores; Python {m['python']}; {libs}; engine intra-op threads "
        f"{m['intra_op_threads']}, inter-op {m['inter_op_threads']}; load average at start "
        f"{_fmt_load(m.get('load_average_start'))}, at end {_fmt_load(m.get('load_average_end'))}.",
        "",
        "Throughput is texts per second (raw: rows per second of engine calls); latency per request "
        "(raw: per engine call).",
        "",
        "| model | size | backend | mode | conc | batch | seq | auto-batch | model op | rps | p50 ms "
        "| p95 ms | p99 ms | errors |",
        "|---|---|---|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in doc["runs"]:
        cells = [_fmt(r[k], 2 if k.endswith("_ms") else 1) for k in RUN_KEYS]
        cells.insert(8, _op(r))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Targets",
        "",
        "Engine ceiling, for targets against another server: the raw engine's best rows/s over "
        "that server's throughput, the most any server on this engine and these cores could reach "
        "with one row per request (the raw cells are as noisy as the others). Where it is under the "
        "bound, the bound cannot be met here.",
        "",
        "| target | model | size | backend | value | bound | engine ceiling | status | detail |",
        "|---|---|---|---|---:|---:|---:|---|---|",
    ]
    for t in evaluate_targets(doc["runs"]):
        lines.append(
            f"| {t['target']} | {t['model']} | {t['size']} | {t['backend']} | {_fmt(t['value'], 2)} "
            f"| {t['bound']} | {_fmt(t['ceiling'], 2)} | {t['status']} | {t['detail']} |"
        )
    return "\n".join(lines) + "\n"


def _op(row: dict) -> str:
    """The service's model op as batch_size x concurrency and its batching (``bs16 x1 adaptive``);
    '-' for other modes."""
    if "triton_max_batch_size" in row:
        return f"triton bs{row['triton_max_batch_size']} {row['triton_queue_delay_us']}us"
    if "model_batch_size" not in row:
        return "-"
    batching = row.get("batching")
    op = f"bs{row['model_batch_size']} x{row.get('model_op_concurrency', 1)}"
    return f"{op} {batching}" if batching and batching != "none" else op


def _fmt_load(load: Any) -> str:
    return "/".join(f"{x:.2f}" for x in load) if load else "-"


def _leaf_samples(collapsed: str) -> Iterator[tuple[str, int]]:
    """``(leaf frame, samples)`` of each stack line in py-spy's raw (collapsed) output."""
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";")[-1], int(count)


def top_frames(collapsed: str, n: int = 15) -> list[tuple[str, float]]:
    """The ``n`` functions with the most self samples in py-spy's raw (collapsed) output, as
    (frame, share of all samples)."""
    counts: dict[str, int] = defaultdict(int)
    total = 0
    for leaf, count in _leaf_samples(collapsed):
        total += count
        counts[leaf] += count
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
    return [(frame, c / total) for frame, c in ranked] if total else []


# Leaf frames where a thread blocks for its next piece of work (py-spy without ``--idle`` still
# samples a wait inside C code): a lane's queue, gRPC's completion queue, a pool's work queue,
# a condition (Paddle Serving's channels, a job's ``done`` event). Matched by function and file.
WAITS = (
    "_next_job (pipeline/lanes.py",
    "_serve (grpc/_server.py",
    "_worker (concurrent/futures/thread.py",
    "wait (threading.py",
)

# Where a sample's leaf frame is, by its file (first match wins) after :data:`WAITS`; see
# :func:`profile_shares`.
PROFILE_PARTS = (
    ("waiting", WAITS),
    ("engine", ("onnxruntime/", "paddle/base/", "paddle/inference", "paddle_backend.py", "onnx_backend.py")),
    ("grpc", ("grpc/",)),
    ("logging", ("logging/",)),
    ("tokenize", ("pipeline/tokenizer.py", "tokenizers/")),
    ("paddle serving", ("paddle_serving_server/", "paddle_serving_app/")),
    ("ours", ("pipeline/", "ops/", "web_service.py")),
    ("threads and queues", ("threading.py", "concurrent/futures/", "queue.py", "asyncio/")),
)


def profile_shares(collapsed: str) -> dict[str, float]:
    """Share of py-spy's samples per part of the server (:data:`PROFILE_PARTS`, by the file of each
    sample's leaf frame, blocking waits apart; ``other`` for the rest)."""
    counts: dict[str, int] = defaultdict(int)
    total = 0
    for leaf, count in _leaf_samples(collapsed):
        part = next((name for name, files in PROFILE_PARTS if any(f in leaf for f in files)), "other")
        counts[part] += count
        total += count
    return {part: counts[part] / total for part in [*(p for p, _ in PROFILE_PARTS), "other"]} if total else {}


def plots(doc: dict, out: Path) -> list[Path]:
    """Per size: throughput vs concurrency per path, and p50/p95/p99 latency per path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    runs = doc["runs"]
    for size in sorted({r["size"] for r in runs}):
        models = sorted({r["model"] for r in runs if r["size"] == size})
        for kind in ("throughput", "latency"):
            fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
            for ax, model in zip(axes[0], models, strict=True):
                _plot_model(ax, [r for r in runs if r["size"] == size and r["model"] == model], kind)
                ax.set_title(f"{model} ({size})")
            fig.tight_layout()
            path = out / f"{kind}_{size}.png"
            fig.savefig(path, dpi=90)
            plt.close(fig)
            written.append(path)
    return written


def _plot_model(ax, rows: list[dict], kind: str) -> None:
    paths: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["mode"] in (*SERVED, *BASELINES):
            label = f"{r['backend']} {r['mode']}" + ("" if r["mode"] in BASELINES else " " + _op(r))
            paths[label].append(r)
    for label, group in sorted(paths.items()):
        group.sort(key=lambda r: r["concurrency"])
        xs = [r["concurrency"] for r in group]
        if kind == "throughput":
            ax.plot(xs, [r["throughput_rps"] for r in group], marker="o", label=label)
        else:
            (line,) = ax.plot(xs, [r["p50_ms"] for r in group], marker="o", label=f"{label} p50")
            ax.plot(xs, [r["p99_ms"] for r in group], ls="--", color=line.get_color())
            ax.fill_between(
                xs,
                [r["p50_ms"] for r in group],
                [r["p95_ms"] for r in group],
                color=line.get_color(),
                alpha=0.15,
            )
    if kind == "throughput":
        for backend in sorted({r["backend"] for r in rows if r["mode"] == "raw"}):
            best = _best(
                r for r in rows if r["mode"] == "raw" and r["backend"] == backend and r["seq_len"] == 128
            )
            if best:
                ax.axhline(best["throughput_rps"], ls=":", color="gray")
                ax.annotate(f"raw {backend} best", (1, best["throughput_rps"]), fontsize=7)
        ax.set_ylabel("requests / s")
    else:
        ax.set_ylabel("latency ms (p50 solid, p95 band, p99 dashed)")
        ax.set_yscale("log")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrency")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def merge_runs(old: dict, new: dict) -> dict:
    """``old`` with its rows of every (size, backend, mode) that ``new`` measured replaced by ``new``'s.

    The merged document keeps ``old``'s machine info and lists each merge under ``machine["merged"]``
    (the new run's plan, load averages and wall time), so a re-measured mode is not mistaken for
    part of the first run.
    """
    replaced = {(r["size"], r["backend"], r["mode"]) for r in new["runs"]}
    kept = [r for r in old["runs"] if (r["size"], r["backend"], r["mode"]) not in replaced]
    machine = dict(old["machine"])
    note = {k: new["machine"].get(k) for k in ("plan", "load_average_start", "load_average_end", "wall_s")}
    note["replaced"] = sorted("/".join(key) for key in replaced)
    machine["merged"] = [*machine.get("merged", []), note]
    return {"machine": machine, "runs": kept + new["runs"]}


def write_outputs(doc: dict, out: Path) -> None:
    """results.json, results.md, the PNGs and (when profiles exist) profile summaries."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", "utf-8")
    text = markdown(doc)
    profiles = sorted(out.glob("*profile_*.txt"))
    if profiles:
        parts = [*(p for p, _ in PROFILE_PARTS), "other"]
        text += "\n## Where the service's time goes (py-spy samples by leaf frame)\n\n"
        text += "| profile | " + " | ".join(parts) + " |\n|---|" + "---:|" * len(parts) + "\n"
        for profile in profiles:
            shares = profile_shares(profile.read_text(encoding="utf-8", errors="replace"))
            text += f"| {profile.stem} | " + " | ".join(f"{shares.get(p, 0):.0%}" for p in parts) + " |\n"
    for profile in profiles:
        text += f"\n## Profile {profile.stem} (py-spy, self time)\n\n| frame | share |\n|---|---:|\n"
        for frame, share in top_frames(profile.read_text(encoding="utf-8", errors="replace")):
            text += f"| `{frame}` | {share:.1%} |\n"
    (out / "results.md").write_text(text, "utf-8")
    plots(doc, out)
