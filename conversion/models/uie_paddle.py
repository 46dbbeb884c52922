"""UIE (ERNIE encoder + start/end pointer heads) in Paddle dygraph, with a PaddleNLP checkpoint loader.

Parameter names match PaddleNLP's ``UIE`` (``ernie.embeddings.*``, ``ernie.encoder.layers.{i}.*``,
``ernie.pooler.dense.*``, ``linear_start``, ``linear_end``), so a ``model_state.pdparams`` written
by PaddleNLP loads without renaming. The forward pass has no Python control flow on tensor values,
so ``paddle.jit.to_static`` and paddle2onnx can convert it.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import paddle
from paddle import nn

from conversion.errors import CheckpointError
from conversion.models.paddle_state import read_paddle_state

logger = logging.getLogger(__name__)

MODEL_STATE = "model_state.pdparams"
WEIGHT_FILES = (MODEL_STATE, "model.safetensors")
CONFIG_FILE = "config.json"
LEGACY_CONFIG_FILE = "model_config.json"
VOCAB_FILE = "vocab.txt"

# Keys PaddleNLP writes into a state dict that are not parameters.
_IGNORED_KEYS = ("StructuredToParameterName@@",)
# Old Taskflow UIE checkpoints (``self.encoder = ErnieModel``) prefix the encoder with ``encoder.``.
_LEGACY_PREFIX, _PREFIX = "encoder.", "ernie."


@dataclass
class UIEConfig:
    """ERNIE/UIE hyper-parameters, named as in PaddleNLP's ``ErnieConfig`` (defaults: uie-base)."""

    vocab_size: int = 40000
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 2048
    type_vocab_size: int = 4
    task_type_vocab_size: int = 3
    use_task_id: bool = True
    task_id: int = 0
    pad_token_id: int = 0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UIEConfig:
        """Build from a PaddleNLP config dict; unknown keys are ignored.

        Older configs say ``sent_type_vocab_size`` for ``type_vocab_size`` and may omit
        ``intermediate_size`` (then ``4 * hidden_size``, ERNIE's default ratio).
        """
        data = dict(data)
        if "type_vocab_size" not in data and "sent_type_vocab_size" in data:
            data["type_vocab_size"] = data["sent_type_vocab_size"]
        if "intermediate_size" not in data and "hidden_size" in data:
            data["intermediate_size"] = 4 * int(data["hidden_size"])
        names = {f.name for f in fields(cls)}
        ignored = sorted(set(data) - names)
        if ignored:
            logger.debug("config keys ignored: %s", ignored)
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_checkpoint_dir(cls, path: str | Path) -> UIEConfig:
        """Read ``config.json`` (newer PaddleNLP) or ``model_config.json`` (older).

        The older file is ``{"init_args": [{...ernie config..., "init_class": "ErnieModel"}],
        "init_class": "UIE"}``; a flat ``model_config.json`` is accepted as well.
        """
        path = Path(path)
        new, old = path / CONFIG_FILE, path / LEGACY_CONFIG_FILE
        if new.is_file():
            return cls.from_dict(json.loads(new.read_text(encoding="utf-8")))
        if old.is_file():
            data = json.loads(old.read_text(encoding="utf-8"))
            args = data.get("init_args")
            if isinstance(args, list) and args and isinstance(args[0], dict):
                data = args[0]
            return cls.from_dict(data)
        raise CheckpointError(f"{path} has neither {CONFIG_FILE} nor {LEGACY_CONFIG_FILE}")

    def to_dict(self) -> dict[str, Any]:
        """The config as PaddleNLP writes it in ``config.json``."""
        return {"architectures": ["UIE"], "model_type": "ernie", **asdict(self)}

    def to_json(self, path: str | Path) -> Path:
        """Write ``config.json`` into directory ``path`` (or to ``path`` if it names a .json file)."""
        path = Path(path)
        target = path if path.suffix == ".json" else path / CONFIG_FILE
        target.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return target


class ErnieEmbeddings(nn.Layer):
    """Word + position + token-type (+ task-type) embeddings, then LayerNorm and dropout."""

    def __init__(self, config: UIEConfig, weight_attr: paddle.ParamAttr):
        super().__init__()
        h = config.hidden_size
        self.word_embeddings = nn.Embedding(
            config.vocab_size, h, padding_idx=config.pad_token_id, weight_attr=weight_attr
        )
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, h, weight_attr=weight_attr)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, h, weight_attr=weight_attr)
        self.use_task_id = config.use_task_id
        self.task_id = config.task_id
        if config.use_task_id:
            self.task_type_embeddings = nn.Embedding(config.task_type_vocab_size, h, weight_attr=weight_attr)
        self.layer_norm = nn.LayerNorm(h, epsilon=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids, position_ids):
        emb = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(position_ids)
            + self.token_type_embeddings(token_type_ids)
        )
        if self.use_task_id:  # a constructor flag, not a tensor value
            task_type_ids = paddle.full_like(input_ids, self.task_id)
            emb = emb + self.task_type_embeddings(task_type_ids)
        return self.dropout(self.layer_norm(emb))


class ErniePooler(nn.Layer):
    """Tanh(dense(h[CLS])); unused by UIE but part of PaddleNLP checkpoints."""

    def __init__(self, config: UIEConfig, weight_attr: paddle.ParamAttr):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, weight_attr=weight_attr)
        self.activation = nn.Tanh()

    def forward(self, hidden):
        return self.activation(self.dense(hidden[:, 0]))


class ErnieModel(nn.Layer):
    """ERNIE encoder: embeddings + post-norm ``paddle.nn.TransformerEncoder`` + pooler."""

    def __init__(self, config: UIEConfig):
        super().__init__()
        weight_attr = paddle.ParamAttr(
            initializer=nn.initializer.TruncatedNormal(mean=0.0, std=config.initializer_range)
        )
        self.embeddings = ErnieEmbeddings(config, weight_attr)
        layer = nn.TransformerEncoderLayer(
            config.hidden_size,
            config.num_attention_heads,
            config.intermediate_size,
            dropout=config.hidden_dropout_prob,
            activation=config.hidden_act,
            attn_dropout=config.attention_probs_dropout_prob,
            act_dropout=0,
            weight_attr=weight_attr,
            normalize_before=False,
            layer_norm_eps=config.layer_norm_eps,
        )
        self.encoder = nn.TransformerEncoder(layer, config.num_hidden_layers)
        self.pooler = ErniePooler(config, weight_attr)

    def forward(self, input_ids, token_type_ids, position_ids, attention_mask):
        # [B, L] 1/0 mask -> additive [B, 1, 1, L], as PaddleNLP does for a 2-D mask.
        mask = paddle.unsqueeze(attention_mask.astype("float32"), axis=[1, 2])
        mask = (1.0 - mask) * -1e4
        mask.stop_gradient = True
        hidden = self.embeddings(input_ids, token_type_ids, position_ids)
        seq = self.encoder(hidden, src_mask=mask)
        return seq, self.pooler(seq)


class UIE(nn.Layer):
    """UIE: start/end probabilities of each token answering the prompt.

    ``forward(input_ids, token_type_ids, position_ids, attention_mask)`` (int64 [B, L]) returns
    ``(start_prob, end_prob)``, float32 [B, L], sigmoid applied; padded positions
    (``attention_mask == 0``) are forced to 0.
    """

    def __init__(self, config: UIEConfig):
        super().__init__()
        self.config = config
        self.ernie = ErnieModel(config)
        self.linear_start = nn.Linear(config.hidden_size, 1)
        self.linear_end = nn.Linear(config.hidden_size, 1)
        self.sigmoid = nn.Sigmoid()

    def forward_logits(self, input_ids, token_type_ids, position_ids, attention_mask):
        """Start/end logits [B, L] before the sigmoid (for training with a BCE-with-logits loss)."""
        seq, _ = self.ernie(input_ids, token_type_ids, position_ids, attention_mask)
        start = paddle.squeeze(self.linear_start(seq), axis=-1)
        end = paddle.squeeze(self.linear_end(seq), axis=-1)
        return start, end

    def forward(self, input_ids, token_type_ids, position_ids, attention_mask):
        start, end = self.forward_logits(input_ids, token_type_ids, position_ids, attention_mask)
        keep = attention_mask.astype("float32")
        return self.sigmoid(start) * keep, self.sigmoid(end) * keep


def _normalize_state(state: dict[str, Any]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if key in _IGNORED_KEYS:
            continue
        if key.startswith(_LEGACY_PREFIX):
            key = _PREFIX + key[len(_LEGACY_PREFIX) :]
        arr = value.numpy() if isinstance(value, paddle.Tensor) else np.asarray(value)
        out[key] = arr
    return out


def load_state_strict(model: UIE, state: dict[str, Any]) -> None:
    """Set ``model``'s parameters from ``state``; raise :class:`CheckpointError` on any mismatch."""
    state = _normalize_state(state)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {expected[k]}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != expected[k]
    )
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"checkpoint does not match the config: missing={missing} unexpected={unexpected} "
            f"shape_mismatch={mismatched}"
        )
    model.set_state_dict({k: v.astype("float32") for k, v in state.items()})


def load_uie_checkpoint(ckpt_dir: str | Path) -> tuple[UIE, UIEConfig]:
    """Load a UIE checkpoint in PaddleNLP layout, in eval mode.

    The directory holds ``model_state.pdparams`` (Paddle's pickled format, read without running
    code: :mod:`conversion.models.paddle_state`) or ``model.safetensors``,
    ``config.json`` or ``model_config.json``, and ``vocab.txt``. Loading is strict: missing or
    unexpected parameters and shape mismatches raise :class:`CheckpointError`. Tolerated: the
    ``StructuredToParameterName@@`` bookkeeping entry and the ``encoder.`` prefix of old Taskflow
    checkpoints (read as ``ernie.``). The pooler is part of the model, so its keys are expected;
    non-float32 weights are cast to float32.
    """
    ckpt_dir = Path(ckpt_dir)
    vocab = ckpt_dir / VOCAB_FILE
    weights = next((ckpt_dir / n for n in WEIGHT_FILES if (ckpt_dir / n).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{ckpt_dir} has neither {MODEL_STATE} nor {WEIGHT_FILES[1]}")
    if not vocab.is_file():
        raise CheckpointError(f"{ckpt_dir} lacks {vocab.name}", "copy the training vocab there")
    config = UIEConfig.from_checkpoint_dir(ckpt_dir)
    model = UIE(config)
    load_state_strict(model, read_paddle_state(weights))
    model.eval()
    logger.info(
        "loaded UIE checkpoint %s (%d layers, hidden %d)",
        ckpt_dir,
        config.num_hidden_layers,
        config.hidden_size,
    )
    return model, config


def save_uie_checkpoint(model: UIE, config: UIEConfig, vocab_path: str | Path, ckpt_dir: str | Path) -> Path:
    """Write ``model_state.pdparams``, ``config.json`` and a copy of ``vocab.txt`` into ``ckpt_dir``."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    paddle.save(model.state_dict(), str(ckpt_dir / MODEL_STATE))
    config.to_json(ckpt_dir)
    if Path(vocab_path).resolve() != (ckpt_dir / VOCAB_FILE).resolve():
        shutil.copyfile(vocab_path, ckpt_dir / VOCAB_FILE)
    return ckpt_dir
