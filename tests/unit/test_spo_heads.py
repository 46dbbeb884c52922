"""The numpy relation heads (``pipeline.spo_heads``) against the PyTorch heads the model trains
with, and the sparse decoding path against the dense one on the same logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conversion.models.spo_torch import EfficientGlobalPointer, GlobalPointer
from pipeline.spo_decode import decode_spo, extract_cells, extract_sparse_cells
from pipeline.spo_heads import PairHead, RelationHeads, load_relation_heads, save_relation_heads

HIDDEN, HEADS, HS, LENGTH = 24, 7, 8, 30


def _torch_head(efficient: bool, rope: bool, tril: bool, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    cls = EfficientGlobalPointer if efficient else GlobalPointer
    head = cls(HIDDEN, HEADS, HS, rope, tril).eval()
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0.0, 0.5)
    return head


def _arrays(head: torch.nn.Module) -> dict[str, np.ndarray]:
    out = {"weight": head.dense.weight.detach().numpy(), "bias": head.dense.bias.detach().numpy()}
    if isinstance(head, EfficientGlobalPointer):
        out["bias_weight"] = head.bias_dense.weight.detach().numpy()
        out["bias_bias"] = head.bias_dense.bias.detach().numpy()
    return out


def _dense(head: torch.nn.Module, hidden: np.ndarray) -> np.ndarray:
    h = torch.from_numpy(hidden)[None]
    pos = torch.arange(hidden.shape[0], dtype=torch.float32)
    with torch.no_grad():
        return head(h, torch.ones(1, 1, LENGTH, LENGTH), pos)[0].numpy()


@pytest.mark.parametrize("efficient", [False, True])
@pytest.mark.parametrize("rope", [False, True])
@pytest.mark.parametrize("tril", [False, True])
def test_pair_scores_equal_the_torch_heads_cells(efficient, rope, tril) -> None:
    head = _torch_head(efficient, rope, tril, seed=3)
    hidden = np.random.default_rng(0).normal(size=(LENGTH, HIDDEN)).astype(np.float32)
    dense = _dense(head, hidden)
    ours = PairHead.from_arrays(_arrays(head), HEADS, HS, rope, tril)
    starts, ends = np.array([0, 3, 4, 17, 29]), np.array([1, 2, 3, 28])
    got = ours.scores(hidden, starts, ends)
    assert got.shape == (HEADS, 5, 4) and got.dtype == np.float32
    np.testing.assert_allclose(got, dense[:, starts][:, :, ends], atol=2e-5, rtol=1e-5)
    assert (got < -1e3).any() == tril  # start 3, 4, 17, 29 > end 2, 3: masked only with tril


def test_npz_round_trip_and_misshapen_or_pickled_files_are_refused(tmp_path) -> None:
    heads = [_torch_head(True, False, False, seed) for seed in (1, 2)]
    arrays = {
        f"{n}.{k}": v for n, h in zip(("head", "tail"), heads, strict=True) for k, v in _arrays(h).items()
    }
    path = tmp_path / "relation_heads.npz"
    save_relation_heads(path, arrays)
    shape = {"hidden_size": HIDDEN, "head_size": HS, "efficient": True, "rope": False, "tril_mask": False}
    loaded = load_relation_heads(path, HEADS, **shape)
    assert loaded.num_predicates == HEADS
    np.testing.assert_array_equal(loaded.tail.weight, arrays["tail.weight"].T)
    with pytest.raises(ValueError, match=r"head\.bias_weight has shape \(14, 16\), expected \(16, 16\)"):
        load_relation_heads(path, 8, **shape)
    np.savez(path, **{k: v for k, v in arrays.items() if k != "tail.bias_bias"})
    with pytest.raises(ValueError, match=r"lacks tail\.bias_bias"):
        load_relation_heads(path, HEADS, **shape)
    np.savez(path, **{**arrays, "head.weight": np.array([object()], dtype=object)})
    with pytest.raises(ValueError, match="pickle"):
        load_relation_heads(path, HEADS, **shape)


@pytest.mark.parametrize("efficient", [False, True])
def test_sparse_cells_and_triples_equal_the_dense_ones(efficient) -> None:
    """The same model's relation logits, dense or scored at the spans' pairs, decode alike."""
    head, tail = (_torch_head(efficient, False, False, seed) for seed in (5, 6))
    hidden = np.random.default_rng(1).normal(size=(LENGTH, HIDDEN)).astype(np.float32)
    so_head, so_tail = _dense(head, hidden), _dense(tail, hidden)
    rng = np.random.default_rng(2)
    threshold = float(np.quantile(np.concatenate([so_head.ravel(), so_tail.ravel()]), 0.7))
    spans = rng.random((2, LENGTH, LENGTH)) < 0.05
    entity = np.where(spans, threshold + 2.0, threshold - 5.0).astype(np.float32)
    heads = RelationHeads(*(PairHead.from_arrays(_arrays(h), HEADS, HS, False, False) for h in (head, tail)))
    dense = extract_cells(entity, so_head, so_tail, 1, LENGTH - 1, threshold)
    sparse = extract_sparse_cells(entity, hidden, heads, 1, LENGTH - 1, threshold)
    for name in ("subjects", "objects", "heads", "tails"):
        assert getattr(sparse, name).tolist() == getattr(dense, name).tolist(), name
    np.testing.assert_allclose(sparse.head_scores, dense.head_scores, atol=2e-5)
    offsets = [(i, i + 1) for i in range(LENGTH)]
    text, predicates = "字" * LENGTH, [f"p{i}" for i in range(HEADS)]
    triples = decode_spo(dense, offsets, text, predicates)
    assert len(triples) > 10
    assert decode_spo(sparse, offsets, text, predicates) == triples
