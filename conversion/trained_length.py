"""The row length a checkpoint is served at: the length it was trained at, where it says so.

Positions beyond the training length are untrained: a model trained at 128 tokens and read at
256 finds spans it never learned to see. So the bridge serves at, in this order:

1. ``--max-seq-len`` when given (never above the position table);
2. what the checkpoint states (:data:`STATED_LENGTH`: the demo trainers' ``metrics.json``,
   ``max_seq_len`` / ``maxlen`` / ``max_len`` in ``config.json`` or ``bert4torch_config.json``,
   ``tokenizer_config.json``'s ``model_max_length``);
3. otherwise the smaller of 512 and the position table, logged as a guess with the flag to set.

Texts longer than the served length are read in overlapping windows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from conversion.errors import CheckpointError

logger = logging.getLogger(__name__)

DEFAULT_CAP = 512
# file -> keys that hold the training length, first found wins
STATED_LENGTH = (
    ("metrics.json", ("max_seq_len",)),
    ("config.json", ("max_seq_len", "maxlen", "max_len")),
    ("bert4torch_config.json", ("max_seq_len", "maxlen", "max_len")),
    ("tokenizer_config.json", ("model_max_length",)),
)
_UNSET_SENTINEL = 10**6  # transformers writes model_max_length = 1e30 when a tokenizer sets none


@dataclass(frozen=True)
class ServedLength:
    """The length to serve at and where it came from (for the log and the card)."""

    max_seq_len: int
    source: str


def stated_length(ckpt: Path) -> ServedLength | None:
    """The training length the checkpoint states (:data:`STATED_LENGTH`), or None."""
    for name, keys in STATED_LENGTH:
        path = ckpt / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path} is not valid JSON ({e})") from None
        if not isinstance(data, dict):
            continue
        for key in keys:
            value = data.get(key)
            if value is None or (key == "model_max_length" and _is_unset(value)):
                continue
            whole = isinstance(value, int | float) and not isinstance(value, bool) and value == int(value)
            if not whole or value < 8:
                raise CheckpointError(f"{path}: {key} must be a whole number of tokens (>= 8), got {value!r}")
            return ServedLength(int(value), f"{name} {key}")
    return None


def _is_unset(value: object) -> bool:
    return isinstance(value, int | float) and value >= _UNSET_SENTINEL


def served_length(ckpt: Path, position_table: int, override: int | None = None) -> ServedLength:
    """The row length to serve ``ckpt`` at (see the module docstring)."""
    if override is not None:
        if not 8 <= override <= position_table:
            raise CheckpointError(
                f"--max-seq-len {override} is outside 8..{position_table} (the model's position table)"
            )
        stated = stated_length(ckpt)
        if stated is not None and stated.max_seq_len != override:
            logger.warning(
                "%s: serving at --max-seq-len %d although %s says %d",
                ckpt,
                override,
                stated.source,
                stated.max_seq_len,
            )
        return ServedLength(override, "--max-seq-len")
    stated = stated_length(ckpt)
    if stated is not None:
        if stated.max_seq_len > position_table:
            logger.warning(
                "%s: %s says %d, above the position table (%d); serving at %d",
                ckpt,
                stated.source,
                stated.max_seq_len,
                position_table,
                position_table,
            )
            return ServedLength(position_table, f"{stated.source}, capped at the position table")
        logger.info("%s: serving at %d tokens (%s)", ckpt, stated.max_seq_len, stated.source)
        return stated
    chosen = min(DEFAULT_CAP, position_table)
    logger.warning(
        "%s does not say the length it was trained at; serving at %d tokens (the smaller of %d and "
        "its position table). If it was trained shorter, pass --max-seq-len N",
        ckpt,
        chosen,
        DEFAULT_CAP,
    )
    return ServedLength(chosen, "default")
