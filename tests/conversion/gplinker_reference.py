"""Reference GPLinker models, written from the public formulas (test-only).

The encoder is ``transformers.BertModel`` itself; the heads follow the published GlobalPointer /
EfficientGlobalPointer formulations, each with its own parameter names and layout:

- ``bert4keras``: bojone's formulation (and the PyTorch ports of it): RoPE rotates adjacent
  pairs (2i, 2i+1) with a [sin0, cos0, sin1, cos1, ...] table; EfficientGlobalPointer takes q, k
  as the even / odd features of its projection and its biases alternate (end, start).
- ``bert4torch``: adjacent RoPE pairs too; EfficientGlobalPointer takes q, k as halves and its
  biases alternate (start, end).

Every model returns logits [B, heads, L, L] before any masking (masked cells are compared by
the tests separately), scaled by 1/sqrt(head_size) as the originals.
"""

from __future__ import annotations

import torch
from torch import nn

NEG_INF = -1e12


def _sin_cos_table(length: int, dim: int) -> torch.Tensor:
    """[L, dim] with (sin(p w_i), cos(p w_i)) at features (2i, 2i+1), w_i = 10000^(-2i/dim)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.pow(10000.0, -2.0 * torch.arange(dim // 2, dtype=torch.float32) / dim)
    angles = pos * freq
    return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).reshape(length, dim)


def rope_adjacent(x: torch.Tensor, seq_dim: int) -> torch.Tensor:
    """RoPE on the last dim of ``x``, rotating pairs (2i, 2i+1); positions along ``seq_dim``."""
    length, dim = x.shape[seq_dim], x.shape[-1]
    table = _sin_cos_table(length, dim)
    cos = table[:, 1::2].repeat_interleave(2, dim=-1)
    sin = table[:, ::2].repeat_interleave(2, dim=-1)
    shape = [1] * x.dim()
    shape[seq_dim], shape[-1] = length, dim
    rotated = torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).reshape(x.shape)
    return x * cos.reshape(shape) + rotated * sin.reshape(shape)


def _mask(logits: torch.Tensor, mask: torch.Tensor, tril: bool) -> torch.Tensor:
    m = mask.to(torch.bool)
    logits = logits.masked_fill(~m[:, None, :, None], NEG_INF).masked_fill(~m[:, None, None, :], NEG_INF)
    if tril:
        logits = logits + torch.tril(torch.ones_like(logits), -1) * NEG_INF
    return logits


class GlobalPointer(nn.Module):
    """One projection per head: q = first head_size features, k = the rest; adjacent RoPE."""

    def __init__(self, hidden: int, heads: int, head_size: int, rope: bool, tril: bool, bias: bool = True):
        super().__init__()
        self.heads, self.head_size, self.rope, self.tril = heads, head_size, rope, tril
        self.dense = nn.Linear(hidden, heads * head_size * 2, bias=bias)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.stack(torch.chunk(self.dense(h), self.heads, dim=-1), dim=-2)  # [B, L, heads, 2hs]
        qw, kw = x[..., : self.head_size], x[..., self.head_size :]
        if self.rope:
            qw, kw = rope_adjacent(qw, seq_dim=1), rope_adjacent(kw, seq_dim=1)
        logits = torch.einsum("bmhd,bnhd->bhmn", qw, kw)
        return _mask(logits, mask, self.tril) / self.head_size**0.5


class EfficientGlobalPointer(nn.Module):
    """A shared span score plus per-head start/end biases, in bert4keras' or bert4torch's layout."""

    def __init__(
        self, hidden: int, heads: int, head_size: int, rope: bool, tril: bool, layout: str, bias: bool = True
    ):
        super().__init__()
        self.heads, self.head_size, self.rope, self.tril, self.layout = heads, head_size, rope, tril, layout
        self.p_dense = nn.Linear(hidden, head_size * 2, bias=bias)
        self.q_dense = nn.Linear(head_size * 2, heads * 2, bias=bias)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.p_dense(h)  # [B, L, 2hs]
        if self.layout == "bert4keras":
            qw, kw = x[..., ::2], x[..., 1::2]
        else:
            qw, kw = x[..., : self.head_size], x[..., self.head_size :]
        if self.rope:
            qw, kw = rope_adjacent(qw, seq_dim=1), rope_adjacent(kw, seq_dim=1)
        logits = torch.einsum("bmd,bnd->bmn", qw, kw) / self.head_size**0.5
        if self.layout == "bert4keras":
            bias = self.q_dense(x).transpose(1, 2) / 2  # [B, 2heads, L]: (end, start) per head
            logits = logits[:, None] + bias[:, ::2, None] + bias[:, 1::2, :, None]
        else:
            bias = torch.stack(torch.chunk(self.q_dense(x), self.heads, dim=-1), dim=-2).transpose(1, 2) / 2
            logits = logits[:, None] + bias[..., :1] + bias[..., 1:].transpose(2, 3)  # (start, end)
        return _mask(logits, mask, self.tril)


class ReferenceGPLinker(nn.Module):
    """``transformers.BertModel`` + three heads, under the given module names."""

    def __init__(
        self,
        bert_config,
        predicates: int,
        head_size: int,
        layout: str,
        efficient: bool,
        encoder_name: str = "bert",
        head_names: tuple[str, str, str] = ("entity_output", "head_output", "tail_output"),
        bias: bool = True,
    ):
        super().__init__()
        from transformers import BertModel

        self.encoder_name, self.head_names = encoder_name, head_names
        setattr(self, encoder_name, BertModel(bert_config, add_pooling_layer=True))
        h = bert_config.hidden_size

        def head(heads: int, rope: bool, tril: bool) -> nn.Module:
            if efficient:
                return EfficientGlobalPointer(h, heads, head_size, rope, tril, layout, bias)
            return GlobalPointer(h, heads, head_size, rope, tril, bias)

        heads = (head(2, True, True), head(predicates, False, False), head(predicates, False, False))
        for name, module in zip(head_names, heads, strict=True):
            setattr(self, name, module)

    def forward(self, input_ids, token_type_ids, attention_mask):
        seq = getattr(self, self.encoder_name)(
            input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask
        ).last_hidden_state
        return tuple(getattr(self, name)(seq, attention_mask) for name in self.head_names)


def spread_head_weights_(model: ReferenceGPLinker, std: float = 0.3, seed: int = 0) -> None:
    """Larger random head weights, so that many cells are positive and decode to triples."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in model.head_names:
            for p in getattr(model, name).parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * (std if p.dim() > 1 else 1.0))
