"""bert4torch's GPLinker relation-extraction example, built with bert4torch's own classes (test-only).

The model is the example's (``examples/relation_extraction/task_relation_extraction_gplinker.py``
in bert4torch 0.6.2): ``build_transformer_model`` for the encoder, a ``GlobalPointer`` entity
head (RoPE, lower triangle masked) and subject-object head / tail heads (no RoPE, no mask), or
``EfficientGlobalPointer`` heads. :func:`extract_spoes` decodes as the example does, with
bert4torch's ``Tokenizer`` and its ``rematch`` offsets.

bert4torch imports torchvision at import time, which BERT and GlobalPointer do not use and whose
PyPI wheels would replace the CPU torch: :func:`import_bert4torch` stubs it in this process when
it is not installed.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import torch


class _Unused:
    """What any attribute of the stubbed torchvision is: callable, subclassable, never used."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __call__(self, *args: object, **kwargs: object) -> _Unused:
        return _Unused()

    def __getattr__(self, name: str) -> _Unused:
        return _stub_attribute(name)

    def __mro_entries__(self, bases: tuple) -> tuple:
        return (object,)


def _stub_attribute(name: str) -> _Unused:
    if name.startswith("__"):  # inspect and importlib ask for __file__, __spec__...: not there
        raise AttributeError(name)
    return _Unused()


class _StubLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = _stub_attribute
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


class _TorchvisionStub(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object = None, target: object = None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, _StubLoader(), is_package=True)
        return None


def import_bert4torch() -> types.SimpleNamespace:
    """bert4torch's model builder, heads and tokenizer (no network: hub lookups off)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if importlib.util.find_spec("torchvision") is None and not any(
        isinstance(f, _TorchvisionStub) for f in sys.meta_path
    ):
        sys.meta_path.insert(0, _TorchvisionStub())
    from bert4torch.layers import EfficientGlobalPointer, GlobalPointer
    from bert4torch.models import BaseModel, build_transformer_model
    from bert4torch.tokenizers import Tokenizer

    return types.SimpleNamespace(
        BaseModel=BaseModel,
        build_transformer_model=build_transformer_model,
        GlobalPointer=GlobalPointer,
        EfficientGlobalPointer=EfficientGlobalPointer,
        Tokenizer=Tokenizer,
    )


def write_bert4torch_config(path: Path, vocab_size: int, **extra: object) -> Path:
    """A small BERT's ``bert4torch_config.json`` (the name bert4torch looks for)."""
    config = {
        "model": "bert", "vocab_size": vocab_size, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 64, "hidden_act": "gelu",
        "max_position_embeddings": 512, "type_vocab_size": 2, "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0, **extra,
    }  # fmt: skip
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def example_model(config_path: Path, n_predicates: int, efficient: bool = False, head_size: int = 16):
    """The example's ``Model`` (eval mode, random weights)."""
    b4t = import_bert4torch()
    head = b4t.EfficientGlobalPointer if efficient else b4t.GlobalPointer

    class Model(b4t.BaseModel):
        def __init__(self) -> None:
            super().__init__()
            self.bert = b4t.build_transformer_model(config_path=str(config_path))
            hidden = self.bert.config["hidden_size"]
            self.entity_output = head(hidden_size=hidden, heads=2, head_size=head_size)
            self.head_output = head(hidden, n_predicates, head_size, RoPE=False, tril_mask=False)
            self.tail_output = head(hidden, n_predicates, head_size, RoPE=False, tril_mask=False)

        def forward(self, *inputs):
            hidden_states = self.bert(list(inputs))
            mask = inputs[0].gt(0).long()
            return (
                self.entity_output(hidden_states, mask),
                self.head_output(hidden_states, mask),
                self.tail_output(hidden_states, mask),
            )

    return Model().eval()


def extract_spoes(model, tokenizer, text: str, predicates: list[str], maxlen: int) -> set[tuple]:
    """The example's decoding: (subject, predicate, object, subject start, object start) of
    ``text`` truncated at ``maxlen`` tokens; spans touching [CLS] / [SEP] (no characters) are left
    out, where the example would fail on them."""
    tokens = tokenizer.tokenize(text, maxlen=maxlen)
    mapping = tokenizer.rematch(text, tokens)
    token_ids, segment_ids = tokenizer.encode(text, maxlen=maxlen)
    with torch.no_grad():
        entity, head, tail = (
            x[0].numpy() for x in model(torch.tensor([token_ids]), torch.tensor([segment_ids]))
        )
    subjects, objects = set(), set()
    for label, start, end in zip(*np.where(entity > 0), strict=True):
        if mapping[start] and mapping[end]:
            (subjects if label == 0 else objects).add((int(start), int(end)))
    found = set()
    for sh, st in subjects:
        for oh, ot in objects:
            both = set(np.where(head[:, sh, oh] > 0)[0]) & set(np.where(tail[:, st, ot] > 0)[0])
            for p in both:
                s0, s1 = mapping[sh][0], mapping[st][-1] + 1
                o0, o1 = mapping[oh][0], mapping[ot][-1] + 1
                found.add((text[s0:s1], predicates[p], text[o0:o1], s0, o0))
    return found


def spread_heads_(model, tokenizer, text: str, fractions: tuple[float, float], std: float = 0.3) -> None:
    """Random head weights (``std``) with a q/k bias set per head (bisection) so that about
    ``fractions`` (entity, relation) of ``text``'s span cells are positive: a random model that
    decodes a few triples, not none and not every pair."""
    token_ids, segment_ids = tokenizer.encode(text)
    feeds = (torch.tensor([token_ids]), torch.tensor([segment_ids]))
    for index, (name, fraction) in enumerate(
        (("entity_output", fractions[0]), ("head_output", fractions[1]), ("tail_output", fractions[1]))
    ):
        gp = getattr(model, name)
        dense = gp.p_dense if hasattr(gp, "p_dense") else gp.dense
        with torch.no_grad():
            dense.weight.normal_(0.0, std, generator=torch.Generator().manual_seed(index))
        lo, hi = 0.0, 20.0
        for _ in range(25):
            mid = (lo + hi) / 2
            _set_offset(gp, dense, mid)
            with torch.no_grad():
                logits = model(*feeds)[index][0]
            cells = logits[torch.isfinite(logits) & (logits > -1e6)]
            lo, hi = (mid, hi) if (cells > 0).float().mean() > fraction else (lo, mid)
        _set_offset(gp, dense, hi)


def _set_offset(gp, dense, offset: float) -> None:
    """q / k biases of opposite sign on one feature pair of every head: logits shift down by about
    ``offset``^2 / sqrt(head size)."""
    hs = gp.head_size
    with torch.no_grad():
        if hasattr(gp, "p_dense"):  # one q / k projection shared by all heads
            dense.bias.zero_()
            dense.bias[hs - 2], dense.bias[2 * hs - 2] = offset, -offset
        else:
            bias = dense.bias.view(gp.heads, 2 * hs)
            bias.zero_()
            bias[:, hs - 2], bias[:, 2 * hs - 2] = offset, -offset
