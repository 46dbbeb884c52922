"""The length a checkpoint is served at: what it says it was trained at, else a logged guess."""

from __future__ import annotations

import json
import logging

import pytest

from conversion.errors import CheckpointError
from conversion.trained_length import served_length


@pytest.fixture
def log(caplog):
    """The module's log records, whatever other tests did to logging (Paddle Serving's import
    disables existing loggers; the entry points stop ours propagating to the root)."""
    logger = logging.getLogger("conversion.trained_length")
    logger.disabled = False
    logger.addHandler(caplog.handler)
    caplog.handler.setLevel(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)


def _write(ckpt, name: str, data: dict) -> None:
    (ckpt / name).write_text(json.dumps(data), encoding="utf-8")


@pytest.mark.parametrize(
    ("name", "data", "source"),
    [
        ("metrics.json", {"max_seq_len": 128}, "metrics.json max_seq_len"),
        ("config.json", {"hidden_size": 32, "max_seq_len": 128}, "config.json max_seq_len"),
        ("config.json", {"maxlen": 128}, "config.json maxlen"),
        ("bert4torch_config.json", {"maxlen": 128}, "bert4torch_config.json maxlen"),
        ("tokenizer_config.json", {"model_max_length": 128}, "tokenizer_config.json model_max_length"),
    ],
)
def test_the_stated_training_length_is_served(tmp_path, name, data, source) -> None:
    _write(tmp_path, name, data)
    length = served_length(tmp_path, position_table=512)
    assert (length.max_seq_len, length.source) == (128, source)


def test_the_demo_trainers_metrics_win_over_the_tokenizers_length(tmp_path) -> None:
    _write(tmp_path, "tokenizer_config.json", {"model_max_length": 512})
    _write(tmp_path, "metrics.json", {"max_seq_len": 64})
    assert served_length(tmp_path, 512).max_seq_len == 64


def test_transformers_unset_model_max_length_is_not_a_length(tmp_path, log) -> None:
    _write(tmp_path, "tokenizer_config.json", {"model_max_length": 1000000000000000019884624838656})
    length = served_length(tmp_path, position_table=300)
    assert (length.max_seq_len, length.source) == (300, "default")
    assert "--max-seq-len" in log.text  # the guess is logged with the flag that replaces it


def test_without_a_stated_length_the_smaller_of_512_and_the_position_table(tmp_path) -> None:
    assert served_length(tmp_path, position_table=2048).max_seq_len == 512
    assert served_length(tmp_path, position_table=128).max_seq_len == 128


def test_the_flag_wins_and_a_stated_length_is_capped_at_the_position_table(tmp_path, log) -> None:
    _write(tmp_path, "config.json", {"maxlen": 1024})
    assert served_length(tmp_path, position_table=512).max_seq_len == 512
    log.clear()
    assert served_length(tmp_path, 512, override=200).max_seq_len == 200
    assert "1024" in log.text
    with pytest.raises(CheckpointError, match="position table"):
        served_length(tmp_path, 512, override=1024)


@pytest.mark.parametrize("value", ["128", 12.5, True, 2])
def test_a_length_that_is_not_a_count_of_tokens_is_refused_naming_the_file(tmp_path, value) -> None:
    _write(tmp_path, "config.json", {"maxlen": value})
    with pytest.raises(CheckpointError, match=r"config\.json: maxlen"):
        served_length(tmp_path, 512)
