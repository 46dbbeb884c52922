"""Train a tiny demo UIE on the generated data (CPU, minutes) and save it in PaddleNLP layout.

Training runs on :class:`TorchUIE`, an exact PyTorch mirror of the Paddle :class:`UIE` (Paddle
dygraph is ~5x slower per step for this model on a CPU); the weights are copied into the Paddle
model by parameter name and its outputs checked equal (atol 1e-5) before it is evaluated and saved.
Loss: BCE on start/end logits with positives weighted ``pos_weight``; AdamW with warmup and a
linear decay that reaches its floor at the time budget.

Evaluation runs the real multi-stage extraction (:class:`pipeline.uie.job.UIEJob`, by default
reading texts sentence by sentence, as the demo service is configured) on the held-out test
split and scores exact-match micro F1 over entities ``(type, start, end)`` and relations
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
import torch

from conversion.demo_data import uie_schema
from conversion.metrics import micro_prf
from conversion.metrics import uie_gold_facts as gold_facts
from conversion.metrics import uie_predicted_facts as predicted_facts
from conversion.models.spo_checkpoint import load_spo_checkpoint
from conversion.models.uie_paddle import UIE, UIEConfig, save_uie_checkpoint
from conversion.models.uie_torch import (
    TorchUIE,
    copy_torch_to_paddle,
    init_from_bert_encoder,
    init_matching_head,
    init_torch_uie,
)
from conversion.progress import progress_bar
from conversion.record_pieces import split_sentences
from conversion.train_spo import read_predicates
from conversion.uie_examples import LabeledRow, SchemaSpec, build_examples, encode_examples
from conversion.window_records import window_records
from pipeline.runner import build_feed
from pipeline.tokenizer import Encoded, IETokenizer
from pipeline.uie.job import UIEJob
from pipeline.uie.schema import parse_schema

logger = logging.getLogger(__name__)

MODEL_INPUTS = ("input_ids", "token_type_ids", "position_ids", "attention_mask")
PADDLE_EVAL_SLOWDOWN = 4.0  # Paddle dygraph reads a split about this much slower than the torch twin


def tiny_config(
    vocab_size: int,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int | None = None,
) -> UIEConfig:
    """The demo architecture: by default 2 layers, hidden 64, 2 heads (uie-base: 12 / 768 / 12)."""
    return UIEConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=512,
    )


def read_jsonl(path: Path) -> list[dict]:
    """Records of a ``.jsonl`` file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def pad_rows(rows: Sequence[Encoded]) -> dict[str, np.ndarray]:
    """Model inputs for rows padded to the longest one: the service's feed builder."""
    return build_feed(rows, MODEL_INPUTS)


def _labels(batch: Sequence[LabeledRow], width: int) -> tuple[np.ndarray, np.ndarray]:
    start = np.zeros((len(batch), width), dtype="float32")
    end = np.zeros((len(batch), width), dtype="float32")
    for i, ex in enumerate(batch):
        start[i, list(ex.starts)] = 1.0
        end[i, list(ex.ends)] = 1.0
    return start, end


def _probs(model: UIE | TorchUIE, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            s, e = model(*(torch.from_numpy(feed[k]) for k in MODEL_INPUTS))
            return torch.sigmoid(s).numpy(), torch.sigmoid(e).numpy()
    with paddle.no_grad():
        s, e = model(*(paddle.to_tensor(feed[k]) for k in MODEL_INPUTS))
        return s.numpy(), e.numpy()


def predict_rows(model: UIE | TorchUIE, rows: Sequence[Encoded], batch_size: int = 64) -> tuple[list, list]:
    """Start/end probabilities per row (trimmed to the row's length), batched by similar length.

    ``model`` is the Paddle :class:`UIE` or its PyTorch twin :class:`TorchUIE`.
    """
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    starts: list[np.ndarray | None] = [None] * len(rows)
    ends: list[np.ndarray | None] = [None] * len(rows)
    model.eval()
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        feed = pad_rows([rows[i] for i in idx])
        s, e = _probs(model, feed)
        for j, i in enumerate(idx):
            n = len(rows[i])
            starts[i], ends[i] = s[j, :n], e[j, :n]
    return starts, ends


def extract(
    model: UIE | TorchUIE,
    tokenizer: IETokenizer,
    texts: list[str],
    schema,
    max_seq_len: int,
    batch_size: int = 64,
    split_sentence: bool = False,
) -> list[dict]:
    """Taskflow-format results for ``texts`` by running the multi-stage :class:`UIEJob`."""
    job = UIEJob(
        texts,
        parse_schema(schema),
        tokenizer,
        max_seq_len=max_seq_len,
        position_prob=0.5,
        split_sentence=split_sentence,
    )
    while rows := job.next_rows():
        starts, ends = predict_rows(model, rows, batch_size)
        job.consume(starts, ends)
    return job.result()


def evaluate(
    model: UIE | TorchUIE,
    tokenizer: IETokenizer,
    records: list[dict],
    schema,
    max_seq_len: int,
    split_sentence: bool = False,
) -> dict[str, float]:
    """Micro P/R/F1 of the multi-stage extraction on ``records``."""
    texts = [r["text"] for r in records]
    results = extract(model, tokenizer, texts, schema, max_seq_len, split_sentence=split_sentence)
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


def _torch_loss(model: TorchUIE, batch: Sequence[LabeledRow], pos_weight: float) -> torch.Tensor:
    """Mean BCE (positives weighted by ``pos_weight``) of start and end logits over real tokens."""
    feed = pad_rows([ex.row for ex in batch])
    width = feed["input_ids"].shape[1]
    start_y, end_y = _labels(batch, width)
    start, end = model(*(torch.from_numpy(feed[k]) for k in MODEL_INPUTS))
    mask = torch.from_numpy(feed["attention_mask"]).to(torch.float32)
    weight = torch.tensor(pos_weight)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        start, torch.from_numpy(start_y), pos_weight=weight, reduction="none"
    ) + torch.nn.functional.binary_cross_entropy_with_logits(
        end, torch.from_numpy(end_y), pos_weight=weight, reduction="none"
    )
    return (bce * mask).sum() / (2.0 * mask.sum())


def to_paddle(model: TorchUIE, config: UIEConfig) -> UIE:
    """A Paddle :class:`UIE` holding ``model``'s weights (outputs checked equal), in eval mode."""
    target = UIE(config)
    diff = copy_torch_to_paddle(model, target)
    logger.debug("torch -> paddle max output difference %.2e", diff)
    target.eval()
    return target


def train_uie(
    data_dir: Path,
    out_dir: Path,
    seed: int = 0,
    max_seconds: float | None = None,
    target_f1: float | None = None,
    *,
    max_len: int = 100,
    batch_size: int = 32,
    learning_rate: float = 1.5e-3,
    warmup_steps: int = 100,
    pos_weight: float = 1.0,
    position_scale: float = 0.5,
    hidden_size: int = 64,
    num_layers: int = 3,
    num_heads: int = 2,
    eval_every: int = 1000,
    neg_entity_keep: float = 0.2,
    neg_relation_keep: float = 0.1,
    threads: int = 1,
    hard_negatives: bool = True,
    ambiguous_repeat: int = 1,
    window_share: float = 0.0,
    split_sentence: bool = True,
    init_encoder: Path | None = None,
    match_head: float = 5.0,
    max_steps: int | None = 3000,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> dict:
    """Train, watch ``data_dir/dev.jsonl``, score ``data_dir/test.jsonl`` once, save into ``out_dir``.

    Training runs on :class:`TorchUIE` with ``threads`` intra-op threads (one is fastest on a
    busy 2-core machine), which also reads the dev split every ``eval_every`` steps. Training
    stops after ``max_steps`` (by default only then, and the learning rate decays by steps: the
    model is a function of the data and the seed, however fast or busy the machine), or earlier
    where asked: at the first dev F1 >= ``target_f1``, or when ``max_seconds`` (wall time from
    the start, the final eval included as estimated; the learning rate then decays by time
    too) run out. Then the Paddle
    :class:`UIE` the weights are copied into reads the test split, and is saved. Returns the test
    split's ``{"f1", "precision", "recall", "seconds", "steps"}`` (also written to
    ``metrics.json`` with the last dev figures and ``max_seq_len``, the length it was evaluated
    with and is to be served with).

    ``split_sentence`` trains on the records' sentences and evaluates reading texts sentence by
    sentence, as the service does with ``split_sentence``; ``window_share`` of the records are
    read instead as rows cut like the service's windows over a long text
    (:func:`conversion.window_records.window_records`).
    """
    if max_steps is None and max_seconds is None and target_f1 is None:
        raise ValueError("train_uie needs max_steps, max_seconds or target_f1 to stop")
    t0 = time.monotonic()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        tokenizer = IETokenizer.from_file(data_dir / "vocab.txt")
        schema = uie_schema()
        types = {p["name"]: (p["subject_type"], p["object_type"]) for p in read_predicates(data_dir)}
        spec = SchemaSpec.from_schema(schema, types)
        train_records = read_jsonl(data_dir / "train.jsonl")[:train_limit]
        dev_records = read_jsonl(data_dir / "dev.jsonl")[:test_limit]
        test_records = read_jsonl(data_dir / "test.jsonl")[:test_limit]
        # training texts as long as the service's longest window (entity prompts of 2 tokens), so
        # every window position was trained; the rows get room for the longest relation prompt
        max_chars = max_len - 5
        row_len = max_chars + 32
        # a share of the records is read as the service reads long texts: joined and cut into
        # windows starting anywhere, several subjects to a row (conversion.window_records)
        shuffled = rng.sample(train_records, len(train_records))
        n_windowed = int(window_share * len(shuffled))
        whole = shuffled[n_windowed:]
        if split_sentence:  # read as the service reads them with split_sentence
            whole = [piece for r in whole for piece in split_sentences(r)]
        pieces = whole + window_records(shuffled[:n_windowed], rng, max_chars)
        examples = build_examples(
            pieces,
            spec,
            rng,
            max_chars,
            neg_entity_keep=neg_entity_keep,
            neg_relation_keep=neg_relation_keep,
            hard_negatives=hard_negatives,
            ambiguous_repeat=ambiguous_repeat,
        )
        rows, _ = encode_examples(tokenizer, examples, row_len)
        logger.info(
            "%d training rows (%d positive) from %d records in %.1fs",
            len(rows),
            sum(bool(r.starts) for r in rows),
            len(train_records),
            time.monotonic() - t0,
        )

        intermediate, spo = None, None
        if init_encoder is not None:  # an SPO (BERT) checkpoint: its encoder's shape, then its weights
            with torch.random.fork_rng():  # building the SPO model must not move the seeded RNG
                spo = load_spo_checkpoint(init_encoder)
            c = spo.config
            hidden_size, num_layers, num_heads = c.hidden_size, c.num_hidden_layers, c.num_attention_heads
            intermediate = c.intermediate_size
        config = tiny_config(tokenizer.vocab_size, hidden_size, num_layers, num_heads, intermediate)
        model = TorchUIE(config)
        init_torch_uie(model, seed, position_scale)
        if spo is not None:
            init_from_bert_encoder(model, spo.state_dict())
            logger.info("encoder initialized from %s", init_encoder)
        if match_head:
            logger.info(
                "layer 0 head 0 made a matching head (scale %.2f)", init_matching_head(model, 0, match_head)
            )
        opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)

        dev_metrics = {"f1": 0.0, "precision": 0.0, "recall": 0.0}
        step, final_eval_seconds, losses = 0, 0.0, []
        bar = progress_bar("train uie")
        t_train = time.monotonic()
        done = False
        while not done:
            for batch in _batches(rows, batch_size, rng):
                model.train()
                # linear warmup, then linear decay to 2% at max_steps, or at the time budget (minus
                # the final eval) where one is given and comes first
                left = 1.0
                if max_seconds is not None:
                    horizon = max(1.0, max_seconds - final_eval_seconds - (t_train - t0))
                    left = 1.0 - (time.monotonic() - t_train) / horizon
                if max_steps is not None:
                    left = min(left, 1.0 - step / max_steps)
                for group in opt.param_groups:
                    group["lr"] = learning_rate * min(1.0, (step + 1) / warmup_steps) * max(0.02, left)
                loss = _torch_loss(model, batch, pos_weight)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                step += 1
                losses.append(loss.item())
                bar.update(1)
                out_of_time = (
                    max_seconds is not None and time.monotonic() - t0 + final_eval_seconds >= max_seconds
                )
                done = out_of_time or (max_steps is not None and step >= max_steps)
                if done:
                    break
                if step % eval_every == 0:
                    te = time.monotonic()
                    dev_metrics = evaluate(model, tokenizer, dev_records, schema, max_len, split_sentence)
                    spent = time.monotonic() - te
                    scale = PADDLE_EVAL_SLOWDOWN * len(test_records) / max(1, len(dev_records))
                    final_eval_seconds = max(final_eval_seconds, spent * scale)
                    logger.info(
                        "step %d loss %.4f dev P %.4f R %.4f F1 %.4f (eval %.1fs, %.0fs elapsed)",
                        step,
                        np.mean(losses[-100:]),
                        dev_metrics["precision"],
                        dev_metrics["recall"],
                        dev_metrics["f1"],
                        spent,
                        time.monotonic() - t0,
                    )
                    bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", dev_f1=f"{dev_metrics['f1']:.3f}")
                    if target_f1 is not None and dev_metrics["f1"] >= target_f1:
                        done = True
                        break
        bar.close()
        # the saved model is the Paddle one: it reads the test split, once
        te = time.monotonic()
        paddle_model = to_paddle(model, config)
        metrics = evaluate(paddle_model, tokenizer, test_records, schema, max_len, split_sentence)
        logger.info(
            "step %d test P %.4f R %.4f F1 %.4f (eval %.1fs, %.0fs elapsed)",
            step,
            metrics["precision"],
            metrics["recall"],
            metrics["f1"],
            time.monotonic() - te,
            time.monotonic() - t0,
        )
    finally:
        torch.set_num_threads(old_threads)

    save_uie_checkpoint(paddle_model, config, data_dir / "vocab.txt", out_dir)
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
        "dev": dev_metrics,
        "settings": {
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "pos_weight": pos_weight,
            "position_scale": position_scale,
            "hidden_size": hidden_size,
            "num_layers": num_layers,
            "num_heads": num_heads,
            "neg_entity_keep": neg_entity_keep,
            "neg_relation_keep": neg_relation_keep,
            "hard_negatives": hard_negatives,
            "ambiguous_repeat": ambiguous_repeat,
            "window_share": window_share,
            "split_sentence": split_sentence,
            "init_encoder": str(init_encoder) if init_encoder else None,
            "match_head": match_head,
        },
        "first_loss": float(np.mean(losses[:5])) if losses else None,
        "last_loss": float(np.mean(losses[-5:])) if losses else None,
    }
    (out_dir / "metrics.json").write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    return summary


def main() -> None:
    """CLI: ``python -m conversion.train_uie --data DIR --out DIR [--seed N] [--init-encoder SPO_DIR]``."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-steps", type=int, default=3000)
    ap.add_argument("--max-seconds", type=float, default=None, help="also stop at this wall time")
    ap.add_argument("--target-f1", type=float, default=None, help="also stop at this dev F1")
    ap.add_argument("--init-encoder", type=Path, help="an SPO/BERT checkpoint dir to start the encoder from")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    result = train_uie(
        args.data,
        args.out,
        args.seed,
        args.max_seconds,
        args.target_f1,
        init_encoder=args.init_encoder,
        threads=args.threads,
        max_steps=args.max_steps,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
