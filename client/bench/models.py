"""Benchmark model sizes: ``demo`` (serving_model/) and random-weight ``nano`` / ``base`` built
through the conversion bridge into ``build/bench/<size>/``.

python -m client.bench.models nano [--root build/bench]
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
DEMO_DIR = ROOT / "serving_model"
BENCH_DIR = ROOT / "build" / "bench"


@dataclass(frozen=True)
class Size:
    """Encoder shape shared by the UIE and SPO models of one size."""

    layers: int
    hidden: int
    heads: int
    vocab: int | None  # None: the vocab built from the demo texts, unpadded


SIZES: dict[str, Size] = {
    "nano": Size(layers=4, hidden=312, heads=12, vocab=None),
    "base": Size(layers=12, hidden=768, heads=12, vocab=40000),
}
ALL_SIZES = ("demo", *SIZES)


def model_root(size: str, bench_dir: Path = BENCH_DIR) -> Path:
    """The folder holding ``uie/`` and ``spo/`` of ``size``."""
    return DEMO_DIR if size == "demo" else bench_dir / size / "serving_model"


def is_built(size: str, bench_dir: Path = BENCH_DIR) -> bool:
    """Both models of ``size`` have a model card."""
    root = model_root(size, bench_dir)
    return all((root / name / "model_card.json").is_file() for name in ("uie", "spo"))


def pad_vocab(tokens: list[str], size: int) -> list[str]:
    """``tokens`` followed by ``[unusedN]`` fillers up to ``size`` entries (never truncated)."""
    return tokens + [f"[unused{i}]" for i in range(max(size - len(tokens), 0))]


def write_vocab(path: Path, size: int | None) -> int:
    """A vocab over the demo texts and prompts (padded to ``size`` when given); its length."""
    from conversion import demo_data
    from pipeline.tokenizer import build_vocab

    train, test = demo_data.generate(0, n_train=2000, n_test=200)
    prompts = [*demo_data.ENTITY_TYPES, *(p["name"] for p in demo_data.schema_dict()["predicates"])]
    tokens = build_vocab([r["text"] for r in train + test] + bench_filler_texts() + prompts, path)
    if size is not None:
        tokens = pad_vocab(tokens, size)
        path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return len(tokens)


def bench_filler_texts() -> list[str]:
    """Texts whose characters the benchmark requests are made of (see :func:`request_text`)."""
    from conversion import demo_data

    _, records = demo_data.generate(7, n_train=0, n_test=40)
    return [r["text"] for r in records]


def write_checkpoints(size: str, work: Path, seed: int = 0) -> tuple[Path, Path]:
    """Random-weight UIE (Paddle) and SPO (PyTorch) checkpoints of ``size``; their two dirs.

    The encoders are random; the output heads are set so that nothing is found (UIE start/end
    bias -8, SPO GlobalPointer projections 0): random spans would make decoding (and the
    bridge's decoded parity check) explode, which no trained model does. The engine's work is
    the same: dense weights are computed whatever their values.
    """
    import json

    import paddle
    import torch

    from conversion import demo_data
    from conversion.models.spo_torch import SPOConfig, SPOModel
    from conversion.models.uie_paddle import UIE, UIEConfig, save_uie_checkpoint

    shape = SIZES[size]
    work.mkdir(parents=True, exist_ok=True)
    vocab_path = work / "vocab.txt"
    vocab_size = write_vocab(vocab_path, shape.vocab)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=4 * shape.hidden,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=512,
    )
    paddle.seed(seed)
    uie_config = UIEConfig(**common)
    uie = UIE(uie_config)
    for head in (uie.linear_start, uie.linear_end):  # probabilities ~0: no spans to decode
        head.bias.set_value(paddle.full([1], -8.0, dtype="float32"))
    uie.eval()
    uie_dir = save_uie_checkpoint(uie, uie_config, vocab_path, work / "uie_ckpt")

    torch.manual_seed(seed)
    predicates = demo_data.schema_dict()["predicates"]
    spo = SPOModel(SPOConfig(num_predicates=len(predicates), head_size=64, **common)).eval()
    with torch.no_grad():  # logits exactly 0 (never > 0): no triples to decode
        for head in (spo.entity_head, spo.head_head, spo.tail_head):
            head.dense.weight.zero_()
            head.dense.bias.zero_()
    spo_dir = save_hf_layout(spo, work / "spo_ckpt")
    (spo_dir / "vocab.txt").write_text(vocab_path.read_text(encoding="utf-8"), encoding="utf-8")
    (spo_dir / "predicates.json").write_text(
        json.dumps(predicates, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    return uie_dir, spo_dir


def save_hf_layout(model, ckpt_dir: Path) -> Path:
    """Save an SPO model as a PyTorch GPLinker training run leaves it: ``model.safetensors``
    with a HF ``BertModel`` (pooler included) under ``bert.``, and transformers' config.json."""
    import json
    from dataclasses import asdict

    import torch
    from safetensors.torch import save_file

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    hidden = model.config.hidden_size
    state["bert.pooler.dense.weight"] = torch.zeros(hidden, hidden)
    state["bert.pooler.dense.bias"] = torch.zeros(hidden)
    save_file(state, str(ckpt_dir / "model.safetensors"))
    config = {"architectures": ["BertModel"], "model_type": "bert", **asdict(model.config)}
    (ckpt_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return ckpt_dir


def widen_spo_checkpoint(
    src: Path, dst: Path, predicates: int, seed: int = 0, max_seq_len: int | None = None
) -> Path:
    """A copy of the SPO checkpoint ``src`` with ``predicates`` relations: its own first, then
    ``关系N`` ones whose heads are freshly initialised (offset init: their logits sit far below 0,
    as an untrained relation's do), for measuring and testing at a real schema's size. The served
    length is ``max_seq_len`` when given (metrics.json), else ``src``'s."""
    import json
    import shutil
    from dataclasses import replace

    import torch

    from conversion.models.spo_checkpoint import load_spo_checkpoint, read_predicates
    from conversion.models.spo_torch import EfficientGlobalPointer, SPOModel, save_spo_checkpoint

    model = load_spo_checkpoint(src)
    own = read_predicates(src)
    n = len(own)
    if predicates < n:
        raise ValueError(f"{src} has {n} predicates; cannot widen it to {predicates}")
    torch.manual_seed(seed)
    wide = SPOModel(replace(model.config, num_predicates=predicates)).eval()
    state = wide.state_dict()
    hs = model.config.head_size
    for key, value in model.state_dict().items():
        head = key.split(".")[0]
        if head not in ("head_head", "tail_head"):
            state[key] = value
        elif isinstance(getattr(model, head), EfficientGlobalPointer) and ".bias_dense." in key:
            state[key][:n] = value[:n]  # per-predicate start biases, then end biases
            state[key][predicates : predicates + n] = value[n:]
        elif isinstance(getattr(model, head), EfficientGlobalPointer):
            state[key] = value  # the shared q / k projection
        else:
            state[key][: n * 2 * hs] = value  # GlobalPointer: one 2 * hs block per predicate
    wide.load_state_dict(state)
    save_spo_checkpoint(wide, dst)
    added: list = [f"关系{i}" for i in range(n, predicates)]
    if isinstance(own[0], dict):
        added = [{"name": name, "subject_type": "实体", "object_type": "实体"} for name in added]
    names = own + added
    (dst / "predicates.json").write_text(json.dumps(names, ensure_ascii=False, indent=1), encoding="utf-8")
    shutil.copyfile(src / "vocab.txt", dst / "vocab.txt")
    metrics_path = src / "metrics.json"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {}
    if max_seq_len is not None:
        metrics["max_seq_len"] = max_seq_len
    if metrics:
        (dst / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    return dst


def build_size(size: str, bench_dir: Path = BENCH_DIR, seed: int = 0) -> Path:
    """Build ``size``'s serving models through the bridge (skipped when built); their root."""
    if size == "demo":
        if not is_built(size):
            raise FileNotFoundError(f"no demo models in {DEMO_DIR}: run `make models`")
        return DEMO_DIR
    out = model_root(size, bench_dir)
    if is_built(size, bench_dir):
        return out
    work = bench_dir / size
    uie_dir, spo_dir = write_checkpoints(size, work / "ckpt", seed)
    cmd = [sys.executable, "-m", "conversion.bridge", "build", "--out", str(out)]
    cmd += ["--work", str(work / "bridge")]
    cmd += ["--uie-checkpoint", str(uie_dir), "--spo-checkpoint", str(spo_dir)]
    logger.info("building %s models: %s", size, " ".join(cmd))
    subprocess.run(cmd, cwd=ROOT, check=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the benchmark's random-weight models.")
    parser.add_argument("sizes", nargs="+", choices=list(SIZES))
    parser.add_argument("--root", type=Path, default=BENCH_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for size in args.sizes:
        print(build_size(size, args.root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
