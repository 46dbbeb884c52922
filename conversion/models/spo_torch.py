"""BERT encoder + GlobalPointer heads (GPLinker) for SPO extraction, in PyTorch.

Written so that the ONNX export (opset 13) converts with X2Paddle 1.6.0: plain MatMul attention,
reshapes with -1, additive masks with large finite negatives, erf GELU, positions from arange.
Encoder parameter names follow a HF ``BertModel`` checkpoint under the prefix ``bert.``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

NEG = 1e4  # magnitude of the additive masks (finite, no -inf)
CONFIG_FILE, WEIGHTS_FILE, PREDICATES_FILE = "config.json", "model.pt", "predicates.json"


@dataclass
class SPOConfig:
    """Model hyper-parameters; JSON keys are HF ``BertConfig`` names plus GPLinker ones."""

    vocab_size: int
    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 512
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    num_predicates: int = 1
    head_size: int = 64
    efficient_heads: bool = False  # EfficientGlobalPointer or plain GlobalPointer heads
    relation_rope: bool = False  # RoPE in so_head / so_tail too (learned much slower in trials)
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"  # one of ACTIVATIONS
    initializer_range: float = 0.02  # std of the HF-style normal init (0: PyTorch default init)
    position_init_scale: float = 0.02  # sinusoidal position table times this (learned afterwards)
    relation_init_offset: float = 8.0  # so_head/so_tail logits start near -this (biases of q, k)
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1

    @classmethod
    def from_json(cls, path: str | Path, **overrides: object) -> SPOConfig:
        """Read a config.json (unknown HF keys are ignored); ``overrides`` win over the file."""
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in raw.items() if k in known}
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_json(self, path: str | Path) -> None:
        """Write a HF-compatible config.json."""
        data = {"model_type": "bert", "pad_token_id": 0, **asdict(self)}
        Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh approximation (HF ``gelu_new`` / ``gelu_pytorch_tanh``); x*x*x, not Pow, for X2Paddle."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


# HF ``hidden_act`` names of the activations BERT checkpoints use -> the function exported here
ACTIVATIONS = {
    "gelu": _gelu,
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "relu": torch.relu,
}


def _sinusoid_(weight: torch.Tensor) -> None:
    """Fill a [max_pos, hidden] table with sinusoidal position encodings (a smooth start for training)."""
    n, d = weight.shape
    pos = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    inv = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    with torch.no_grad():
        weight.zero_()
        weight[:, 0::2] = torch.sin(pos * inv)
        weight[:, 1::2] = torch.cos(pos * inv)[:, : d // 2]


def init_bert_weights_(module: nn.Module, std: float) -> None:
    """HF BERT init: Linear/Embedding weights N(0, std), zero biases and padding rows, LayerNorm 1/0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, std)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: SPOConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, position_ids: torch.Tensor
    ) -> torch.Tensor:
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(position_ids).unsqueeze(0)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: SPOConfig):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.attention_probs_dropout_prob)

    def _split(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        return x.reshape(batch, -1, self.num_heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        q, k, v = self._split(self.query(x), b), self._split(self.key(x), b), self._split(self.value(x), b)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + additive_mask
        probs = self.dropout(torch.softmax(scores, dim=-1))
        ctx = torch.matmul(probs, v).permute(0, 2, 1, 3)
        return ctx.reshape(b, -1, self.num_heads * self.head_dim)


class BertSelfOutput(nn.Module):
    def __init__(self, cfg: SPOConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class BertAttention(nn.Module):
    def __init__(self, cfg: SPOConfig):
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertSelfOutput(cfg)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, additive_mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: SPOConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        if cfg.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {cfg.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")
        self.act = ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class BertOutput(BertSelfOutput):
    def __init__(self, cfg: SPOConfig):
        super().__init__(cfg)
        self.dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)


class BertLayer(nn.Module):
    def __init__(self, cfg: SPOConfig):
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertOutput(cfg)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        a = self.attention(x, additive_mask)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    def __init__(self, cfg: SPOConfig):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(cfg) for _ in range(cfg.num_hidden_layers)])

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, additive_mask)
        return x


class BertModel(nn.Module):
    """Embeddings + Transformer encoder (no pooler); returns the sequence output [B, L, H]."""

    def __init__(self, cfg: SPOConfig):
        super().__init__()
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
    ) -> torch.Tensor:
        mask = attention_mask.to(torch.float32).unsqueeze(1).unsqueeze(2)  # [B, 1, 1, L]
        additive = (1.0 - mask) * -NEG
        return self.encoder(self.embeddings(input_ids, token_type_ids, position_ids), additive)


def _rope_pair(x: torch.Tensor, pos: torch.Tensor, hs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE-rotated (q, k) from ``x`` [..., L, 2*hs] (q = first hs features, k = the rest).

    Pairs (i, i + hs/2) are rotated; every slice is taken from ``x`` directly (nested slices of
    slices are miscomputed by the X2Paddle-exported static Paddle graph), and cos and sin come out
    of ONE Cos op (sin a = cos(a - pi/2)): Paddle's PIR inplace pass corrupts a tensor read by both
    a Cos and a Sin op.
    """
    half = hs // 2
    idx = torch.arange(hs, device=x.device) % half
    inv_freq = torch.exp(idx.to(torch.float32) * (-2.0 / hs * math.log(10000.0)))
    phase = (torch.arange(hs, device=x.device) >= half).to(torch.float32) * (-math.pi / 2)
    trig = torch.cos(pos.unsqueeze(1) * inv_freq.unsqueeze(0) + phase.unsqueeze(0))  # [L, hs]
    cos, sin = trig[:, :half], trig[:, half:]
    q1, q2 = x[..., :half], x[..., half:hs]
    k1, k2 = x[..., hs : hs + half], x[..., hs + half :]
    q = torch.cat([q1 * cos - q2 * sin, q2 * cos + q1 * sin], dim=-1)
    k = torch.cat([k1 * cos - k2 * sin, k2 * cos + k1 * sin], dim=-1)
    return q, k


def _mask_logits(
    logits: torch.Tensor, pair_mask: torch.Tensor, pos: torch.Tensor, tril_mask: bool
) -> torch.Tensor:
    """Set padded rows/cols (and start > end cells if ``tril_mask``) to exactly -NEG."""
    if tril_mask:
        upper = (pos.unsqueeze(1) <= pos.unsqueeze(0)).to(torch.float32)  # 0 where start > end
        pair_mask = pair_mask * upper
    return logits * pair_mask - (1.0 - pair_mask) * NEG


class GlobalPointer(nn.Module):
    """Span scores [B, heads, L, L] from per-head start/end projections (optionally RoPE, tril mask)."""

    def __init__(self, hidden_size: int, heads: int, head_size: int, rope: bool, tril_mask: bool):
        super().__init__()
        self.heads, self.head_size = heads, head_size
        self.rope, self.tril_mask = rope, tril_mask
        self.dense = nn.Linear(hidden_size, heads * head_size * 2)

    def forward(self, h: torch.Tensor, pair_mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        b, hs = h.shape[0], self.head_size
        x = self.dense(h).reshape(b, -1, self.heads, 2 * hs).permute(0, 2, 1, 3)
        if self.rope:
            q, k = _rope_pair(x, pos, hs)
        else:
            q, k = x[..., :hs], x[..., hs:]
        logits = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(hs)
        return _mask_logits(logits, pair_mask, pos, self.tril_mask)


class EfficientGlobalPointer(nn.Module):
    """Efficient GlobalPointer: one shared span score plus per-head start/end biases -> [B, heads, L, L]."""

    def __init__(self, hidden_size: int, heads: int, head_size: int, rope: bool, tril_mask: bool):
        super().__init__()
        self.heads, self.head_size = heads, head_size
        self.rope, self.tril_mask = rope, tril_mask
        self.dense = nn.Linear(hidden_size, head_size * 2)
        self.bias_dense = nn.Linear(head_size * 2, heads * 2)

    def forward(self, h: torch.Tensor, pair_mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        hs = self.head_size
        x = self.dense(h)  # [B, L, 2hs]
        if self.rope:
            q, k = _rope_pair(x, pos, hs)
        else:
            q, k = x[..., :hs], x[..., hs:]
        logits = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(hs)  # [B, L, L]
        bias = self.bias_dense(x).permute(0, 2, 1) / 2.0  # [B, 2*heads, L]
        logits = logits.unsqueeze(1) + bias[:, : self.heads].unsqueeze(3) + bias[:, self.heads :].unsqueeze(2)
        return _mask_logits(logits, pair_mask, pos, self.tril_mask)


def offset_init_(head: GlobalPointer, offset: float) -> None:
    """Set the q / k biases to +a / -a so every (non-RoPE) logit starts near ``-offset``.

    Most relation cells are negative: starting there skips the first phase of training.
    """
    hs = head.head_size
    a = math.sqrt(offset * math.sqrt(hs) / hs)
    with torch.no_grad():
        bias = head.dense.bias.view(head.heads, 2 * hs)
        bias[:, :hs] = a
        bias[:, hs:] = -a


class SPOModel(nn.Module):
    """BERT + GPLinker heads: ``entity`` [B,2,L,L], ``so_head`` / ``so_tail`` [B,P,L,L] logits."""

    def __init__(self, cfg: SPOConfig):
        super().__init__()
        self.config = cfg
        self.bert = BertModel(cfg)
        h, gp = cfg.hidden_size, EfficientGlobalPointer if cfg.efficient_heads else GlobalPointer
        self.entity_head = gp(h, 2, cfg.head_size, rope=True, tril_mask=True)
        rr = cfg.relation_rope
        self.head_head = gp(h, cfg.num_predicates, cfg.head_size, rope=rr, tril_mask=False)
        self.tail_head = gp(h, cfg.num_predicates, cfg.head_size, rope=rr, tril_mask=False)
        if cfg.initializer_range > 0:
            init_bert_weights_(self, cfg.initializer_range)
        _sinusoid_(self.bert.embeddings.position_embeddings.weight)
        with torch.no_grad():
            self.bert.embeddings.position_embeddings.weight.mul_(cfg.position_init_scale)
        if cfg.relation_init_offset > 0 and not cfg.efficient_heads:
            for head in (self.head_head, self.tail_head):
                offset_init_(head, cfg.relation_init_offset)

    def _encode(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, attention_mask: torch.Tensor,
        position_offset: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """(sequence output [B, L, H], pair mask [B, 1, L, L], positions [L])."""
        position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)
        if isinstance(position_offset, int) and position_offset:  # a plain int: never traced
            position_ids = position_ids + position_offset
        seq = self.bert(input_ids, token_type_ids, attention_mask, position_ids)
        m = attention_mask.to(torch.float32)
        pair_mask = m.unsqueeze(1).unsqueeze(3) * m.unsqueeze(1).unsqueeze(2)  # [B, 1, L, L]
        return seq, pair_mask, position_ids.to(torch.float32)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_offset: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits for int64 [B, L] inputs; ``position_offset`` shifts positions (training only)."""
        seq, pair_mask, pos = self._encode(input_ids, token_type_ids, attention_mask, position_offset)
        return (
            self.entity_head(seq, pair_mask, pos),
            self.head_head(seq, pair_mask, pos),
            self.tail_head(seq, pair_mask, pos),
        )

    def entity_and_hidden(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The sparse model's outputs: ``entity`` [B, 2, L, L] logits and the encoder states
        ``hidden`` [B, L, H] the relation heads read (:func:`relation_head_arrays`)."""
        seq, pair_mask, pos = self._encode(input_ids, token_type_ids, attention_mask)
        return self.entity_head(seq, pair_mask, pos), seq


class SparseSPOModel(nn.Module):
    """What a sparse SPO model exports: :meth:`SPOModel.entity_and_hidden` (the relation heads
    stay out of the graph and are scored at candidate pairs by ``pipeline.spo_heads``)."""

    def __init__(self, model: SPOModel):
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.entity_and_hidden(input_ids, token_type_ids, attention_mask)


def relation_head_arrays(model: SPOModel) -> dict[str, object]:
    """The relation heads' weights as float32 numpy arrays (``pipeline.spo_heads`` names:
    ``head.weight``, ``head.bias``, and for Efficient GlobalPointer ``head.bias_weight``,
    ``head.bias_bias``; the same for ``tail``)."""
    out: dict[str, object] = {}
    for name, head in (("head", model.head_head), ("tail", model.tail_head)):
        out[f"{name}.weight"] = head.dense.weight.detach().float().numpy()
        out[f"{name}.bias"] = head.dense.bias.detach().float().numpy()
        if isinstance(head, EfficientGlobalPointer):
            out[f"{name}.bias_weight"] = head.bias_dense.weight.detach().float().numpy()
            out[f"{name}.bias_bias"] = head.bias_dense.bias.detach().float().numpy()
    return out


def relation_heads_card(model: SPOModel) -> dict[str, object]:
    """The model card's ``relation_heads`` entry for ``model`` (``pipeline.model_card``)."""
    head = model.head_head
    return {
        "file": "relation_heads.npz",
        "hidden_size": model.config.hidden_size,
        "efficient": isinstance(head, EfficientGlobalPointer),
        "head_size": head.head_size,
        "rope": head.rope,
        "tril_mask": head.tril_mask,
    }


def save_spo_checkpoint(model: SPOModel, ckpt_dir: str | Path) -> Path:
    """Write config.json and model.pt (state dict) into ``ckpt_dir``."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    model.config.to_json(ckpt_dir / CONFIG_FILE)
    torch.save(model.state_dict(), ckpt_dir / WEIGHTS_FILE)
    return ckpt_dir
