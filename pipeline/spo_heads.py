"""GPLinker's relation heads scored only at candidate token pairs (pure numpy).

A dense GPLinker model emits ``so_head`` / ``so_tail`` as [P, L, L] maps per row: 263 MB a row at
P = 500, L = 256. Decoding reads them only where a subject and an object start (head map) or end
(tail map). A *sparse* model emits the encoder states instead, and this module applies the two
relation heads' projections to the candidate tokens alone, so a row costs
``candidates x hidden x P x head_size`` multiply-adds instead of ``P x L x L`` output floats.

The arithmetic is the bridge's own head (``conversion.models.spo_torch``, this project's layout;
checkpoints of other layouts are converted into it before export): GlobalPointer or Efficient
GlobalPointer, RoPE with features (i, i + hs/2) paired where the head uses it, logits divided by
sqrt(head_size), cells with start > end set to ``-MASK_FILL`` when the head masks the lower
triangle. The weights come from ``relation_heads.npz`` beside the model (read without pickle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MASK_FILL = 1e4  # what the dense model writes into masked cells (negated)
HEADS_FILE = "relation_heads.npz"
HEAD_NAMES = ("head", "tail")  # so_head: (subject head, object head); so_tail: (subject tail, object tail)


def rope(x: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """RoPE of ``x`` [n, ..., hs] at ``positions`` [n]: features (i, i + hs/2) rotated together."""
    hs = x.shape[-1]
    half = hs // 2
    inv_freq = np.exp(np.arange(half, dtype=np.float32) * np.float32(-2.0 / hs * math.log(10000.0)))
    angle = positions.astype(np.float32)[:, None] * inv_freq[None, :]  # [n, half]
    shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (half,)
    cos, sin = np.cos(angle).reshape(shape), np.sin(angle).reshape(shape)
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


@dataclass(frozen=True)
class PairHead:
    """One GlobalPointer head over ``heads`` channels, scoring chosen (start, end) token pairs.

    Plain GlobalPointer: its projection [heads * 2 * hs, hidden] gives each token per-channel
    (q, k), kept here split and transposed: ``q_weight`` / ``k_weight`` [hidden, heads * hs].
    Efficient GlobalPointer: one shared (q, k) projection, ``weight`` [hidden, 2 * hs], and
    per-channel start and end biases from it, ``bias_weight`` [2 * hs, 2 * heads].
    """

    heads: int
    head_size: int
    rope: bool
    tril_mask: bool
    q_weight: np.ndarray | None = None
    q_bias: np.ndarray | None = None
    k_weight: np.ndarray | None = None
    k_bias: np.ndarray | None = None
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    bias_weight: np.ndarray | None = None
    bias_bias: np.ndarray | None = None

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], heads: int, head_size: int, rope: bool, tril_mask: bool
    ) -> PairHead:
        """From the head's torch-layout arrays ``weight`` [out, H], ``bias`` [out] (and for an
        Efficient GlobalPointer ``bias_weight`` [2 * heads, 2 * hs], ``bias_bias``)."""
        w, b = arrays["weight"], arrays["bias"]
        if "bias_weight" in arrays:
            return cls(
                heads, head_size, rope, tril_mask, weight=np.ascontiguousarray(w.T), bias=b,
                bias_weight=np.ascontiguousarray(arrays["bias_weight"].T), bias_bias=arrays["bias_bias"],
            )  # fmt: skip
        w = w.reshape(heads, 2, head_size, -1)
        b = b.reshape(heads, 2, head_size)

        def part(i: int) -> tuple[np.ndarray, np.ndarray]:
            return np.ascontiguousarray(w[:, i].reshape(heads * head_size, -1).T), b[:, i].reshape(-1).copy()

        (qw, qb), (kw, kb) = part(0), part(1)
        return cls(heads, head_size, rope, tril_mask, q_weight=qw, q_bias=qb, k_weight=kw, k_bias=kb)

    @property
    def efficient(self) -> bool:
        return self.bias_weight is not None

    def scores(self, hidden: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Logits [heads, len(starts), len(ends)] of the pairs (starts[a], ends[b]) of one row;
        ``hidden`` [L, H] is the row's encoder output, token index = position."""
        hs = self.head_size
        starts, ends = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
        scale = np.float32(math.sqrt(hs))
        if self.efficient:
            xs = hidden[starts] @ self.weight + self.bias  # [a, 2hs]
            xe = hidden[ends] @ self.weight + self.bias
            q, k = xs[:, :hs], xe[:, hs:]
            if self.rope:
                q, k = rope(q, starts), rope(k, ends)
            shared = (q @ k.T) / scale  # [a, b]
            bias_s = (xs @ self.bias_weight + self.bias_bias)[:, : self.heads] / np.float32(2.0)
            bias_e = (xe @ self.bias_weight + self.bias_bias)[:, self.heads :] / np.float32(2.0)
            logits = shared[None] + bias_s.T[:, :, None] + bias_e.T[:, None, :]
        else:
            q = (hidden[starts] @ self.q_weight + self.q_bias).reshape(len(starts), self.heads, hs)
            k = (hidden[ends] @ self.k_weight + self.k_bias).reshape(len(ends), self.heads, hs)
            if self.rope:
                q, k = rope(q, starts), rope(k, ends)
            logits = np.matmul(q.transpose(1, 0, 2), k.transpose(1, 2, 0)) / scale  # [heads, a, b]
        if self.tril_mask:
            logits = np.where(starts[:, None] > ends[None, :], np.float32(-MASK_FILL), logits)
        return logits.astype(np.float32, copy=False)


@dataclass(frozen=True)
class RelationHeads:
    """The ``so_head`` and ``so_tail`` heads of a sparse SPO model."""

    head: PairHead
    tail: PairHead

    @property
    def num_predicates(self) -> int:
        return self.head.heads


def save_relation_heads(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write the heads' float32 arrays (keys ``head.weight``, ``head.bias``, optionally
    ``head.bias_weight`` / ``head.bias_bias``; the same for ``tail``) as an uncompressed npz."""
    np.savez(path, **{k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()})


def load_relation_heads(
    path: Path, heads: int, *, hidden_size: int, head_size: int, efficient: bool, rope: bool, tril_mask: bool
) -> RelationHeads:
    """The heads in ``path`` (no pickle) of ``heads`` predicates over ``hidden_size`` encoder
    features; ValueError names a missing or misshapen array."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    pair_heads = []
    for name in HEAD_NAMES:
        keys = ["weight", "bias"] + (["bias_weight", "bias_bias"] if efficient else [])
        missing = [f"{name}.{k}" for k in keys if f"{name}.{k}" not in arrays]
        if missing:
            raise ValueError(f"{path} lacks {', '.join(missing)}")
        got = {k: arrays[f"{name}.{k}"].astype(np.float32, copy=False) for k in keys}
        out = 2 * head_size if efficient else heads * 2 * head_size
        expected = {"weight": (out, hidden_size), "bias": (out,)}
        if efficient:
            expected |= {"bias_weight": (2 * heads, 2 * head_size), "bias_bias": (2 * heads,)}
        for k, shape in expected.items():
            actual = got[k].shape
            if actual != shape:
                raise ValueError(f"{path}: {name}.{k} has shape {actual}, expected {shape}")
        pair_heads.append(PairHead.from_arrays(got, heads, head_size, rope, tril_mask))
    return RelationHeads(*pair_heads)
