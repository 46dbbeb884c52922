"""Numeric and decoded parity between two engines of one model, with named errors.

An *engine* is a callable ``feeds -> outputs`` over logical names (int64 [B, L] inputs, float32
outputs). :func:`compare` runs two engines on the same feeds and reports the largest absolute
difference over every output position (padded ones included: the models mask them to fixed
values). Values at or below ``spec.masked_below`` are additive-mask fill (e.g. -1e4 logits): they
only have to be masked in both engines, since float32 cannot hold them to ``atol``. With a
``decode`` function the decoded results of the two engines must also be equal (floats within
``2 * atol``, everything else exactly). :func:`check` raises the named error of a failing hop.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from conversion.spec import ConversionSpec
from pipeline.tokenizer import Encoded, IETokenizer

logger = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]
Engine = Callable[[Feeds], dict[str, np.ndarray]]
Decoder = Callable[[Engine], Any]


@dataclass(frozen=True)
class HopResult:
    """One conversion hop's parity outcome (a row of ``parity.json``)."""

    model: str
    hop_from: str
    hop_to: str
    max_abs_diff: float
    atol: float
    cases: int
    decoded_equal: bool | None
    passed: bool
    worst: str = ""

    @property
    def hop(self) -> str:
        return f"{self.model} {self.hop_from}->{self.hop_to}"

    def as_row(self) -> dict[str, Any]:
        """The JSON row; a non-finite diff (NaN, structural mismatch) is written as null."""
        diff = self.max_abs_diff if math.isfinite(self.max_abs_diff) else None
        return {
            "model": self.model,
            "from": self.hop_from,
            "to": self.hop_to,
            "max_abs_diff": diff,
            "atol": self.atol,
            "cases": self.cases,
            "decoded_equal": self.decoded_equal,
            "passed": self.passed,
        }


class ParityCheckError(RuntimeError):
    """Base of the parity errors; ``result`` is the failing hop's row when one was computed."""

    result: HopResult | None = None


class ParityError(ParityCheckError):
    """A hop's outputs differ by more than its tolerance."""

    def __init__(self, hop: str, max_abs_diff: float, atol: float, result: HopResult | None = None):
        self.hop, self.max_abs_diff, self.atol, self.result = hop, max_abs_diff, atol, result
        worst = f" (worst: {result.worst})" if result and result.worst else ""
        super().__init__(f"{hop}: max abs diff {max_abs_diff:.3g} > atol {atol:g}{worst}")


class DecodedMismatchError(ParityCheckError):
    """A hop's outputs are within tolerance but decode to different results."""

    def __init__(self, hop: str, detail: str, result: HopResult | None = None):
        self.hop, self.detail, self.result = hop, detail, result
        super().__init__(f"{hop}: decoded results differ: {detail}")


class ShapeMismatchError(ParityCheckError):
    """The two engines return an output with different shapes (or a wrong dtype)."""

    def __init__(self, hop: str, output: str, shape_a: tuple, shape_b: tuple):
        self.hop, self.output = hop, output
        super().__init__(f"{hop}: output {output!r} has shape {shape_a} vs {shape_b}")


class MissingOutputError(ParityCheckError):
    """An engine does not return one of the spec's outputs."""

    def __init__(self, hop: str, output: str, engine: str, got: Sequence[str]):
        self.hop, self.output = hop, output
        super().__init__(f"{hop}: engine {engine!r} returned no {output!r} (got {sorted(got)})")


# -- parity feeds ------------------------------------------------------------------------------


def pad_rows(rows: Sequence[Encoded], inputs: Sequence[str]) -> Feeds:
    """Pad encoded rows to the longest into int64 [B, L] feeds named ``inputs``: the service's
    own feed builder (``pipeline.runner.build_feed``), so the checks feed what the service feeds."""
    from pipeline.runner import build_feed

    return build_feed(rows, inputs)


def _row_of_length(
    tokenizer: IETokenizer, texts: Sequence[str], prompt: str | None, target: int, rng: np.random.Generator
) -> Encoded:
    """A row of ``target`` tokens (more if the prompt alone is longer), text from ``texts``."""
    text = ""
    while True:
        text += texts[int(rng.integers(len(texts)))]
        row = tokenizer.encode(text, prompt, max_len=target)
        if len(row) >= target or len(text) > 4 * target + 64:
            return row


def make_cases(
    spec: ConversionSpec,
    tokenizer: IETokenizer,
    texts: Sequence[str],
    seed: int,
    prompts: Sequence[str] | None = None,
) -> list[Feeds]:
    """``spec.cases.n_cases`` padded feeds of mixed batch size and token length from real texts.

    Case 0 is a single shortest row, case 1 a full batch mixing a ``max_len`` row with short
    ones; after that batches alternate all-short, mixed and uniformly random lengths. Rows of
    a prompt model (``spec.uses_prompts``) pair a prompt from ``prompts`` with the text.
    """
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("make_cases needs at least one non-empty text")
    if spec.uses_prompts and not prompts:
        raise ValueError(f"{spec.name} rows need prompts")
    p = spec.cases
    rng = np.random.default_rng(seed)
    short_hi = min(p.max_len, max(p.min_len, 32))
    cases: list[Feeds] = []
    for i in range(p.n_cases):
        if i == 0:
            lengths = [p.min_len]
        elif i == 1:
            lengths = [p.max_len] + [p.min_len] * (p.max_batch - 2) + [short_hi][: p.max_batch - 1]
        else:
            batch = int(rng.integers(p.min_batch, p.max_batch + 1))
            kind = i % 3
            if kind == 0:
                lengths = rng.integers(p.min_len, short_hi + 1, batch).tolist()
            elif kind == 1:
                lengths = [int(rng.integers(short_hi, p.max_len + 1))]
                lengths += rng.integers(p.min_len, short_hi + 1, batch - 1).tolist()
            else:
                lengths = rng.integers(p.min_len, p.max_len + 1, batch).tolist()
        rows = []
        for target in lengths:
            prompt = str(prompts[int(rng.integers(len(prompts)))]) if spec.uses_prompts and prompts else None
            rows.append(_row_of_length(tokenizer, texts, prompt, int(target), rng))
        cases.append(pad_rows(rows, spec.inputs))
    return cases


# -- comparison --------------------------------------------------------------------------------


def max_abs_diff(a: np.ndarray, b: np.ndarray, masked_below: float | None = None) -> float:
    """Largest |a - b|; mask fill (<= ``masked_below``) must coincide and is not compared by value."""
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    if a.size == 0:
        return 0.0
    diff = np.abs(a - b)  # NaN in either input stays NaN here
    if masked_below is not None:
        masked = a <= masked_below
        if not np.array_equal(masked, b <= masked_below):
            return math.inf
        diff[masked] = 0.0
    if np.isnan(diff).any():
        return math.inf
    return float(diff.max())


def decoded_equal(a: Any, b: Any, float_tol: float) -> str:
    """Empty string when ``a`` equals ``b`` (floats within ``float_tol``), else where they differ."""

    def walk(x: Any, y: Any, path: str) -> str:
        if isinstance(x, float) or isinstance(y, float):
            ok = isinstance(x, (int, float)) and isinstance(y, (int, float)) and abs(x - y) <= float_tol
            return "" if ok else f"{path}: {x!r} != {y!r}"
        if isinstance(x, dict) and isinstance(y, dict):
            if x.keys() != y.keys():
                return f"{path}: keys {sorted(x)} != {sorted(y)}"
            for k in x:
                if msg := walk(x[k], y[k], f"{path}.{k}"):
                    return msg
            return ""
        if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
            if len(x) != len(y):
                return f"{path}: {len(x)} items != {len(y)} ({x!r} vs {y!r})"
            for i, (u, v) in enumerate(zip(x, y, strict=True)):
                if msg := walk(u, v, f"{path}[{i}]"):
                    return msg
            return ""
        return "" if x == y else f"{path}: {x!r} != {y!r}"

    return walk(a, b, "$")


def compare(
    spec: ConversionSpec,
    hop_from: str,
    hop_to: str,
    run_a: Engine,
    run_b: Engine,
    cases: Sequence[Feeds],
    decode: Decoder | None = None,
) -> HopResult:
    """Run both engines on ``cases`` (and ``decode`` with each); the hop's :class:`HopResult`.

    Structural problems (a missing output, different shapes) raise :class:`MissingOutputError`
    / :class:`ShapeMismatchError` with the failing row attached.
    """
    hop = f"{spec.name} {hop_from}->{hop_to}"
    t0 = time.perf_counter()
    worst_diff, worst = 0.0, ""

    def failed_row() -> HopResult:
        return HopResult(spec.name, hop_from, hop_to, math.inf, spec.atol, len(cases), None, False)

    for idx, feeds in enumerate(cases):
        outs = []
        for engine_name, engine in ((hop_from, run_a), (hop_to, run_b)):
            out = engine(dict(feeds))
            for name in spec.outputs:
                if name not in out:
                    err = MissingOutputError(hop, name, engine_name, list(out))
                    err.result = failed_row()
                    raise err
            outs.append(out)
        for name in spec.outputs:
            a, b = np.asarray(outs[0][name]), np.asarray(outs[1][name])
            if a.shape != b.shape or a.shape[:1] != feeds[spec.inputs[0]].shape[:1]:
                err = ShapeMismatchError(hop, name, a.shape, b.shape)
                err.result = failed_row()
                raise err
            d = max_abs_diff(a, b, spec.masked_below)
            if d > worst_diff or (math.isinf(d) and not worst):
                worst_diff, worst = d, f"{name} in case {idx} (shape {a.shape})"
    dec_equal: bool | None = None
    if decode is not None:
        msg = decoded_equal(decode(run_a), decode(run_b), 2 * spec.atol)
        dec_equal = not msg
        if msg:
            worst = f"{worst}; decoded: {msg}"
    passed = worst_diff <= spec.atol and dec_equal is not False
    result = HopResult(
        spec.name, hop_from, hop_to, worst_diff, spec.atol, len(cases), dec_equal, passed, worst
    )
    logger.info(
        "%-26s max_abs_diff=%.3g (atol %g) cases=%d decoded_equal=%s %s [%.1fs]",
        hop,
        worst_diff,
        spec.atol,
        len(cases),
        dec_equal,
        "PASS" if passed else "FAIL",
        time.perf_counter() - t0,
    )
    return result


def raise_if_failed(result: HopResult) -> HopResult:
    """Raise the named error of a failed hop; return the result otherwise."""
    if result.max_abs_diff > result.atol:
        raise ParityError(result.hop, result.max_abs_diff, result.atol, result)
    if result.decoded_equal is False:
        raise DecodedMismatchError(result.hop, result.worst, result)
    return result


def check(
    spec: ConversionSpec,
    hop_from: str,
    hop_to: str,
    run_a: Engine,
    run_b: Engine,
    cases: Sequence[Feeds],
    decode: Decoder | None = None,
) -> HopResult:
    """:func:`compare`, raising :class:`ParityError` / :class:`DecodedMismatchError` on failure."""
    return raise_if_failed(compare(spec, hop_from, hop_to, run_a, run_b, cases, decode))


# -- decoders ----------------------------------------------------------------------------------


def uie_decoder(
    texts: Sequence[str],
    schema: Any,
    tokenizer: IETokenizer,
    max_seq_len: int,
    batch_size: int = 8,
    **reading: Any,
) -> Decoder:
    """Decode by running the service's :class:`UIEJob` on ``texts`` + ``schema`` with an engine
    (``reading``: the job's reading settings, e.g. ``split_sentence``)."""
    from conversion.spec import UIE_SPEC
    from pipeline.uie.job import UIEJob
    from pipeline.uie.schema import parse_schema

    nodes = parse_schema(schema)

    def decode(engine: Engine) -> list[dict]:
        job = UIEJob(list(texts), nodes, tokenizer, max_seq_len=max_seq_len, **reading)
        while rows := job.next_rows():
            starts: list[np.ndarray] = []
            ends: list[np.ndarray] = []
            for i in range(0, len(rows), batch_size):
                chunk = rows[i : i + batch_size]
                out = engine(pad_rows(chunk, UIE_SPEC.inputs))
                starts += [out["start_prob"][j, : len(r)] for j, r in enumerate(chunk)]
                ends += [out["end_prob"][j, : len(r)] for j, r in enumerate(chunk)]
            job.consume(starts, ends)
        return job.result()

    return decode


def _unpad(row: np.ndarray, output: str, length: int) -> np.ndarray:
    """One SPO output row cut to the row's ``length`` tokens: [C, L, L] maps, or [L, H] states."""
    return row[:length] if output == "hidden" else row[:, :length, :length]


DENSE_OUTPUT_BUDGET = 512 * 2**20  # bytes of dense SPO outputs one decode call may hold


def spo_decoder(
    texts: Sequence[str],
    tokenizer: IETokenizer,
    predicates: Sequence[str],
    max_seq_len: int,
    relation_heads: Any = None,
    batch_size: int = 8,
) -> Decoder:
    """Decode by running the service's :class:`SPOJob` (GPLinker decoding) on ``texts``: a
    sparse model's engine with its ``relation_heads`` (``pipeline.spo_heads``), or a dense
    model's without (then in calls of at most :data:`DENSE_OUTPUT_BUDGET` bytes of outputs,
    each decoded before the next runs)."""
    from conversion.spec import SPO_DENSE_SPEC, SPO_SPEC
    from pipeline.spo_job import SPOJob

    outputs = SPO_SPEC.outputs if relation_heads is not None else SPO_DENSE_SPEC.outputs
    if relation_heads is None:
        row_bytes = (2 + 2 * len(predicates)) * max_seq_len * max_seq_len * 4
        batch_size = max(1, min(batch_size, DENSE_OUTPUT_BUDGET // row_bytes))

    def decode(engine: Engine) -> list[dict]:
        job = SPOJob(
            list(texts), tokenizer, list(predicates), max_seq_len=max_seq_len, relation_heads=relation_heads
        )
        rows = job.next_rows()
        for i in range(0, len(rows), batch_size):
            chunk = rows[i : i + batch_size]
            out = engine(pad_rows(chunk, SPO_SPEC.inputs))
            for j, r in enumerate(chunk):
                job.row_done(i + j, *(_unpad(out[n][j], n, len(r)) for n in outputs))
            del out
        job.stage_done()
        return job.result()

    return decode


# -- engines over converted files --------------------------------------------------------------


def onnx_engine(path: str | Path, threads: int = 2) -> Engine:
    """ONNX Runtime (CPU) over an ONNX file whose inputs/outputs carry the logical names."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    in_names = [i.name for i in sess.get_inputs()]
    out_names = [o.name for o in sess.get_outputs()]

    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        outs = sess.run(out_names, {n: feeds[n] for n in in_names})
        return dict(zip(out_names, outs, strict=True))

    return run


def paddle_engine(
    model_file: str | Path,
    params_file: str | Path,
    feed_names: dict[str, str],
    fetch_names: dict[str, str],
    threads: int = 2,
    use_onednn: bool = False,
) -> Engine:
    """Paddle Inference (CPU, IR optimizations on) over an inference model; ``feed_names`` /
    ``fetch_names`` map logical names to the variable names inside the model.

    oneDNN is off unless asked for: on Paddle 3.3.1 its kernels give wrong values for the
    X2Paddle SPO graph (RoPE sin/cos; max diff ~1.5), while the plain CPU kernels match.
    """
    from paddle import inference

    config = inference.Config(str(model_file), str(params_file))
    config.disable_gpu()
    config.switch_ir_optim(True)
    config.set_cpu_math_library_num_threads(threads)
    if use_onednn:
        config.enable_mkldnn()
    else:
        config.disable_mkldnn()
    config.disable_glog_info()
    predictor = inference.create_predictor(config)
    have_in, have_out = set(predictor.get_input_names()), set(predictor.get_output_names())
    missing = sorted(set(feed_names.values()) - have_in) + sorted(set(fetch_names.values()) - have_out)
    if missing:
        raise KeyError(
            f"{model_file} has no variables {missing} (inputs {sorted(have_in)}, outputs {sorted(have_out)})"
        )

    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        for logical, var in feed_names.items():
            handle = predictor.get_input_handle(var)
            arr = np.ascontiguousarray(feeds[logical])
            handle.reshape(list(arr.shape))
            handle.copy_from_cpu(arr)
        predictor.run()
        return {
            logical: predictor.get_output_handle(var).copy_to_cpu() for logical, var in fetch_names.items()
        }

    return run
