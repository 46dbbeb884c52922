"""UIE in PyTorch: an exact mirror of :class:`conversion.models.uie_paddle.UIE` for fast CPU training.

Same module and parameter names, same math; :func:`copy_torch_to_paddle` moves the weights into the
Paddle model by name (Linear weights transposed) and checks that both give the same outputs.
Paddle dygraph costs ~5x more per step than PyTorch for this tiny model on a CPU.
"""

from __future__ import annotations

import numpy as np
import paddle
import torch

from conversion.models.uie_paddle import UIE, UIEConfig


def sinusoidal_positions(n: int, dim: int, scale: float = 0.1) -> np.ndarray:
    """Transformer sinusoid table [n, dim]: an initialization that starts with relative structure."""
    pos = np.arange(n)[:, None]
    rates = 1.0 / np.power(10000.0, np.arange(0, dim, 2) / dim)
    table = np.zeros((n, dim), dtype="float32")
    table[:, 0::2] = np.sin(pos * rates)
    table[:, 1::2] = np.cos(pos * rates)
    return table * scale


class _TorchEmbeddings(torch.nn.Module):
    def __init__(self, c: UIEConfig):
        super().__init__()
        h = c.hidden_size
        self.word_embeddings = torch.nn.Embedding(c.vocab_size, h)
        self.position_embeddings = torch.nn.Embedding(c.max_position_embeddings, h)
        self.token_type_embeddings = torch.nn.Embedding(c.type_vocab_size, h)
        if c.use_task_id:
            self.task_type_embeddings = torch.nn.Embedding(c.task_type_vocab_size, h)
        self.layer_norm = torch.nn.LayerNorm(h, eps=c.layer_norm_eps)
        self.task_id = c.task_id if c.use_task_id else None

    def forward(self, input_ids, token_type_ids, position_ids):
        emb = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(position_ids)
            + self.token_type_embeddings(token_type_ids)
        )
        if self.task_id is not None:
            emb = emb + self.task_type_embeddings.weight[self.task_id]
        return self.layer_norm(emb)


class _TorchAttention(torch.nn.Module):
    """``paddle.nn.MultiHeadAttention`` math: scaled q, additive mask, softmax, out_proj."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.q_proj = torch.nn.Linear(hidden, hidden)
        self.k_proj = torch.nn.Linear(hidden, hidden)
        self.v_proj = torch.nn.Linear(hidden, hidden)
        self.out_proj = torch.nn.Linear(hidden, hidden)

    def forward(self, x, mask):
        b, n, h = x.shape

        def heads(t):
            return t.view(b, n, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        scores = torch.matmul(q * self.head_dim**-0.5, k.transpose(-1, -2)) + mask
        out = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h))


class _TorchLayer(torch.nn.Module):
    """``paddle.nn.TransformerEncoderLayer`` with ``normalize_before=False`` and GELU, no dropout."""

    def __init__(self, c: UIEConfig):
        super().__init__()
        h = c.hidden_size
        self.self_attn = _TorchAttention(h, c.num_attention_heads)
        self.linear1 = torch.nn.Linear(h, c.intermediate_size)
        self.linear2 = torch.nn.Linear(c.intermediate_size, h)
        self.norm1 = torch.nn.LayerNorm(h, eps=c.layer_norm_eps)
        self.norm2 = torch.nn.LayerNorm(h, eps=c.layer_norm_eps)

    def forward(self, x, mask):
        x = self.norm1(x + self.self_attn(x, mask))
        return self.norm2(x + self.linear2(torch.nn.functional.gelu(self.linear1(x))))


class _TorchEncoder(torch.nn.Module):
    def __init__(self, c: UIEConfig):
        super().__init__()
        self.layers = torch.nn.ModuleList(_TorchLayer(c) for _ in range(c.num_hidden_layers))


class _TorchPooler(torch.nn.Module):
    def __init__(self, c: UIEConfig):
        super().__init__()
        self.dense = torch.nn.Linear(c.hidden_size, c.hidden_size)


class _TorchErnie(torch.nn.Module):
    def __init__(self, c: UIEConfig):
        super().__init__()
        self.embeddings = _TorchEmbeddings(c)
        self.encoder = _TorchEncoder(c)
        self.pooler = _TorchPooler(c)


class TorchUIE(torch.nn.Module):
    """PyTorch mirror of :class:`UIE` (parameter names equal; Linear weights transposed).

    ``forward`` returns start/end *logits* [B, L]; dropout is not modelled (the demo uses none).
    """

    def __init__(self, config: UIEConfig):
        super().__init__()
        if config.hidden_dropout_prob or config.attention_probs_dropout_prob:
            raise ValueError("TorchUIE mirrors a dropout-free UIE only")
        if config.hidden_act != "gelu":
            raise ValueError(f"TorchUIE supports gelu only, not {config.hidden_act}")
        self.ernie = _TorchErnie(config)
        self.linear_start = torch.nn.Linear(config.hidden_size, 1)
        self.linear_end = torch.nn.Linear(config.hidden_size, 1)

    def forward(self, input_ids, token_type_ids, position_ids, attention_mask):
        mask = ((1.0 - attention_mask.to(torch.float32)) * -1e4)[:, None, None, :]
        x = self.ernie.embeddings(input_ids, token_type_ids, position_ids)
        for layer in self.ernie.encoder.layers:
            x = layer(x, mask)
        return self.linear_start(x).squeeze(-1), self.linear_end(x).squeeze(-1)


def init_torch_uie(model: TorchUIE, seed: int, position_scale: float = 0.5) -> None:
    """Demo initialization: N(0, 0.02) truncated embeddings, sinusoidal positions, and layer 0's
    key projection equal to its query projection (equal tokens attend to each other, which helps
    matching the subject in a relation prompt to its mention in the text)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embeddings" in name and "layer_norm" not in name:
                p.copy_(torch.fmod(torch.randn(p.shape, generator=gen), 2.0) * 0.02)
        pos = model.ernie.embeddings.position_embeddings.weight
        pos.copy_(torch.from_numpy(sinusoidal_positions(*pos.shape, scale=position_scale)))
        attn = model.ernie.encoder.layers[0].self_attn
        attn.k_proj.weight.copy_(attn.q_proj.weight)
        attn.k_proj.bias.copy_(attn.q_proj.bias)


def copy_torch_to_paddle(src: TorchUIE, dst: UIE, atol: float = 1e-5) -> float:
    """Copy ``src``'s weights into ``dst`` by parameter name and return the max output difference.

    Paddle ``Linear`` stores its weight as [in, out], PyTorch as [out, in]. Raises ValueError when
    names or shapes differ or the sigmoid outputs on a probe batch differ by more than ``atol``.
    """
    linear = {f"{n}.weight" for n, layer in dst.named_sublayers() if isinstance(layer, paddle.nn.Linear)}
    theirs = {k: v.detach().cpu().numpy() for k, v in src.state_dict().items()}
    mine = dst.state_dict()
    if set(theirs) != set(mine):
        raise ValueError(f"parameter names differ: {sorted(set(theirs) ^ set(mine))}")
    state = {}
    for name, value in mine.items():
        arr = theirs[name].T if name in linear else theirs[name]
        if tuple(arr.shape) != tuple(value.shape):
            raise ValueError(f"{name}: torch {arr.shape} vs paddle {tuple(value.shape)}")
        state[name] = np.ascontiguousarray(arr, dtype="float32")
    dst.set_state_dict(state)
    # probe: random ids with ragged lengths, both segments, padding
    rng = np.random.default_rng(0)
    vocab = dst.config.vocab_size
    ids = rng.integers(5, vocab, size=(4, 40)).astype("int64")
    types = np.zeros_like(ids)
    types[:, 10:] = 1
    mask = np.ones_like(ids)
    for i, n in enumerate((40, 31, 17, 8)):
        mask[i, n:] = 0
        ids[i, n:] = 0
        types[i, n:] = 0
    feed = [ids, types, np.broadcast_to(np.arange(40), ids.shape).copy(), mask]
    dst.eval()
    src.eval()
    with paddle.no_grad():
        ps, pe = (t.numpy() for t in dst(*(paddle.to_tensor(a) for a in feed)))
    with torch.no_grad():
        ts, te = (torch.sigmoid(t).numpy() * mask for t in src(*(torch.from_numpy(a) for a in feed)))
    diff = float(max(np.abs(ps - ts).max(), np.abs(pe - te).max()))
    if diff > atol:
        raise ValueError(f"Paddle and PyTorch outputs differ by {diff:.2e} > {atol}")
    return diff


_BERT_LAYER_NAMES = {
    "attention.self.query": "self_attn.q_proj",
    "attention.self.key": "self_attn.k_proj",
    "attention.self.value": "self_attn.v_proj",
    "attention.output.dense": "self_attn.out_proj",
    "attention.output.LayerNorm": "norm1",
    "intermediate.dense": "linear1",
    "output.dense": "linear2",
    "output.LayerNorm": "norm2",
}


def init_from_bert_encoder(model: TorchUIE, state: dict[str, torch.Tensor]) -> int:
    """Start ``model``'s encoder from a BERT encoder state dict (HF names, ``bert.`` prefix optional).

    Every encoder weight must be there with the same shape (ValueError otherwise), except the
    position table, of which the common rows are copied. BERT's segment 0 (the text of a
    single-text model) becomes UIE's text segment 1, and BERT's segment 1 the prompt's segment 0;
    the task-type embedding is zeroed so the sum of embeddings equals BERT's. Returns the number
    of tensors copied.
    """
    bert = {k.removeprefix("bert."): v for k, v in state.items()}
    ours = dict(model.named_parameters())
    copied = 0

    def put(src: str, dst: str) -> None:
        nonlocal copied
        if src not in bert:
            raise ValueError(f"BERT state lacks {src}")
        if bert[src].shape != ours[dst].shape:
            raise ValueError(f"{src} is {tuple(bert[src].shape)}, {dst} is {tuple(ours[dst].shape)}")
        with torch.no_grad():
            ours[dst].copy_(bert[src])
        copied += 1

    put("embeddings.word_embeddings.weight", "ernie.embeddings.word_embeddings.weight")
    put("embeddings.LayerNorm.weight", "ernie.embeddings.layer_norm.weight")
    put("embeddings.LayerNorm.bias", "ernie.embeddings.layer_norm.bias")
    emb = model.ernie.embeddings
    with torch.no_grad():
        pos = bert["embeddings.position_embeddings.weight"]
        n = min(pos.shape[0], emb.position_embeddings.weight.shape[0])
        emb.position_embeddings.weight[:n] = pos[:n]
        types = bert["embeddings.token_type_embeddings.weight"]
        emb.token_type_embeddings.weight[1] = types[0]
        emb.token_type_embeddings.weight[0] = types[1] if types.shape[0] > 1 else types[0]
        if getattr(emb, "task_id", None) is not None:
            emb.task_type_embeddings.weight.zero_()
    copied += 2
    for i in range(len(model.ernie.encoder.layers)):
        for src, dst in _BERT_LAYER_NAMES.items():
            for kind in ("weight", "bias"):
                put(f"encoder.layer.{i}.{src}.{kind}", f"ernie.encoder.layers.{i}.{dst}.{kind}")
    return copied


def init_matching_head(model: TorchUIE, head: int = 0, score: float = 5.0) -> float:
    """Make one attention head of layer 0 a token-matching head: equal tokens attend to each other.

    Query and key of ``head`` both become the projection of the centred input onto the
    ``head_dim`` principal directions of the embedded vocabulary (text segment, position 0),
    scaled so that a token scores ``score`` against itself on average there; the head's value
    and output weights are kept.
    A relation prompt ``X的P`` then lets X's mention in the text see its copy in the prompt,
    which a model started from a single-text encoder has not learnt. Returns the scale used.
    """
    emb = model.ernie.embeddings
    attn = model.ernie.encoder.layers[0].self_attn
    d = attn.head_dim
    rows = slice(head * d, (head + 1) * d)
    with torch.no_grad():
        ids = torch.arange(emb.word_embeddings.num_embeddings)[None, :]
        x = emb(ids, torch.ones_like(ids), torch.zeros_like(ids))[0]
        mean = x.mean(0)
        _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
        proj = vh[:d]  # [d, hidden]
        self_score = (((x - mean) @ proj.T) ** 2).sum(-1).mean() * d**-0.5
        scale = float((score / self_score).sqrt())
        for lin in (attn.q_proj, attn.k_proj):  # q = k = scale * proj @ (x - mean)
            lin.weight[rows] = scale * proj
            lin.bias[rows] = -scale * proj @ mean
    return scale
