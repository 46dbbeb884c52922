"""Train a tiny demo UIE on the generated data (CPU, minutes) and save it in PaddleNLP layout.

Evaluation runs the real multi-stage extraction (:class:`pipeline.uie.job.UIEJob`) on the held-out
test split and scores exact-match micro F1 over entities ``(type, start, end)`` and relations
``(subject span, predicate, object span)``.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
from tqdm import tqdm

from conversion.demo_data import uie_schema
from conversion.models.uie_paddle import UIE, UIEConfig, save_uie_checkpoint
from conversion.uie_examples import LabeledRow, SchemaSpec, build_examples, encode_examples
from pipeline.tokenizer import Encoded, IETokenizer
from pipeline.uie.job import UIEJob
from pipeline.uie.schema import parse_schema

logger = logging.getLogger(__name__)

MODEL_INPUTS = ("input_ids", "token_type_ids", "position_ids", "attention_mask")


def tiny_config(vocab_size: int) -> UIEConfig:
    """The demo architecture: 2 layers, hidden 64, 2 heads (uie-base has 12 / 768 / 12).

    Two wide heads rather than more narrow ones: Paddle's CPU batched matmul is much slower for
    many small matrices.
    """
    return UIEConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=256,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=512,
    )


def sinusoidal_positions(n: int, dim: int) -> np.ndarray:
    """Transformer sinusoid table [n, dim]: an initialization that starts with relative structure."""
    pos = np.arange(n)[:, None]
    rates = 1.0 / np.power(10000.0, np.arange(0, dim, 2) / dim)
    table = np.zeros((n, dim), dtype="float32")
    table[:, 0::2] = np.sin(pos * rates)
    table[:, 1::2] = np.cos(pos * rates)
    return table * 0.1


def read_jsonl(path: Path) -> list[dict]:
    """Records of a ``.jsonl`` file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def pad_rows(rows: Sequence[Encoded]) -> dict[str, np.ndarray]:
    """Model inputs for rows padded to the longest one (pad id 0, mask 0, positions 0..L-1)."""
    width = max(len(r) for r in rows)
    feed = {name: np.zeros((len(rows), width), dtype="int64") for name in MODEL_INPUTS}
    for i, r in enumerate(rows):
        n = len(r)
        feed["input_ids"][i, :n] = r.input_ids
        feed["token_type_ids"][i, :n] = r.token_type_ids
        feed["attention_mask"][i, :n] = 1
    feed["position_ids"][:] = np.arange(width, dtype="int64")
    return feed


def _labels(batch: Sequence[LabeledRow], width: int) -> tuple[np.ndarray, np.ndarray]:
    start = np.zeros((len(batch), width), dtype="float32")
    end = np.zeros((len(batch), width), dtype="float32")
    for i, ex in enumerate(batch):
        start[i, list(ex.starts)] = 1.0
        end[i, list(ex.ends)] = 1.0
    return start, end


def predict_rows(model: UIE, rows: Sequence[Encoded], batch_size: int = 64) -> tuple[list, list]:
    """Start/end probabilities per row (trimmed to the row's length), batched by similar length."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    starts: list[np.ndarray | None] = [None] * len(rows)
    ends: list[np.ndarray | None] = [None] * len(rows)
    model.eval()
    with paddle.no_grad():
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            feed = pad_rows([rows[i] for i in idx])
            s, e = model(*(paddle.to_tensor(feed[k]) for k in MODEL_INPUTS))
            s, e = s.numpy(), e.numpy()
            for j, i in enumerate(idx):
                n = len(rows[i])
                starts[i], ends[i] = s[j, :n], e[j, :n]
    return starts, ends


def extract(
    model: UIE, tokenizer: IETokenizer, texts: list[str], schema, max_seq_len: int, batch_size: int = 64
) -> list[dict]:
    """Taskflow-format results for ``texts`` by running the multi-stage :class:`UIEJob`."""
    job = UIEJob(texts, parse_schema(schema), tokenizer, max_seq_len=max_seq_len, position_prob=0.5)
    while rows := job.next_rows():
        starts, ends = predict_rows(model, rows, batch_size)
        job.consume(starts, ends)
    return job.result()


def gold_facts(record: dict) -> set[tuple]:
    """Entities ``("E", type, start, end)`` and relations ``("R", s_start, s_end, pred, o_start, o_end)``."""
    facts: set[tuple] = {("E", e["type"], e["start"], e["end"]) for e in record.get("entities", [])}
    for t in record.get("spo_list", []):
        s0, o0 = t["subject_start"], t["object_start"]
        facts.add(("R", s0, s0 + len(t["subject"]), t["predicate"], o0, o0 + len(t["object"])))
    return facts


def predicted_facts(result: dict) -> set[tuple]:
    """The same facts read from one Taskflow-format result (root spans and their relations)."""
    facts: set[tuple] = set()
    for etype, items in result.items():
        for it in items:
            if "start" not in it:
                continue
            facts.add(("E", etype, it["start"], it["end"]))
            for pred, objs in it.get("relations", {}).items():
                for o in objs:
                    if "start" in o:
                        facts.add(("R", it["start"], it["end"], pred, o["start"], o["end"]))
    return facts


def micro_prf(gold: Sequence[set], pred: Sequence[set]) -> dict[str, float]:
    """Exact-match micro precision, recall and F1 over per-text fact sets."""
    tp = sum(len(g & p) for g, p in zip(gold, pred, strict=True))
    n_pred = sum(len(p) for p in pred)
    n_gold = sum(len(g) for g in gold)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def evaluate(
    model: UIE, tokenizer: IETokenizer, records: list[dict], schema, max_seq_len: int
) -> dict[str, float]:
    """Micro P/R/F1 of the multi-stage extraction on ``records``."""
    results = extract(model, tokenizer, [r["text"] for r in records], schema, max_seq_len)
    return micro_prf([gold_facts(r) for r in records], [predicted_facts(r) for r in results])


def _batches(rows: list[LabeledRow], batch_size: int, rng: random.Random) -> list[list[LabeledRow]]:
    """One epoch of shuffled batches, each drawn from a pool sorted by length (less padding)."""
    order = list(range(len(rows)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches = []
    for p in range(0, len(order), pool):
        chunk = sorted(order[p : p + pool], key=lambda i: len(rows[i].row))
        batches += [[rows[i] for i in chunk[b : b + batch_size]] for b in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def loss_on(model: UIE, batch: Sequence[LabeledRow]) -> paddle.Tensor:
    """Mean BCE of start and end logits over the real (unpadded) tokens."""
    feed = pad_rows([ex.row for ex in batch])
    width = feed["input_ids"].shape[1]
    start_y, end_y = _labels(batch, width)
    start, end = model.forward_logits(*(paddle.to_tensor(feed[k]) for k in MODEL_INPUTS))
    mask = paddle.to_tensor(feed["attention_mask"].astype("float32"))
    bce = F.binary_cross_entropy_with_logits(
        start, paddle.to_tensor(start_y), reduction="none"
    ) + F.binary_cross_entropy_with_logits(end, paddle.to_tensor(end_y), reduction="none")
    return (bce * mask).sum() / (2.0 * mask.sum())


def train_uie(
    data_dir: Path,
    out_dir: Path,
    seed: int = 0,
    max_seconds: float = 170,
    target_f1: float = 0.97,
    *,
    max_len: int = 128,
    batch_size: int = 32,
    learning_rate: float = 5e-3,
    eval_every: int = 300,
    neg_entity_keep: float = 0.3,
    neg_relation_keep: float = 0.3,
    quick_eval: int = 40,
    max_steps: int | None = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> dict:
    """Train, evaluate on ``data_dir/test.jsonl`` every ``eval_every`` steps, save into ``out_dir``.

    Stops at the first eval point with F1 >= ``target_f1``, or when ``max_seconds`` (wall time
    from the start, final eval included as estimated) or ``max_steps`` run out. Returns
    ``{"f1", "precision", "recall", "seconds", "steps"}`` (also written to ``metrics.json``).
    """
    t0 = time.monotonic()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)
    rng = random.Random(seed)

    tokenizer = IETokenizer.from_file(data_dir / "vocab.txt")
    schema = uie_schema()
    spec = SchemaSpec.from_schema(schema)
    train_records = read_jsonl(data_dir / "train.jsonl")[:train_limit]
    test_records = read_jsonl(data_dir / "test.jsonl")[:test_limit]
    max_chars = max_len - 32  # room for [CLS]/[SEP]s and the longest relation prompt
    examples = build_examples(
        train_records,
        spec,
        rng,
        max_chars,
        neg_entity_keep=neg_entity_keep,
        neg_relation_keep=neg_relation_keep,
    )
    rows, _ = encode_examples(tokenizer, examples, max_len)
    logger.info(
        "%d training rows (%d positive) from %d records in %.1fs",
        len(rows),
        sum(bool(r.starts) for r in rows),
        len(train_records),
        time.monotonic() - t0,
    )

    config = tiny_config(tokenizer.vocab_size)
    model = UIE(config)
    pos_emb = model.ernie.embeddings.position_embeddings.weight
    pos_emb.set_value(sinusoidal_positions(*pos_emb.shape))
    warmup = min(200, max(1, eval_every // 2))
    schedule = paddle.optimizer.lr.LinearWarmup(learning_rate, warmup, 0.0, learning_rate)
    opt = paddle.optimizer.AdamW(
        learning_rate=schedule,
        parameters=model.parameters(),
        weight_decay=0.01,
        grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0),
    )

    metrics = {"f1": 0.0, "precision": 0.0, "recall": 0.0}
    step, eval_seconds, losses = 0, 0.0, []
    evaluated_at = -1
    bar = tqdm(desc="train uie", unit="step", dynamic_ncols=True)
    done = False
    while not done:
        for batch in _batches(rows, batch_size, rng):
            model.train()
            loss = loss_on(model, batch)
            loss.backward()
            opt.step()
            opt.clear_grad()
            schedule.step()
            step += 1
            losses.append(float(loss))
            bar.update(1)
            out_of_time = time.monotonic() - t0 + eval_seconds >= max_seconds
            out_of_steps = max_steps is not None and step >= max_steps
            if step % eval_every == 0 or out_of_time or out_of_steps:
                te = time.monotonic()
                final = out_of_time or out_of_steps
                if not final and quick_eval and quick_eval < len(test_records):
                    # a cheap look at part of the test set decides whether the full eval is worth it
                    quick = evaluate(model, tokenizer, test_records[:quick_eval], schema, max_len)
                    logger.info("step %d quick F1 %.4f on %d texts", step, quick["f1"], quick_eval)
                    bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", quick_f1=f"{quick['f1']:.3f}")
                    if quick["f1"] < target_f1:
                        # the full eval costs about len(test) / quick_eval times as much
                        scale = len(test_records) / quick_eval
                        eval_seconds = max(eval_seconds, (time.monotonic() - te) * scale)
                        continue
                metrics = evaluate(model, tokenizer, test_records, schema, max_len)
                eval_seconds = time.monotonic() - te
                evaluated_at = step
                logger.info(
                    "step %d loss %.4f P %.4f R %.4f F1 %.4f (eval %.1fs, %.0fs elapsed)",
                    step,
                    np.mean(losses[-100:]),
                    metrics["precision"],
                    metrics["recall"],
                    metrics["f1"],
                    eval_seconds,
                    time.monotonic() - t0,
                )
                if metrics["f1"] >= target_f1 or final:
                    done = True
                    break
    bar.close()
    if evaluated_at != step:  # pragma: no cover - the loop always evaluates before stopping
        metrics = evaluate(model, tokenizer, test_records, schema, max_len)

    model.eval()
    save_uie_checkpoint(model, config, data_dir / "vocab.txt", out_dir)
    summary = {
        "f1": metrics["f1"],
        "precision": metrics["precision"],
        "recall": metrics["recall"],
        "seconds": round(time.monotonic() - t0, 1),
        "steps": step,
    }
    full = {
        **summary,
        "seed": seed,
        "max_seq_len": max_len,
        "train_rows": len(rows),
        "test_records": len(test_records),
        "first_loss": float(np.mean(losses[:5])) if losses else None,
        "last_loss": float(np.mean(losses[-5:])) if losses else None,
    }
    (out_dir / "metrics.json").write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    return summary


def main() -> None:
    """CLI: ``python -m conversion.train_uie --data DIR --out DIR [--seed N]``."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-seconds", type=float, default=170)
    ap.add_argument("--target-f1", type=float, default=0.97)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    result = train_uie(args.data, args.out, args.seed, args.max_seconds, args.target_f1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
