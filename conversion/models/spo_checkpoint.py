"""Reads an SPO checkpoint directory, as PyTorch GPLinker projects write it, into an :class:`SPOModel`.

A checkpoint directory holds ``config.json`` (HF ``BertConfig`` keys plus GPLinker ones; or
bert4torch's ``bert4torch_config.json``), ``predicates.json``, ``vocab.txt`` and one weights file:
``model.safetensors`` (read without pickle), ``pytorch_model.bin`` or ``model.pt``
(``torch.load(weights_only=True)``), or any one ``*.safetensors`` / ``*.bin`` / ``*.pt`` file.

The state dict may name the encoder as a HF ``BertModel`` does, or in bert4torch's own module
names (what its ``save_weights`` writes; translated as its ``variable_mapping()`` does), under any
prefix (``bert.``, ``encoder.``, none); HF's ``*.position_ids`` buffers and the unused pooler and
MLM parts are dropped. The three heads are found under this project's names or those of the
public GPLinker code (:data:`HEAD_NAMES`, or ``config.json``'s ``head_keys``). ``head_layout``
says how the heads were written (:data:`LAYOUTS`; bert4torch's when its encoder names are found):
their RoPE pairing, EfficientGlobalPointer q/k split and bias order are converted once, here,
into this project's layout, so the served model computes what the trained one did.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import torch

from conversion.errors import CheckpointError
from conversion.models.spo_torch import ACTIVATIONS, CONFIG_FILE, PREDICATES_FILE, SPOConfig, SPOModel

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pt")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
CONFIG_FILES = (CONFIG_FILE, "bert4torch_config.json")  # the first one present is read


@dataclass(frozen=True)
class HeadLayout:
    """How a GlobalPointer implementation lays out its projections.

    ``rope_pairs``: RoPE rotates features (i, i + hs/2) ("halves") or (2i, 2i+1) ("adjacent").
    ``efficient_qk``: EfficientGlobalPointer's q and k are the two halves of its projection, or
    its even and odd features ("interleaved"). ``bias_order``: EfficientGlobalPointer's per-head
    biases are all starts then all ends, or alternate (start, end) / (end, start).
    """

    name: str
    rope_pairs: Literal["halves", "adjacent"]
    efficient_qk: Literal["halves", "interleaved"]
    bias_order: Literal["starts_then_ends", "start_end", "end_start"]


LAYOUTS = {
    layout.name: layout
    for layout in (
        HeadLayout("ie", "halves", "halves", "starts_then_ends"),  # this project's own
        HeadLayout("bert4keras", "adjacent", "interleaved", "end_start"),  # bojone's GPLinker
        HeadLayout("bert4torch", "adjacent", "halves", "start_end"),
    )
}
OWN_LAYOUT = "ie"

# our head -> names the public GPLinker code gives it (this project's, bert4torch's example,
# other PyTorch ports)
HEAD_NAMES = {
    "entity_head": ("entity_head", "entity_output", "entity_model", "mention_detect"),
    "head_head": ("head_head", "head_output", "head_model", "s_o_head"),
    "tail_head": ("tail_head", "tail_output", "tail_model", "s_o_tail"),
}
# our projection -> names in GlobalPointer / EfficientGlobalPointer implementations
PROJECTION_NAMES = {"dense": ("dense", "p_dense"), "bias_dense": ("bias_dense", "q_dense")}
_DROPPED_SUFFIXES = ("position_ids",)
_DROPPED_PARTS = ("pooler.", "nsp.", "mlmDense.", "mlmLayerNorm.", "mlmDecoder.", "mlmBias")
_WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"

# bert4torch's BERT module names -> HF BertModel's (the mapping of bert4torch's variable_mapping())
_BERT4TORCH_NAMES = tuple(
    (re.compile(pattern), repl)
    for pattern, repl in (
        (r"^embeddings\.segment_embeddings\.", "embeddings.token_type_embeddings."),
        (r"^embeddings\.layerNorm\.", "embeddings.LayerNorm."),
        (r"^encoderLayer\.(\d+)\.multiHeadAttention\.q\.", r"encoder.layer.\1.attention.self.query."),
        (r"^encoderLayer\.(\d+)\.multiHeadAttention\.k\.", r"encoder.layer.\1.attention.self.key."),
        (r"^encoderLayer\.(\d+)\.multiHeadAttention\.v\.", r"encoder.layer.\1.attention.self.value."),
        (r"^encoderLayer\.(\d+)\.multiHeadAttention\.o\.", r"encoder.layer.\1.attention.output.dense."),
        (r"^encoderLayer\.(\d+)\.attnLayerNorm\.", r"encoder.layer.\1.attention.output.LayerNorm."),
        (r"^encoderLayer\.(\d+)\.feedForward\.intermediateDense\.", r"encoder.layer.\1.intermediate.dense."),
        (r"^encoderLayer\.(\d+)\.feedForward\.outputDense\.", r"encoder.layer.\1.output.dense."),
        (r"^encoderLayer\.(\d+)\.ffnLayerNorm\.", r"encoder.layer.\1.output.LayerNorm."),
    )
)
_BERT4TORCH_ENCODER = ("encoderLayer.",)
_BERT4TORCH_CONFIG_KEYS = (
    ("segment_vocab_size", "type_vocab_size"),
    ("max_position", "max_position_embeddings"),
)


# -- files -------------------------------------------------------------------------------------


def weights_file(ckpt_dir: Path) -> Path:
    """The checkpoint's one weights file: one of :data:`WEIGHT_FILES`, else the one file ending
    in :data:`WEIGHT_SUFFIXES` (as ``save_weights("best_model.pt")`` leaves it)."""
    found = [ckpt_dir / name for name in WEIGHT_FILES if (ckpt_dir / name).is_file()]
    if not found:
        found = sorted(p for p in ckpt_dir.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if not found:
        raise CheckpointError(
            f"{ckpt_dir} has no weights file",
            f"put the state dict there as one of {', '.join(WEIGHT_FILES)} "
            f"(or one file ending in {', '.join(WEIGHT_SUFFIXES)})",
        )
    if len(found) > 1:
        raise CheckpointError(
            f"{ckpt_dir} has several weights files ({', '.join(p.name for p in found)})",
            "keep the one to convert",
        )
    return found[0]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file; never runs code from it."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # every reader's own error types: corrupt, truncated, pickled code
        raise CheckpointError(
            f"{path} cannot be read as a state dict ({type(e).__name__})",
            "save model.state_dict() with safetensors.torch.save_file or torch.save",
        ) from e
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]  # a training-loop checkpoint that wraps the state dict
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a state dict of tensors", "save model.state_dict()")
    return dict(state)


def read_json(ckpt_dir: Path, name: str, fix: str) -> object:
    """``ckpt_dir/name`` parsed; a missing or broken file is a :class:`CheckpointError` (``fix``
    says what a missing one should hold)."""
    path = ckpt_dir / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{ckpt_dir} has no {name}", fix) from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None


def config_file(ckpt_dir: Path) -> str:
    """The name of the checkpoint's config file (:data:`CONFIG_FILES`)."""
    return next((name for name in CONFIG_FILES if (ckpt_dir / name).is_file()), CONFIG_FILE)


def read_config(ckpt_dir: Path) -> dict:
    """``config.json`` (or ``bert4torch_config.json``) as a dict."""
    name = config_file(ckpt_dir)
    raw = read_json(ckpt_dir, name, "save the model's BertConfig there")
    if not isinstance(raw, dict):
        raise CheckpointError(f"{ckpt_dir / name} is not a JSON object")
    for theirs, ours in _BERT4TORCH_CONFIG_KEYS:
        if theirs in raw and ours not in raw:
            raw[ours] = raw[theirs]
    return raw


def read_predicates(ckpt_dir: Path) -> list:
    """``predicates.json``: the predicates (names or objects), in the relation heads' order."""
    raw = read_json(
        ckpt_dir, PREDICATES_FILE, 'list the predicates in head order, e.g. ["出生地", "毕业院校"]'
    )
    if not isinstance(raw, list) or not raw:
        raise CheckpointError(
            f"{ckpt_dir / PREDICATES_FILE} must be a non-empty JSON list of predicates, in head order"
        )
    return raw


# -- keys --------------------------------------------------------------------------------------


def _encoder_prefix(state: Mapping[str, torch.Tensor], path: Path) -> str:
    prefixes = sorted(k[: -len(_WORD_EMBEDDINGS)] for k in state if k.endswith(_WORD_EMBEDDINGS))
    if len(prefixes) != 1:
        found = f"under {prefixes}" if prefixes else "none"
        raise CheckpointError(
            f"{path}: expected one BERT encoder (a key ending in {_WORD_EMBEDDINGS!r}), found {found}",
            "save a model with one HF BertModel inside",
        )
    return prefixes[0]


def _head_names(raw_config: dict, path: Path) -> dict[str, str]:
    """Our head -> the checkpoint's name for it (``head_keys`` in config.json wins)."""
    given = raw_config.get("head_keys")
    if given is None:
        return {}
    if not isinstance(given, dict) or set(given) - {"entity", "head", "tail"}:
        raise CheckpointError(
            f"{path.parent / config_file(path.parent)}: head_keys must map 'entity', 'head', 'tail' "
            "to module names",
            'e.g. "head_keys": {"entity": "ner", "head": "sub_obj_head", "tail": "sub_obj_tail"}',
        )
    return {f"{k}_head": v for k, v in given.items()}


@dataclass
class Renamed:
    """A state dict under this project's names."""

    state: dict[str, torch.Tensor]
    dropped: list[str]  # keys of parts the served model does not use
    foreign_heads: bool  # heads named otherwise than this project names them
    bert4torch_names: int = 0  # encoder keys translated from bert4torch's module names


def bert4torch_to_hf(state: Mapping[str, torch.Tensor], prefix: str) -> tuple[dict[str, torch.Tensor], int]:
    """``state`` with the encoder's bert4torch module names under ``prefix`` as HF's; the number
    of keys translated."""
    out: dict[str, torch.Tensor] = {}
    translated = 0
    for key, value in state.items():
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            for pattern, repl in _BERT4TORCH_NAMES:
                new, n = pattern.subn(repl, rest)
                if n:
                    key, translated = prefix + new, translated + 1
                    break
        out[key] = value
    return out, translated


def rename_keys(state: Mapping[str, torch.Tensor], raw_config: dict, path: Path) -> Renamed:
    """The state dict under this project's names (unknown keys are a :class:`CheckpointError`)."""
    prefix = _encoder_prefix(state, path)
    translated = 0
    if any(k.startswith(prefix + _BERT4TORCH_ENCODER[0]) for k in state):
        state, translated = bert4torch_to_hf(state, prefix)
    explicit = _head_names(raw_config, path)
    renamed: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    foreign = False
    for key, value in state.items():
        if key.startswith(prefix) and key[len(prefix) :].startswith(
            ("embeddings.", "encoder.", *_DROPPED_PARTS)
        ):
            rest = key[len(prefix) :]
            if rest.startswith(_DROPPED_PARTS) or rest.endswith(_DROPPED_SUFFIXES):
                dropped.append(key)
            else:
                renamed["bert." + rest] = value
            continue
        ours = _head_key(key, explicit)
        if ours is None:
            unknown.append(key)
        else:
            renamed[ours] = value
            foreign = foreign or ours != key
    if unknown:
        raise CheckpointError(
            f"{path}: keys neither of the BERT encoder (under {prefix!r}) nor of a GlobalPointer head: "
            f"{_some(unknown)}",
            "the encoder must be named as transformers' BertModel or bert4torch's BERT name it "
            "(save_pretrained or save_weights); heads named otherwise than "
            f"{', '.join(n for names in HEAD_NAMES.values() for n in names)} go in config.json's "
            'head_keys (e.g. {"entity": "ner", "head": "sh", "tail": "st"}); other parts must be '
            "left out of the saved state dict",
        )
    return Renamed(renamed, dropped, foreign, translated)


def _head_key(key: str, explicit: dict[str, str]) -> str | None:
    module, _, param = key.rpartition(".")
    owner, _, projection = module.rpartition(".")
    owner_name = owner.rpartition(".")[2]  # a head inside a wrapper module: "model.s_o_head"
    for ours, names in HEAD_NAMES.items():
        candidates = (explicit[ours],) if ours in explicit else names
        if owner in candidates or owner_name in candidates:
            for our_proj, proj_names in PROJECTION_NAMES.items():
                if projection in proj_names and param in ("weight", "bias"):
                    return f"{ours}.{our_proj}.{param}"
    return None


def _some(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f" (and {len(keys) - n} more)" if len(keys) > n else "")


# -- config ------------------------------------------------------------------------------------


def spo_config(raw: dict, state: Mapping[str, torch.Tensor], n_predicates: int, path: Path) -> SPOConfig:
    """The model's hyper-parameters: config.json, with the heads' sizes read off their weights."""
    where = path.parent / config_file(path.parent)
    act = raw.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise CheckpointError(
            f"{where}: hidden_act {act!r} is not supported",
            f"this bridge exports {', '.join(sorted(ACTIVATIONS))}",
        )
    entity = state.get("entity_head.dense.weight")
    if entity is None or "head_head.dense.weight" not in state or "tail_head.dense.weight" not in state:
        raise CheckpointError(
            f"{path}: the three GlobalPointer heads (entity, subject-object head, subject-object tail) "
            "were not all found",
            f"name them as one of {HEAD_NAMES} or say their names in config.json's head_keys",
        )
    efficient = "entity_head.bias_dense.weight" in state
    head_size = entity.shape[0] // 2 if efficient else entity.shape[0] // 4
    given = {f.name: raw[f.name] for f in fields(SPOConfig) if f.name in raw}
    for key, value in (
        ("efficient_heads", efficient),
        ("head_size", head_size),
        ("num_predicates", n_predicates),
    ):
        if key in given and given[key] != value:
            raise CheckpointError(f"{where}: {key} is {given[key]!r} but the weights say {value!r}")
        given[key] = value
    try:
        return SPOConfig(**given)
    except TypeError as e:
        raise CheckpointError(f"{where}: {e}") from None


def head_layout(raw: dict, renamed_heads: bool, path: Path, bert4torch_names: bool = False) -> HeadLayout:
    """The ``head_layout`` the checkpoint states; bert4torch's with its encoder names; heads under
    foreign names must state one."""
    name = raw.get("head_layout")
    where = path.parent / config_file(path.parent)
    if name is None and bert4torch_names:
        logger.info("%s: bert4torch's names, so its head layout (say head_layout if not)", path)
        name = "bert4torch"
    if name is None:
        if renamed_heads:
            raise CheckpointError(
                f"{where} does not say head_layout, and the heads are not named as this project names them",
                f'add "head_layout": one of {sorted(LAYOUTS)} (see README: bring your own SPO model)',
            )
        name = OWN_LAYOUT
    if name not in LAYOUTS:
        raise CheckpointError(f"{where}: head_layout {name!r} is not one of {sorted(LAYOUTS)}")
    return LAYOUTS[name]


# -- layout conversion -------------------------------------------------------------------------


def _pairing(hs: int, layout: HeadLayout) -> list[int]:
    """For each of our q (or k) features, the feature of ``layout`` it is (RoPE pairs kept)."""
    if layout.rope_pairs == "halves":
        return list(range(hs))
    return [2 * j for j in range(hs // 2)] + [2 * j + 1 for j in range(hs // 2)]


def _plain_rows(heads: int, hs: int, layout: HeadLayout) -> list[int]:
    pairing = _pairing(hs, layout)
    rows = []
    for h in range(heads):
        base = h * 2 * hs
        rows += [base + t for t in pairing] + [base + hs + t for t in pairing]
    return rows


def _efficient_rows(hs: int, layout: HeadLayout) -> list[int]:
    pairing = _pairing(hs, layout)
    if layout.efficient_qk == "halves":
        return [t for t in pairing] + [hs + t for t in pairing]
    return [2 * t for t in pairing] + [2 * t + 1 for t in pairing]


def _bias_rows(heads: int, layout: HeadLayout) -> list[int]:
    if layout.bias_order == "starts_then_ends":
        return list(range(2 * heads))
    start, end = (0, 1) if layout.bias_order == "start_end" else (1, 0)
    return [2 * h + start for h in range(heads)] + [2 * h + end for h in range(heads)]


def to_own_layout(
    state: dict[str, torch.Tensor], cfg: SPOConfig, layout: HeadLayout
) -> dict[str, torch.Tensor]:
    """The heads' projections reordered from ``layout`` into this project's (a no-op for "ie")."""
    if layout.name == OWN_LAYOUT:
        return state
    out = dict(state)
    hs = cfg.head_size
    for head, heads in (
        ("entity_head", 2),
        ("head_head", cfg.num_predicates),
        ("tail_head", cfg.num_predicates),
    ):
        if cfg.efficient_heads:
            rows = _efficient_rows(hs, layout)
            bias_rows = _bias_rows(heads, layout)
            for param in ("weight", "bias"):
                key = f"{head}.dense.{param}"
                out[key] = state[key][rows].contiguous()
            out[f"{head}.bias_dense.weight"] = state[f"{head}.bias_dense.weight"][bias_rows][
                :, rows
            ].contiguous()
            out[f"{head}.bias_dense.bias"] = state[f"{head}.bias_dense.bias"][bias_rows].contiguous()
        else:
            rows = _plain_rows(heads, hs, layout)
            for param in ("weight", "bias"):
                key = f"{head}.dense.{param}"
                out[key] = state[key][rows].contiguous()
    return out


def _zero_missing_biases(state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> list[str]:
    """Heads built with ``use_bias=False`` have no biases: zeros compute the same."""
    added = []
    for key, like in expected.items():
        weight = key[: -len("bias")] + "weight"
        if key.endswith(".bias") and not key.startswith("bert.") and key not in state and weight in state:
            state[key] = torch.zeros_like(like)
            added.append(key)
    return added


# -- the one entry point -----------------------------------------------------------------------


def load_spo_checkpoint(ckpt_dir: str | Path) -> SPOModel:
    """An :class:`SPOModel` (eval mode) computing what the checkpoint in ``ckpt_dir`` computes."""
    ckpt_dir = Path(ckpt_dir)
    raw = read_config(ckpt_dir)
    path = weights_file(ckpt_dir)
    renamed = rename_keys(read_state_dict(path), raw, path)
    if renamed.dropped:
        logger.info(
            "%s: dropped what the served model does not use: %s", path.name, ", ".join(renamed.dropped)
        )
    cfg = spo_config(raw, renamed.state, len(read_predicates(ckpt_dir)), path)
    if renamed.bert4torch_names:
        logger.info("%s: %d encoder keys read in bert4torch's names", path.name, renamed.bert4torch_names)
    layout = head_layout(raw, renamed.foreign_heads, path, renamed.bert4torch_names > 0)
    model = SPOModel(cfg)
    state = dict(renamed.state)
    zeroed = _zero_missing_biases(state, model.state_dict())
    if zeroed:
        logger.info(
            "%s: heads without biases (use_bias=False); zero biases: %s", path.name, ", ".join(zeroed)
        )
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError(f"{path}: missing {_some(missing)}", "save the whole model's state_dict()")
    wrong = [
        f"{k} {tuple(state[k].shape)} (model: {tuple(v.shape)})"
        for k, v in expected.items()
        if state[k].shape != v.shape
    ]
    if wrong:
        raise CheckpointError(
            f"{path}: shapes differ from config.json: {_some(wrong)}", "check config.json against the weights"
        )
    state = to_own_layout(state, cfg, layout)
    model.load_state_dict(state, strict=True)
    if layout.name != OWN_LAYOUT:
        logger.info("%s: heads converted from the %s layout", path.name, layout.name)
    return model.eval()
