"""``serving_model/<name>/model_card.json``: what a served model is and where its files are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.errors import ModelLoadError

CARD_NAME = "model_card.json"


class Predicate(BaseModel):
    name: str
    subject_type: str | None = None
    object_type: str | None = None


class ModelCard(BaseModel):
    """The parts of the model card the service relies on (other keys are kept, unread)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    task: Literal["uie", "spo"]
    max_seq_len: int
    vocab: str = "vocab.txt"
    inputs: list[str]
    outputs: list[str]
    onnx_file: str = "model.onnx"
    serving_server: str = "serving_server"
    entity_types: list[str] = []
    predicates: list[Predicate] = []
    schema_example: Any = None

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
    return card
