"""What the service knows about each served model before any engine is loaded."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import TASKS, IESettings, ModelSettings
from pipeline.errors import ConfigError, ModelLoadError
from pipeline.model_card import ModelCard, load_model_card, load_relation_heads_of
from pipeline.spo_heads import RelationHeads
from pipeline.tokenizer import IETokenizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """A model's settings, card and tokenizer (and a sparse SPO model's relation heads)."""

    name: str
    settings: ModelSettings
    card: ModelCard
    tokenizer: IETokenizer
    relation_heads: RelationHeads | None = None

    @property
    def dir(self) -> Path:
        return self.settings.dir

    @property
    def task(self) -> str:
        return self.card.task

    @property
    def version(self) -> str:
        return self.card.version

    @property
    def max_seq_len(self) -> int:
        return min(self.settings.max_seq_len, self.card.max_seq_len)

    def _reading(self, key: str):
        chosen = getattr(self.settings, key)
        return getattr(self.card.reading, key) if chosen is None else chosen

    @property
    def split_sentence(self) -> bool:
        return self._reading("split_sentence")

    @property
    def anchor_children(self) -> bool:
        return self._reading("anchor_children")

    @property
    def window_overlap(self) -> int | None:
        return self._reading("window_overlap")


def load_served_model(name: str, settings: ModelSettings, ie: IESettings) -> ServedModel:
    """Read one model's card and vocab; errors name the missing or bad file."""
    if not settings.dir.is_dir():
        raise ModelLoadError(
            f"model dir {settings.dir} (ie.models.{name}.dir) does not exist; "
            "build it with `python -m conversion.bridge build`"
        )
    card = load_model_card(settings.dir)
    expected = settings.task or (name if name in TASKS else None)
    if expected is not None and card.task != expected:
        raise ModelLoadError(f"{settings.dir}/model_card.json is a {card.task!r} model, not {expected!r}")
    vocab = settings.dir / card.vocab
    try:
        tokenizer = IETokenizer.from_file(vocab, card.tokenizer.settings)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load vocab {vocab}: {e}") from e
    _check_against_card(name, settings, card, ie.batch_rows_of(settings))
    _check_output_bytes(name, settings, card, ie.limits.max_output_bytes_per_call)
    return ServedModel(name, settings, card, tokenizer, load_relation_heads_of(settings.dir, card))


def load_served_models(ie: IESettings) -> dict[str, ServedModel]:
    """Read every configured model's card and vocab; checks each task has one default."""
    served = {name: load_served_model(name, settings, ie) for name, settings in ie.models.items()}
    default_models(served.values(), strict=True)
    return served


def default_models(models: Iterable[ServedModel], strict: bool = False) -> dict[str, str]:
    """Task -> the name of its default model: the one marked ``default: true``, or the only model
    of that task. ``strict``: ConfigError when a task has several models and not one default."""
    by_task: dict[str, list[ServedModel]] = {}
    for model in models:
        by_task.setdefault(model.task, []).append(model)
    defaults = {}
    for task, group in sorted(by_task.items()):
        marked = [m.name for m in group if m.settings.default]
        if len(marked) > 1 and strict:
            raise ConfigError(
                f"ie.models: {sorted(marked)} are all 'default: true' for task {task}; keep one"
            )
        if len(group) == 1:
            defaults[task] = group[0].name
        elif marked:
            defaults[task] = sorted(marked)[0]
        elif strict:
            names = sorted(m.name for m in group)
            raise ConfigError(
                f"ie.models: {names} all serve task {task}; mark the one a request without 'model' "
                "gets with 'default: true'"
            )
    return defaults


def names_by_task(models: Mapping[str, ServedModel]) -> dict[str, list[str]]:
    """Task -> the names of its models, sorted."""
    out: dict[str, list[str]] = {}
    for name in sorted(models):
        out.setdefault(models[name].task, []).append(name)
    return out


def _check_against_card(name: str, settings: ModelSettings, card: ModelCard, max_batch_rows: int) -> None:
    """Deployment choices within what the bridge verified; departures from the card's reading
    settings are allowed but said."""
    if card.verified_max_batch is not None and max_batch_rows > card.verified_max_batch:
        raise ConfigError(
            f"ie.max_batch_rows is {max_batch_rows} but the bridge verified model {name} up to "
            f"{card.verified_max_batch} rows per engine call (model_card.json verified_max_batch); "
            "lower it or re-run the bridge"
        )
    for key, value in card.reading.model_dump().items():
        chosen = getattr(settings, key)
        if chosen is not None and chosen != value:
            logger.warning(
                "model %s: ie.models.%s.%s is %s but the model was built to read with %s (model card)",
                name,
                name,
                key,
                chosen,
                value,
            )


def _check_output_bytes(name: str, settings: ModelSettings, card: ModelCard, limit: int) -> None:
    """A model whose one row at its served length makes more engine outputs than one call may
    hold is refused (ConfigError naming the limit)."""
    length = min(settings.max_seq_len, card.max_seq_len)
    row = card.output_bytes_per_row(length)
    if row > limit:
        raise ConfigError(
            f"model {name}: one row of {length} tokens makes {row / 2**20:.0f} MiB of engine outputs, "
            f"over ie.limits.max_output_bytes_per_call ({limit / 2**20:.0f} MiB); lower "
            f"ie.models.{name}.max_seq_len, raise the limit, or rebuild the model with the bridge "
            "(its SPO models score the relation heads at candidate pairs only)"
        )
