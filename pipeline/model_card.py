"""``serving_model/<name>/model_card.json``: what a served model is and where its files are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from pipeline.errors import ModelLoadError
from pipeline.tokenizer import TokenizerSettings

CARD_NAME = "model_card.json"


class Predicate(BaseModel):
    name: str
    subject_type: str | None = None
    object_type: str | None = None


class Reading(BaseModel):
    """How the model reads texts: the settings it was trained or checked with (Taskflow's defaults
    for a checkpoint converted as it is)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    split_sentence: bool = False  # UIE: sentence by sentence (Taskflow's split_sentence)
    anchor_children: bool = True  # UIE: a child prompt asks only the windows holding its parent
    window_overlap: int | None = Field(default=None, ge=0)  # None: half a window


class TokenizerCard(BaseModel):
    """How the model's tokenizer reads text: its checkpoint's ``tokenizer_config.json`` resolved to
    explicit booleans (the default is BERT's: lowercase and strip accents)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lowercase: StrictBool = True
    strip_accents: StrictBool = True

    @classmethod
    def from_settings(cls, settings: TokenizerSettings) -> TokenizerCard:
        """The card section for ``settings`` (``strip_accents=None`` resolved)."""
        return cls(lowercase=settings.lowercase, strip_accents=settings.effective_strip_accents)

    @property
    def settings(self) -> TokenizerSettings:
        """The settings to build the tokenizer with."""
        return TokenizerSettings(lowercase=self.lowercase, strip_accents=self.strip_accents)


class PaddleFiles(BaseModel):
    """The Paddle inference model's files, relative to the model directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    params: str


class OnednnVerdict(BaseModel):
    """The bridge's check of the serving model with Paddle's oneDNN on against it off."""

    model_config = ConfigDict(extra="allow", frozen=True)

    ok: bool
    max_abs_diff: float | None = None


class Int8Card(BaseModel):
    """The bridge's INT8 ONNX file (ONNX Runtime dynamic quantization) and its measured accuracy."""

    model_config = ConfigDict(extra="allow", frozen=True)

    file: str
    accuracy: dict[str, Any] = {}


class RelationHeadsCard(BaseModel):
    """A sparse SPO model's relation heads (``so_head``, ``so_tail``), kept beside the model: the
    engine emits the encoder states (output ``hidden``) and the heads are scored at the candidate
    pairs only (``pipeline.spo_heads``). A card without it is a dense model (``so_head`` and
    ``so_tail`` [B, P, L, L] are engine outputs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = "relation_heads.npz"
    hidden_size: int = Field(ge=1)  # features per token of the output ``hidden``
    efficient: StrictBool  # Efficient GlobalPointer (else plain GlobalPointer)
    head_size: int = Field(ge=2, multiple_of=2)
    rope: StrictBool
    tril_mask: StrictBool = False


class ModelCard(BaseModel):
    """The model facts the service relies on; the card is their one home (other keys are kept,
    unread)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    task: Literal["uie", "spo"]
    version: str = Field(default="1", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
    max_seq_len: int
    vocab: str = "vocab.txt"
    inputs: list[str]
    outputs: list[str]
    output_axes: dict[str, dict[int, Literal["batch", "seq"]]] = {}  # dynamic axes of each output
    onnx_file: str = "model.onnx"
    serving_server: str = "serving_server"
    entity_types: list[str] = []
    predicates: list[Predicate] = []
    schema_example: Any = None
    reading: Reading = Reading()
    tokenizer: TokenizerCard = TokenizerCard()
    paddle_files: PaddleFiles | None = None
    paddle_onednn: OnednnVerdict | None = None
    int8: Int8Card | None = None
    verified_max_batch: int | None = Field(default=None, ge=1, description="rows per engine call checked")
    relation_heads: RelationHeadsCard | None = None  # spo: sparse decoding (None: dense outputs)

    @property
    def example_schema(self) -> Any:
        """A UIE schema to show or try: the card's example, else its first entity type."""
        return self.schema_example or (self.entity_types[:1] or ["人物"])

    def onnx_path(self, model_dir: Path, precision: str = "fp32") -> Path:
        """The ONNX file to serve at ``precision`` (``fp32`` | ``int8``); ModelLoadError when the
        bridge wrote no INT8 file for this model."""
        if precision == "fp32":
            return Path(model_dir) / self.onnx_file
        if self.int8 is None:
            raise ModelLoadError(
                f"{Path(model_dir) / CARD_NAME} names no INT8 model: build it with "
                "`python -m conversion.bridge build` (its INT8 hop) or serve precision fp32"
            )
        return Path(model_dir) / self.int8.file

    def output_bytes_per_row(self, length: int) -> int:
        """Bytes of (float32) engine outputs for one row of ``length`` tokens."""
        if self.task == "uie":
            floats = 2 * length  # start_prob, end_prob
        elif self.relation_heads is not None:
            floats = 2 * length * length + length * self.relation_heads.hidden_size  # entity, hidden
        else:
            floats = (2 + 2 * len(self.predicates)) * length * length  # entity, so_head, so_tail
        return 4 * floats

    @property
    def predicate_names(self) -> list[str]:
        return [p.name for p in self.predicates]


def load_model_card(model_dir: str | Path) -> ModelCard:
    """Read and validate the card in ``model_dir``; errors name the file."""
    path = Path(model_dir) / CARD_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ModelLoadError(
            f"missing {path}: build the models with `python -m conversion.bridge build`"
        ) from e
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from e
    try:
        card = ModelCard.model_validate(data)
    except ValidationError as e:
        raise ModelLoadError(f"{path}: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from e
    if card.task == "spo" and not card.predicates:
        raise ModelLoadError(f"{path}: an spo model card must list its predicates")
    needed = ("entity", "hidden") if card.relation_heads else ("entity", "so_head", "so_tail")
    if card.task == "spo" and tuple(card.outputs) != needed:
        kind = "a sparse" if card.relation_heads else "a dense"
        raise ModelLoadError(
            f"{path}: the outputs of {kind} spo model are {list(needed)}, not {card.outputs}"
        )
    return card


def load_relation_heads_of(model_dir: str | Path, card: ModelCard):
    """The sparse SPO model's relation heads (``pipeline.spo_heads.RelationHeads``), or None for a
    dense one; ModelLoadError names a missing or bad file."""
    from pipeline.spo_heads import load_relation_heads

    spec = card.relation_heads
    if spec is None:
        return None
    path = Path(model_dir) / spec.file
    try:
        return load_relation_heads(path, len(card.predicates), **spec.model_dump(exclude={"file"}))
    except FileNotFoundError:
        raise ModelLoadError(
            f"missing {path} (model_card.json relation_heads): rebuild the model with the bridge"
        ) from None
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from None
