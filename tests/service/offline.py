"""What a served model answers, computed without a server: the service's own jobs over the model
directory's ONNX file, for the live-server tests to compare against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conversion import demo_data
from conversion.parity import spo_decoder, uie_decoder
from pipeline.backends import create_backend
from pipeline.model_card import load_model_card, load_relation_heads_of
from pipeline.tokenizer import IETokenizer


def held_out_texts(n: int) -> list[str]:
    """The first ``n`` texts of the demo dataset's test split."""
    _, test = demo_data.generate(0)
    return [r["text"] for r in test[:n]]


def offline_answers(
    model_dir: Path, texts: list[str], schema: Any = None, precision: str = "fp32", threads: int = 2
) -> list[dict]:
    """The results ``model_dir`` gives ``texts`` (UIE: with ``schema``, read as its card says) on
    ONNX Runtime at ``precision``."""
    card = load_model_card(model_dir)
    tokenizer = IETokenizer.from_file(model_dir / card.vocab, card.tokenizer.settings)
    if card.task == "uie":
        reading = {"split_sentence": card.reading.split_sentence}
        decode = uie_decoder(texts, schema, tokenizer, card.max_seq_len, **reading)
    else:
        heads = load_relation_heads_of(model_dir, card)
        decode = spo_decoder(texts, tokenizer, card.predicate_names, card.max_seq_len, heads)
    engine = create_backend("onnx", model_dir, card, threads=threads, precision=precision)
    try:
        return decode(engine.infer)
    finally:
        engine.close()
