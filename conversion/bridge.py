"""``python -m conversion.bridge``: build ``serving_model/`` (UIE and SPO) with a parity check per hop.

``build`` writes the demo dataset, trains the tiny demo models when their checkpoints are
missing (or takes ``--uie-checkpoint`` / ``--spo-checkpoint``), converts them and checks every
hop; ``check`` re-runs the checks of an existing ``serving_model/`` against the checkpoints its
model cards name. ``serving_model/parity.json`` gets one row per hop, in order, including a
failing one; the exit code is 0 only when every hop passed.

Idempotence: training is skipped when a checkpoint exists; a model's conversion is skipped
when its outputs are complete, made from the same checkpoint and newer than it (``--force``
converts anyway). The parity checks always run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from conversion.spec import SPO_SPEC, UIE_SPEC, ConversionSpec
from pipeline.tokenizer import IETokenizer

logger = logging.getLogger(__name__)

CARD, PARITY, VOCAB = "model_card.json", "parity.json", "vocab.txt"
N_DECODE_TEXTS = 12
N_ONEDNN_CASES = 6
CARD_KEYS = ("name", "task", "max_seq_len", "vocab", "inputs", "outputs")


# -- parity bookkeeping ------------------------------------------------------------------------


@dataclass
class ParityLog:
    """Rows of ``parity.json``; each check is recorded before its error is raised."""

    path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)

    def record(self, result: HopResult) -> None:
        self.rows.append(result.as_row())

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"hops": self.rows}, indent=2, ensure_ascii=False) + "\n", "utf-8")


def make_checker(
    spec: ConversionSpec, cases: list[Feeds], decode: Callable[[Engine], Any] | None, log: ParityLog
) -> Callable[[str, str, Engine, Engine], HopResult]:
    """A checker for ``run_uie`` / ``run_spo``: compare, record the row, raise on failure.

    Decoded results are cached per engine, so an engine shared by two hops decodes once.
    """
    decoded: dict[Engine, Any] = {}

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


def parity_inputs(seed: int) -> ParityInputs:
    """Demo texts (fresh test-pool records) covering short, long and multi-triple sentences."""
    from conversion import demo_data

    _, records = demo_data.generate(seed + 1, n_train=0, n_test=80)
    texts = [r["text"] for r in records]
    by_len = sorted(texts, key=len)
    decode_texts = list(dict.fromkeys(by_len[-3:] + texts[: N_DECODE_TEXTS - 3]))
    prompts = list(demo_data.ENTITY_TYPES)
    for rec in records:
        prompts += [f"{s['subject']}的{s['predicate']}" for s in rec["spo_list"]]
    return ParityInputs(texts, decode_texts, list(dict.fromkeys(prompts)), demo_data.uie_schema())


# -- model cards -------------------------------------------------------------------------------


def _metrics(ckpt: Path) -> dict | None:
    path = ckpt / "metrics.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _spo_predicates(ckpt: Path) -> list[dict[str, Any]]:
    raw = json.loads((ckpt / "predicates.json").read_text(encoding="utf-8"))
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
    card["verified_max_batch"] = spec.cases.max_batch  # the parity cases' largest batch
    return card


def served_max_seq_len(ckpt: Path, default: int) -> int:
    """The row length to serve with: what the model was trained at when its metrics.json says
    (positions beyond it are untrained; longer texts go through overlapping windows)."""
    metrics = _metrics(ckpt) or {}
    trained = metrics.get("max_seq_len")
    return min(default, int(trained)) if trained else default


def is_fresh(out_dir: Path, ckpt: Path) -> bool:
    """True when ``out_dir`` holds a complete conversion of ``ckpt`` newer than the checkpoint."""
    card_path = out_dir / CARD
    needed = [card_path, out_dir / "model.onnx", out_dir / VOCAB, out_dir / "serving_server"]
    if not all(p.exists() for p in needed):
        return False
    card = json.loads(card_path.read_text(encoding="utf-8"))
    if card.get("checkpoint") != str(ckpt.resolve()):
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


# -- the two models ----------------------------------------------------------------------------


def _write_card(out_dir: Path, card: dict[str, Any]) -> None:
    (out_dir / CARD).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def process_uie(
    ckpt: Path, out_dir: Path, work_dir: Path | None, inputs: ParityInputs, log: ParityLog, seed: int,
    convert: bool, demo: bool,
) -> None:  # fmt: skip
    """Load, convert (if ``convert``) and check the UIE model; write its card."""
    import shutil

    from conversion.export_uie import run_uie
    from conversion.models.uie_paddle import load_uie_checkpoint

    model, config = load_uie_checkpoint(ckpt)
    tokenizer = IETokenizer.from_file(ckpt / VOCAB)
    max_seq_len = served_max_seq_len(ckpt, min(512, config.max_position_embeddings))
    cases = make_cases(UIE_SPEC, tokenizer, inputs.texts, seed, prompts=inputs.prompts)
    decode = uie_decoder(inputs.decode_texts, inputs.uie_schema, tokenizer, max_seq_len)
    checker = make_checker(UIE_SPEC, cases, decode, log)
    art = run_uie(model, out_dir, work_dir, checker, convert=convert)
    files = (art.model_file, art.params_file)
    if convert:
        shutil.copyfile(ckpt / VOCAB, out_dir / VOCAB)
    probe = onednn_probe(UIE_SPEC, art.serving_server, files, cases)
    arch = {"type": "ernie-uie", **config.to_dict()}
    _write_card(out_dir, model_card(UIE_SPEC, ckpt, demo, files, arch, max_seq_len, probe))
    check_served(out_dir, checker)


def process_spo(
    ckpt: Path, out_dir: Path, work_dir: Path | None, inputs: ParityInputs, log: ParityLog, seed: int,
    convert: bool, demo: bool,
) -> None:  # fmt: skip
    """Load, convert (if ``convert``) and check the SPO model; write its card."""
    import shutil
    from dataclasses import asdict

    import torch

    from conversion.export_spo import run_spo
    from conversion.models.spo_torch import load_spo_checkpoint
    from conversion.serving_export import find_model_files

    torch.set_num_threads(2)
    model = load_spo_checkpoint(ckpt)
    tokenizer = IETokenizer.from_file(ckpt / VOCAB)
    predicates = [p["name"] for p in _spo_predicates(ckpt)]
    max_seq_len = served_max_seq_len(ckpt, SPO_SPEC.max_seq_len)
    cases = make_cases(SPO_SPEC, tokenizer, inputs.texts, seed)
    decode = spo_decoder(inputs.decode_texts, tokenizer, predicates, max_seq_len)
    checker = make_checker(SPO_SPEC, cases, decode, log)
    art = run_spo(model, out_dir, work_dir, checker, convert=convert)
    if convert:
        shutil.copyfile(ckpt / VOCAB, out_dir / VOCAB)
    files = find_model_files(art.serving_server)
    probe = onednn_probe(SPO_SPEC, art.serving_server, files, cases)
    arch = {"type": "bert-gplinker", **asdict(model.config)}
    _write_card(out_dir, model_card(SPO_SPEC, ckpt, demo, files, arch, max_seq_len, probe))
    check_served(out_dir, checker)


# -- commands ----------------------------------------------------------------------------------


def _ensure_demo(work: Path, seed: int, uie_ckpt: Path | None, spo_ckpt: Path | None) -> tuple[Path, Path]:
    """Write the demo data and train the missing demo checkpoints; the two checkpoint dirs."""
    from conversion import demo_data

    data = work / "data"
    needs_data = uie_ckpt is None or spo_ckpt is None
    files = ("train.jsonl", "dev.jsonl", "test.jsonl", VOCAB)
    if needs_data and not all((data / name).is_file() for name in files):
        demo_data.write_dataset(data, seed=seed)
    demo_spo = None
    if spo_ckpt is None:
        spo_ckpt = demo_spo = work / "spo_ckpt"
        if not (spo_ckpt / "model.pt").is_file():
            from conversion.train_spo import train_spo

            logger.info("training the demo SPO model into %s", spo_ckpt)
            train_spo(data, spo_ckpt, seed=seed)
    if uie_ckpt is None:
        uie_ckpt = work / "uie_ckpt"
        if not (uie_ckpt / "model_state.pdparams").is_file():
            from conversion.train_uie import train_uie

            # the demo SPO encoder (same data, same vocab) is the demo UIE's starting point
            logger.info("training the demo UIE model into %s", uie_ckpt)
            train_uie(data, uie_ckpt, seed=seed, init_encoder=demo_spo, threads=2)
    return uie_ckpt, spo_ckpt


def build(
    out: Path,
    work: Path,
    seed: int = 0,
    uie_checkpoint: Path | None = None,
    spo_checkpoint: Path | None = None,
    force: bool = False,
) -> int:
    """Build ``out`` (see the module docstring); 0 when every hop passed, else 1."""
    t0 = time.perf_counter()
    uie_ckpt, spo_ckpt = _ensure_demo(work, seed, uie_checkpoint, spo_checkpoint)
    inputs = parity_inputs(seed)
    log = ParityLog(out / PARITY)
    steps = (
        ("uie", process_uie, uie_ckpt, uie_checkpoint is None),
        ("spo", process_spo, spo_ckpt, spo_checkpoint is None),
    )
    try:
        for name, process, ckpt, demo in steps:
            convert = force or not is_fresh(out / name, ckpt)
            if not convert:
                logger.info("%s: outputs are up to date with %s; checking only", name, ckpt)
            (out / name).mkdir(parents=True, exist_ok=True)
            process(ckpt, out / name, work / "export" / name, inputs, log, seed, convert, demo)
    except ParityCheckError as e:
        log.write()
        logger.error("parity check failed: %s", e)
        return 1
    log.write()
    logger.info(
        "serving model written to %s: %d hops passed in %.0fs", out, len(log.rows), time.perf_counter() - t0
    )
    return 0


def check(out: Path, seed: int = 0) -> int:
    """Re-run every hop's check on an existing ``out``; 0 when every hop passed, else 1."""
    inputs = parity_inputs(seed)
    log = ParityLog(out / PARITY)
    try:
        for name, process in (("uie", process_uie), ("spo", process_spo)):
            card = json.loads((out / name / CARD).read_text(encoding="utf-8"))
            ckpt = Path(card["checkpoint"])
            process(ckpt, out / name, None, inputs, log, seed, False, card.get("source") == "demo")
    except ParityCheckError as e:
        log.write()
        logger.error("parity check failed: %s", e)
        return 1
    log.write()
    logger.info("%d hops passed", len(log.rows))
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
    c = sub.add_parser("check", help="re-run the parity checks of an existing serving_model")
    c.add_argument("--out", type=Path, default=Path("serving_model"))
    c.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("x2paddle", "x2paddle.convert", "paddle2onnx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command == "build":
        return build(args.out, args.work, args.seed, args.uie_checkpoint, args.spo_checkpoint, args.force)
    return check(args.out, args.seed)


if __name__ == "__main__":
    sys.exit(main())
