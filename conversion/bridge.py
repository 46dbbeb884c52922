"""``python -m conversion.bridge``: build ``serving_model/`` (UIE and SPO) with a parity check per hop.

``build`` writes the demo dataset, trains the tiny demo models when their checkpoints are
missing (or takes ``--uie-checkpoint`` / ``--spo-checkpoint``), converts them and checks every
hop (``--only uie|spo``: one model; the other's rows in parity.json are kept); ``check`` re-runs
the checks of an existing ``serving_model/`` against the checkpoints its model cards name.
``serving_model/parity.json`` gets one row per hop, in order, including a failing one, with the
hop's wall time and peak resident memory. The last hop of each model quantizes its ONNX file to
INT8 (``model.int8.onnx``) and judges it by decoded facts, not by max abs diff: F1 on the demo's
held-out split, or agreement with the FP32 model on generated texts for a user's checkpoint
(``--no-int8`` skips it). Exit code: 0 when every hop passed, 1 when a check or a conversion step
failed, 2 when a checkpoint cannot be converted as it is (the message names the file and the fix)
or the INT8 model lost more accuracy than its spec allows (the FP32 model is still written).

Idempotence: training is skipped when a checkpoint exists; a model's conversion is skipped
when its outputs are complete, made from the same checkpoint and newer than it (``--force``
converts anyway). The parity checks always run.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from conversion.accuracy import AccuracyLossError
from conversion.errors import CheckpointError, ConversionError
from conversion.int8_hop import INT8_ONNX, EvalSet, previous_int8, run_int8_hop
from conversion.parity import (
    Engine,
    Feeds,
    HopResult,
    ParityCheckError,
    compare,
    make_cases,
    raise_if_failed,
    spo_decoder,
    uie_decoder,
)
from conversion.spec import SPECS, SPO_SPEC, UIE_SPEC, ConversionSpec
from conversion.trained_length import served_length
from pipeline.model_card import TokenizerCard
from pipeline.tokenizer import IETokenizer, read_tokenizer_settings

logger = logging.getLogger("conversion.bridge")  # not __name__: "__main__" under python -m

CARD, PARITY, VOCAB = "model_card.json", "parity.json", "vocab.txt"
N_DECODE_TEXTS = 12
N_ONEDNN_CASES = 6
CARD_KEYS = ("name", "task", "max_seq_len", "vocab", "inputs", "outputs")


# -- parity bookkeeping ------------------------------------------------------------------------


def _reset_peak_rss() -> bool:
    """Start a new peak-RSS window for this process (Linux: /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _children_peak_rss_mib() -> float:
    """The peak resident memory of the largest child process waited for so far (X2Paddle)."""
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)


def _peak_rss_mib() -> float:
    """This process's peak resident memory since the last reset (VmHWM), else since it started."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@dataclass
class ParityLog:
    """Rows of ``parity.json``; each check is recorded before its error is raised, with the wall
    time and peak resident memory of its hop (since the previous row: the conversion and the
    check), and the largest child process's peak so far (X2Paddle converts in one)."""

    path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    _since: float = field(default_factory=time.perf_counter)

    @classmethod
    def keeping(cls, path: Path, models: set[str]) -> ParityLog:
        """A log of ``path`` that starts with its existing rows of ``models`` (other builds)."""
        rows = []
        if path.is_file():
            rows = [
                r for r in json.loads(path.read_text(encoding="utf-8"))["hops"] if r.get("model") in models
            ]
        return cls(path, rows)

    def start_hop(self) -> None:
        """The next row's time and memory count from now."""
        self._since = time.perf_counter()
        _reset_peak_rss()

    def record(self, result: HopResult) -> None:
        row = result.as_row()
        row["seconds"] = round(time.perf_counter() - self._since, 2)
        row["peak_rss_mib"] = _peak_rss_mib()
        row["children_peak_rss_mib"] = _children_peak_rss_mib()
        self.rows.append(row)
        self.start_hop()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"hops": self.rows}, indent=2, ensure_ascii=False) + "\n", "utf-8")


def make_checker(
    spec: ConversionSpec, cases: list[Feeds], decode: Callable[[Engine], Any] | None, log: ParityLog
) -> Callable[[str, str, Engine, Engine], HopResult]:
    """A checker for ``run_uie`` / ``run_spo``: compare, record the row, raise on failure.

    Decoded results are cached per engine, so an engine shared by two hops decodes once; the
    cache holds engines weakly, so each one (a loaded model) is freed after its last hop.
    """
    decoded: weakref.WeakKeyDictionary[Engine, Any] = weakref.WeakKeyDictionary()

    def cached_decode(engine: Engine) -> Any:
        if engine not in decoded:
            decoded[engine] = decode(engine) if decode else None
        return decoded[engine]

    def checker(hop_from: str, hop_to: str, run_a: Engine, run_b: Engine) -> HopResult:
        try:
            result = compare(spec, hop_from, hop_to, run_a, run_b, cases, cached_decode if decode else None)
        except ParityCheckError as e:
            if e.result is not None:
                log.record(e.result)
            raise
        log.record(result)
        return raise_if_failed(result)

    return checker


# -- inputs of the checks ----------------------------------------------------------------------


@dataclass(frozen=True)
class ParityInputs:
    """Texts for the parity feeds and decoding, plus UIE prompts and schema."""

    texts: list[str]
    decode_texts: list[str]
    prompts: list[str]
    uie_schema: Any
    held_out: list[dict]  # the demo dataset's test split (gold records)
    eval_records: list[dict] | None = None  # --eval-data: the user's gold records
    eval_name: str = ""

    def evaluation(self, demo: bool, gold_facts: Callable[[dict], set]) -> EvalSet:
        """What a lossy hop is judged on: ``--eval-data``'s gold records where given, else the
        demo models' held-out split; a user's model without either is judged on the generated
        texts against its FP32 model."""
        records = self.eval_records if self.eval_records is not None else (self.held_out if demo else None)
        if records is not None:
            name = self.eval_name if self.eval_records is not None else "demo test split"
            texts = [r["text"] for r in records]
            return EvalSet(f"{name} ({len(texts)} records)", texts, [gold_facts(r) for r in records])
        return EvalSet(f"generated texts ({len(self.texts)}, no gold)", list(self.texts))


def schema_of_records(records: list[dict]) -> list:
    """The UIE schema that asks for the facts of ``records``: their entity types, and each subject
    type with its predicates."""
    relations: dict[str, list[str]] = {}
    for record in records:
        for t in record.get("spo_list", []):
            preds = relations.setdefault(str(t.get("subject_type", "")), [])
            if t["predicate"] not in preds:
                preds.append(t["predicate"])
    types = dict.fromkeys(str(e["type"]) for r in records for e in r.get("entities", []))
    return [t for t in types if t not in relations] + [{s: p} for s, p in relations.items() if s]


def read_eval_records(path: Path) -> list[dict]:
    """Gold records for the INT8 hop: JSON lines with ``text`` and ``spo_list`` (DuIE: subject,
    subject_start, predicate, object, object_start) and, for UIE, ``entities`` (type, start, end)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise CheckpointError(f"cannot read --eval-data {path}: {e.strerror}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path} line {number} is not JSON ({e.msg})") from None
        if not (isinstance(record, dict) and isinstance(record.get("text"), str)):
            raise CheckpointError(
                f"{path} line {number} has no text", 'each line: {"text": ..., "spo_list": [...]}'
            )
        records.append(record)
    if not records:
        raise CheckpointError(f"{path} holds no records")
    return records


def parity_inputs(seed: int) -> ParityInputs:
    """Demo texts (fresh test-pool records) covering short, long and multi-triple sentences."""
    from conversion import demo_data

    _, held_out = demo_data.generate(seed)
    _, records = demo_data.generate(seed + 1, n_train=0, n_test=80)
    texts = [r["text"] for r in records]
    by_len = sorted(texts, key=len)
    decode_texts = list(dict.fromkeys(by_len[-3:] + texts[: N_DECODE_TEXTS - 3]))
    prompts = list(demo_data.ENTITY_TYPES)
    for rec in records:
        prompts += [f"{s['subject']}的{s['predicate']}" for s in rec["spo_list"]]
    return ParityInputs(texts, decode_texts, list(dict.fromkeys(prompts)), demo_data.uie_schema(), held_out)


# -- model cards -------------------------------------------------------------------------------


def _metrics(ckpt: Path) -> dict | None:
    path = ckpt / "metrics.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _spo_predicates(ckpt: Path) -> list[dict[str, Any]]:
    from conversion.models.spo_checkpoint import read_predicates

    raw = read_predicates(ckpt)
    return [p if isinstance(p, dict) else {"name": str(p)} for p in raw]


def _demo_schema() -> dict[str, Any]:
    from conversion import demo_data

    return demo_data.schema_dict()


def model_card(
    spec: ConversionSpec,
    ckpt: Path,
    demo: bool,
    paddle_files: tuple[str, str],
    architecture: dict[str, Any],
    max_seq_len: int,
    onednn: HopResult | None,
    tokenizer: IETokenizer,
) -> dict[str, Any]:
    """The ``model_card.json`` content (ARCHITECTURE.md) for one converted model."""
    demo_schema = _demo_schema()
    card: dict[str, Any] = {
        "name": spec.name,
        "task": spec.task,
        "max_seq_len": max_seq_len,
        "vocab": VOCAB,
        "inputs": list(spec.inputs),
        "outputs": list(spec.outputs),
        "output_axes": {name: dict(axes) for name, axes in spec.output_axes},
        "paddle_files": {
            "model": f"serving_server/{paddle_files[0]}",
            "params": f"serving_server/{paddle_files[1]}",
        },
        "serving_server": "serving_server",
        "onnx_file": "model.onnx",
    }
    if spec.task == "uie":
        from conversion import demo_data

        card["schema_example"] = demo_data.uie_schema() if demo else {"人物": ["出生地"]}
        card["entity_types"] = demo_schema["entity_types"] if demo else []
    else:
        card["predicates"] = _spo_predicates(ckpt)
        types = [t for p in card["predicates"] for t in (p.get("subject_type"), p.get("object_type")) if t]
        card["entity_types"] = demo_schema["entity_types"] if demo else list(dict.fromkeys(types))
    card["architecture"] = architecture
    card["source"] = "demo" if demo else str(ckpt)
    card["checkpoint"] = str(ckpt.resolve())
    if onednn is not None:
        card["paddle_onednn"] = {"ok": onednn.passed, "max_abs_diff": onednn.as_row()["max_abs_diff"]}
    metrics = _metrics(ckpt)
    if metrics is not None:
        card["training_metrics"] = metrics
    trained = (metrics or {}).get("settings", {})
    card["reading"] = {
        "split_sentence": bool(trained.get("split_sentence", False)) if spec.task == "uie" else False,
        "anchor_children": True,
        "window_overlap": None,
    }
    card["tokenizer"] = TokenizerCard.from_settings(tokenizer.settings).model_dump()
    card["verified_max_batch"] = spec.cases.max_batch  # the parity cases' largest batch
    return card


def is_fresh(out_dir: Path, ckpt: Path) -> bool:
    """True when ``out_dir`` holds a complete conversion of ``ckpt`` newer than the checkpoint."""
    card_path = out_dir / CARD
    needed = [card_path, out_dir / "model.onnx", out_dir / VOCAB, out_dir / "serving_server"]
    if not all(p.exists() for p in needed):
        return False
    card = json.loads(card_path.read_text(encoding="utf-8"))
    if card.get("checkpoint") != str(ckpt.resolve()):
        return False
    spec = SPECS.get(card.get("task"))
    if spec is None or card.get("outputs") != list(spec.outputs):  # e.g. a dense SPO conversion
        return False
    heads = card.get("relation_heads")
    if heads is not None and not (out_dir / heads["file"]).is_file():
        return False
    newest = max(p.stat().st_mtime for p in ckpt.iterdir() if p.is_file())
    return card_path.stat().st_mtime > newest


def onednn_probe(
    spec: ConversionSpec, serving_server: Path, files: tuple[str, str], cases: list[Feeds]
) -> HopResult:
    """Compare the serving model with oneDNN off (checked) and on: recorded in the model card."""
    from conversion.serving_export import serving_dir_engine

    plain = serving_dir_engine(serving_server, *files)
    onednn = serving_dir_engine(serving_server, *files, use_onednn=True)
    return compare(spec, "serving", "serving+onednn", plain, onednn, cases[:N_ONEDNN_CASES])


def check_served(out_dir: Path, checker: Callable[[str, str, Engine, Engine], HopResult]) -> None:
    """The last hop: the backends the service serves with (``pipeline.backends``, loaded from the
    model card as the service loads them, feeds built by its one feed builder) against each other:
    Paddle Inference on the serving model's files, ONNX Runtime on ``model.onnx``."""
    from pipeline.backends import create_backend
    from pipeline.model_card import load_model_card

    card = load_model_card(out_dir)
    paddle = create_backend("paddle", out_dir, card, threads=2)
    onnx = create_backend("onnx", out_dir, card, threads=2)
    try:
        checker("served paddle", "served onnx", paddle.infer, onnx.infer)
    finally:
        paddle.close()
        onnx.close()


def int8_hop(
    spec: ConversionSpec,
    out_dir: Path,
    work_dir: Path | None,
    arch: dict[str, Any],
    cases: list[Feeds],
    decode: Callable[[Engine], Any],
    facts: Callable[[dict], set],
    evaluation: EvalSet,
    log: ParityLog,
    convert: bool,
    previous: dict[str, Any] | None,
    enabled: bool = True,
) -> None:
    """The INT8 hop (``spec.int8``), its accuracy row recorded before a failure is raised; when
    not ``enabled``, a stale INT8 file is removed (the card written before names none)."""
    if not (enabled and spec.int8.enabled):
        (out_dir / INT8_ONNX).unlink(missing_ok=True)
        return
    try:
        result = run_int8_hop(
            spec, out_dir, work_dir, arch, cases, decode, facts, evaluation, convert, previous
        )
    except AccuracyLossError as e:
        log.record(e.result)
        raise
    log.record(result)


def exported_static_dir(ckpt: Path) -> Path:
    """Where a UIE checkpoint without dygraph weights keeps its exported static model: ``ckpt``
    itself (``export_model.py`` output) or ``ckpt/static`` (Taskflow's layout)."""
    from conversion.serving_export import ServingExportError, find_model_files

    for candidate in (ckpt, ckpt / "static"):
        if candidate.is_dir():
            try:
                find_model_files(candidate)
                return candidate
            except ServingExportError:
                continue
    raise CheckpointError(
        f"{ckpt} has no UIE weights (model_state.pdparams, model.safetensors) and no exported static model",
        "point --uie-checkpoint at a PaddleNLP save_pretrained dir or an export_model.py output dir "
        "(inference.json or .pdmodel, inference.pdiparams, vocab.txt, config.json)",
    )


def checkpoint_tokenizer(ckpt: Path) -> IETokenizer:
    """The tokenizer the checkpoint was trained with: its vocab.txt, read as its
    tokenizer_config.json says (lowercasing, accent stripping)."""
    try:
        settings = read_tokenizer_settings(ckpt)
    except ValueError as e:  # names tokenizer_config.json and what is wrong in it
        raise CheckpointError(str(e)) from None
    try:
        return IETokenizer.from_file(ckpt / VOCAB, settings)
    except FileNotFoundError:
        raise CheckpointError(
            f"{ckpt} has no {VOCAB}", "copy the vocab the model was trained with there"
        ) from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{ckpt / VOCAB} cannot be used: {e}") from None


# -- the two models ----------------------------------------------------------------------------


def _write_card(out_dir: Path, card: dict[str, Any]) -> None:
    (out_dir / CARD).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def process_uie(
    ckpt: Path, out_dir: Path, work_dir: Path | None, inputs: ParityInputs, log: ParityLog, seed: int,
    convert: bool, demo: bool, int8: bool = True, max_seq_len: int | None = None,
) -> None:  # fmt: skip
    """Load, convert (if ``convert``) and check the UIE model (and its INT8 file if ``int8``);
    write its card."""
    import shutil

    from conversion.export_uie import run_uie, run_uie_static
    from conversion.metrics import uie_gold_facts, uie_predicted_facts
    from conversion.models.uie_paddle import WEIGHT_FILES, UIEConfig, load_uie_checkpoint

    previous = previous_int8(out_dir)
    static_dir = None if any((ckpt / n).is_file() for n in WEIGHT_FILES) else exported_static_dir(ckpt)
    if static_dir is None:
        model, config = load_uie_checkpoint(ckpt)
    else:
        config = UIEConfig.from_checkpoint_dir(ckpt)
        logger.info("uie: %s holds an exported static model (%s); converting it", ckpt, static_dir)
    tokenizer = checkpoint_tokenizer(ckpt)
    length = served_length(ckpt, config.max_position_embeddings, max_seq_len)
    max_seq_len = length.max_seq_len
    cases = make_cases(UIE_SPEC, tokenizer, inputs.texts, seed, prompts=inputs.prompts)
    decode = uie_decoder(inputs.decode_texts, inputs.uie_schema, tokenizer, max_seq_len)
    checker = make_checker(UIE_SPEC, cases, decode, log)
    if static_dir is None:
        art = run_uie(model, out_dir, work_dir, checker, convert=convert)
        del model  # free the dygraph model before the oneDNN probe and the served check load theirs
    else:
        art = run_uie_static(static_dir, out_dir, checker, convert=convert)
    files = (art.model_file, art.params_file)
    if convert:
        shutil.copyfile(ckpt / VOCAB, out_dir / VOCAB)
    probe = onednn_probe(UIE_SPEC, art.serving_server, files, cases)
    source_format = "dygraph" if static_dir is None else "static"
    arch = {"type": "ernie-uie", "source_format": source_format, **config.to_dict()}
    card = model_card(UIE_SPEC, ckpt, demo, files, arch, max_seq_len, probe, tokenizer)
    card["max_seq_len_source"] = length.source
    _write_card(out_dir, card)
    check_served(out_dir, checker)
    evaluation = inputs.evaluation(demo, uie_gold_facts)
    reading = {"split_sentence": card["reading"]["split_sentence"]}
    schema = inputs.uie_schema if inputs.eval_records is None else schema_of_records(inputs.eval_records)
    eval_decode = uie_decoder(evaluation.texts, schema, tokenizer, max_seq_len, **reading)
    int8_hop(
        UIE_SPEC, out_dir, work_dir, arch, cases, eval_decode, uie_predicted_facts, evaluation, log,
        convert, previous, int8,
    )  # fmt: skip


def process_spo(
    ckpt: Path, out_dir: Path, work_dir: Path | None, inputs: ParityInputs, log: ParityLog, seed: int,
    convert: bool, demo: bool, int8: bool = True, max_seq_len: int | None = None,
) -> None:  # fmt: skip
    """Load, convert (if ``convert``) and check the SPO model (and its INT8 file if ``int8``);
    write its card."""
    import shutil
    from dataclasses import asdict

    import torch

    from conversion.export_spo import run_spo
    from conversion.metrics import spo_gold_facts, spo_predicted_facts
    from conversion.models.spo_checkpoint import load_spo_checkpoint
    from conversion.models.spo_torch import relation_head_arrays, relation_heads_card
    from conversion.serving_export import find_model_files
    from conversion.sparse_hop import check_sparse_hop
    from pipeline.spo_heads import load_relation_heads, save_relation_heads

    previous = previous_int8(out_dir)
    torch.set_num_threads(2)
    model = load_spo_checkpoint(ckpt)
    tokenizer = checkpoint_tokenizer(ckpt)
    predicates = [p["name"] for p in _spo_predicates(ckpt)]
    length = served_length(ckpt, model.config.max_position_embeddings, max_seq_len)
    max_seq_len = length.max_seq_len
    heads_card = relation_heads_card(model)
    heads_file = out_dir / heads_card["file"]
    if convert:
        save_relation_heads(heads_file, relation_head_arrays(model))
    shape = {k: v for k, v in heads_card.items() if k != "file"}
    heads = load_relation_heads(heads_file, len(predicates), **shape)
    cases = make_cases(SPO_SPEC, tokenizer, inputs.texts, seed)
    decode = spo_decoder(inputs.decode_texts, tokenizer, predicates, max_seq_len, heads)
    checker = make_checker(SPO_SPEC, cases, decode, log)
    art = run_spo(model, out_dir, work_dir, checker, convert=convert)
    if convert:
        shutil.copyfile(ckpt / VOCAB, out_dir / VOCAB)
    files = find_model_files(art.serving_server)
    probe = onednn_probe(SPO_SPEC, art.serving_server, files, cases)
    arch = {"type": "bert-gplinker", **asdict(model.config)}
    card = model_card(SPO_SPEC, ckpt, demo, files, arch, max_seq_len, probe, tokenizer)
    card["max_seq_len_source"] = length.source
    _write_card(out_dir, {**card, "relation_heads": heads_card})
    sparse = check_sparse_hop(model, out_dir, cases, inputs.decode_texts, tokenizer, predicates, max_seq_len)
    log.record(sparse)
    raise_if_failed(sparse)
    del model  # the PyTorch model's last hop: free it before more engines load
    check_served(out_dir, checker)
    evaluation = inputs.evaluation(demo, spo_gold_facts)
    eval_decode = spo_decoder(evaluation.texts, tokenizer, predicates, max_seq_len, heads)
    int8_hop(
        SPO_SPEC, out_dir, work_dir, arch, cases, eval_decode, spo_predicted_facts, evaluation, log,
        convert, previous, int8,
    )  # fmt: skip


# -- commands ----------------------------------------------------------------------------------


def _ensure_demo(
    work: Path,
    seed: int,
    uie_ckpt: Path | None,
    spo_ckpt: Path | None,
    train_uie: bool = True,
    train_spo: bool = True,
) -> tuple[Path, Path]:
    """Write the demo data and train the missing demo checkpoints that are needed (the demo UIE
    starts from the demo SPO encoder); the two checkpoint dirs."""
    from conversion import demo_data

    train_spo = train_spo or (train_uie and uie_ckpt is None)
    data = work / "data"
    needs_data = (train_uie and uie_ckpt is None) or (train_spo and spo_ckpt is None)
    files = ("train.jsonl", "dev.jsonl", "test.jsonl", VOCAB)
    if needs_data and not all((data / name).is_file() for name in files):
        demo_data.write_dataset(data, seed=seed)
    demo_spo = None
    if spo_ckpt is None:
        spo_ckpt = demo_spo = work / "spo_ckpt"
        if train_spo and not (spo_ckpt / "model.pt").is_file():
            from conversion.train_spo import train_spo

            logger.info("training the demo SPO model into %s", spo_ckpt)
            train_spo(data, spo_ckpt, seed=seed)
    if uie_ckpt is None:
        uie_ckpt = work / "uie_ckpt"
        if train_uie and not (uie_ckpt / "model_state.pdparams").is_file():
            from conversion.train_uie import train_uie

            # the demo SPO encoder (same data, same vocab) is the demo UIE's starting point; both
            # train a fixed number of steps, so the demo models are the same on any machine
            logger.info("training the demo UIE model into %s", uie_ckpt)
            train_uie(data, uie_ckpt, seed=seed, init_encoder=demo_spo, threads=2)
    return uie_ckpt, spo_ckpt


MODELS = ("uie", "spo")


def build(
    out: Path,
    work: Path,
    seed: int = 0,
    uie_checkpoint: Path | None = None,
    spo_checkpoint: Path | None = None,
    force: bool = False,
    only: str | None = None,
    int8: bool = True,
    eval_data: Path | None = None,
    max_seq_len: int | None = None,
) -> int:
    """Build ``out`` (see the module docstring); the exit code. ``int8=False`` skips the INT8 hop;
    ``eval_data``: gold records (:func:`read_eval_records`) the INT8 hop is judged on;
    ``max_seq_len``: the row length to serve at (default: :mod:`conversion.trained_length`)."""
    t0 = time.perf_counter()
    names = [only] if only else list(MODELS)
    log = ParityLog.keeping(out / PARITY, set(MODELS) - set(names))
    kept = len(log.rows)

    def run() -> None:
        uie_ckpt, spo_ckpt = _ensure_demo(
            work, seed, uie_checkpoint, spo_checkpoint, train_uie="uie" in names, train_spo="spo" in names
        )
        inputs = parity_inputs(seed)
        if eval_data is not None:
            inputs = replace(inputs, eval_records=read_eval_records(eval_data), eval_name=eval_data.name)
        steps = {
            "uie": (process_uie, uie_ckpt, uie_checkpoint is None),
            "spo": (process_spo, spo_ckpt, spo_checkpoint is None),
        }
        for name in names:
            process, ckpt, demo = steps[name]
            convert = force or not is_fresh(out / name, ckpt)
            if not convert:
                logger.info("%s: outputs are up to date with %s; checking only", name, ckpt)
            (out / name).mkdir(parents=True, exist_ok=True)
            log.start_hop()
            process(
                ckpt, out / name, work / "export" / name, inputs, log, seed, convert, demo, int8, max_seq_len
            )

    code = _run_logged(run, log)
    if code == 0:
        logger.info(
            "serving model written to %s: %d hops passed in %.0fs",
            out,
            len(log.rows) - kept,
            time.perf_counter() - t0,
        )
    return code


def check(out: Path, seed: int = 0) -> int:
    """Re-run every hop's check on an existing ``out``; the exit code."""
    log = ParityLog(out / PARITY)

    def run() -> None:
        inputs = parity_inputs(seed)
        for name, process in (("uie", process_uie), ("spo", process_spo)):
            card_path = out / name / CARD
            if not card_path.is_file():
                raise CheckpointError(
                    f"{card_path} does not exist", "build it with `python -m conversion.bridge build`"
                )
            card = json.loads(card_path.read_text(encoding="utf-8"))
            log.start_hop()
            process(
                Path(card["checkpoint"]),
                out / name,
                None,
                inputs,
                log,
                seed,
                False,
                card.get("source") == "demo",
                card.get("int8") is not None,
                card["max_seq_len"],
            )

    code = _run_logged(run, log)
    if code == 0:
        logger.info("%d hops passed", len(log.rows))
    return code


def _run_logged(run: Callable[[], None], log: ParityLog) -> int:
    """Run ``run``; write parity.json whatever happens; a named error is one log line and a code."""
    try:
        run()
    except ParityCheckError as e:
        logger.error("parity check failed: %s", e)
        return 1
    except AccuracyLossError as e:
        logger.error(
            "INT8 model refused: %s; the FP32 model is written and served (--no-int8 skips the hop)", e
        )
        return 2
    except ConversionError as e:
        logger.error("conversion failed: %s", e)
        return 1
    except CheckpointError as e:
        logger.error("cannot convert: %s", e)
        return 2
    finally:
        log.write()
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="python -m conversion.bridge", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="convert (training the demo models if needed) and check every hop")
    b.add_argument("--out", type=Path, default=Path("serving_model"))
    b.add_argument("--work", type=Path, default=Path("build/demo"))
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--uie-checkpoint", type=Path, default=None)
    b.add_argument("--spo-checkpoint", type=Path, default=None)
    b.add_argument("--force", action="store_true", help="convert even when the outputs are up to date")
    b.add_argument("--only", choices=MODELS, help="build one model (the other's parity rows are kept)")
    b.add_argument("--no-int8", action="store_true", help="skip the INT8 hop (quantization + accuracy)")
    b.add_argument(
        "--eval-data", type=Path, help="JSON lines with gold facts: the INT8 hop is judged by F1 on them"
    )
    b.add_argument(
        "--max-seq-len",
        type=int,
        help="tokens per row the model was trained at (default: what the checkpoint says, else 512)",
    )
    c = sub.add_parser("check", help="re-run the parity checks of an existing serving_model")
    c.add_argument("--out", type=Path, default=Path("serving_model"))
    c.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    # Paddle Serving (imported by the served check) disables the loggers that exist when it is
    # imported: import it first, then set ours up.
    import pipeline.paddle_serving.compat  # noqa: F401
    from pipeline.log_setup import configure_logging

    configure_logging()
    for noisy in ("x2paddle", "x2paddle.convert", "paddle2onnx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command == "build":
        return build(
            args.out,
            args.work,
            args.seed,
            args.uie_checkpoint,
            args.spo_checkpoint,
            args.force,
            args.only,
            not args.no_int8,
            args.eval_data,
            args.max_seq_len,
        )
    return check(args.out, args.seed)


if __name__ == "__main__":
    sys.exit(main())
