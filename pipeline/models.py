"""What the service knows about each served model before any engine is loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.config import IESettings, ModelSettings
from pipeline.errors import ModelLoadError
from pipeline.model_card import ModelCard, load_model_card
from pipeline.tokenizer import IETokenizer


@dataclass(frozen=True)
class ServedModel:
    """A model's settings, card and tokenizer."""

    name: str
    settings: ModelSettings
    card: ModelCard
    tokenizer: IETokenizer

    @property
    def dir(self) -> Path:
        return self.settings.dir

    @property
    def max_seq_len(self) -> int:
        return min(self.settings.max_seq_len, self.card.max_seq_len)


def load_served_models(ie: IESettings) -> dict[str, ServedModel]:
    """Read every configured model's card and vocab; errors name the missing or bad file."""
    served = {}
    for name, settings in ie.models.items():
        if not settings.dir.is_dir():
            raise ModelLoadError(
                f"model dir {settings.dir} (ie.models.{name}.dir) does not exist; "
                "build it with `python -m conversion.bridge build`"
            )
        card = load_model_card(settings.dir)
        if card.task != name:
            raise ModelLoadError(f"{settings.dir}/model_card.json is a {card.task!r} model, not {name!r}")
        vocab = settings.dir / card.vocab
        try:
            tokenizer = IETokenizer.from_file(vocab)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"cannot load vocab {vocab}: {e}") from e
        served[name] = ServedModel(name, settings, card, tokenizer)
    return served
