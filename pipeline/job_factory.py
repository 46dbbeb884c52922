"""Turns a validated request into a :class:`RequestJob` (texts checked one by one)."""

from __future__ import annotations

from typing import Any

from pipeline.config import Limits
from pipeline.errors import IEError, InvalidRequest, InvalidSchema, UnknownModel
from pipeline.jobs import RequestJob
from pipeline.models import ServedModel, default_models
from pipeline.schemas import check_keys, check_text, parse_request
from pipeline.spo_job import SPOJob
from pipeline.uie.job import UIEJob
from pipeline.uie.schema import SchemaError, parse_schema


def resolve_model(
    kv: dict[str, Any], models: dict[str, ServedModel], defaults: dict[str, str] | None = None
) -> ServedModel:
    """The model ``kv`` names (``model``), else its task's default; UnknownModel (404) lists the
    served names."""
    check_keys(kv)
    name = kv.get("model") or None
    task = kv.get("task") or None
    if name is not None:
        model = models.get(name)
        if model is None:
            raise UnknownModel(f"unknown model {name!r}; served models: {sorted(models)}")
        if task is not None and task != model.task:
            raise InvalidRequest(f"model {name!r} serves task {model.task!r}, not {task!r}")
        return model
    defaults = default_models(models.values()) if defaults is None else defaults
    if task not in defaults:
        served = sorted(m for m in models if models[m].task == task)
        if served:
            raise InvalidRequest(f"task {task!r} has several models and no default; name one of {served}")
        raise InvalidRequest(f"task {task!r} is not served here; served models: {sorted(models)}")
    return models[defaults[task]]


def build_job(
    kv: dict[str, Any],
    models: dict[str, ServedModel],
    limits: Limits,
    log_id: int = 0,
    defaults: dict[str, str] | None = None,
) -> RequestJob:
    """Parse ``kv`` (the request's key/value pairs); raises IEError for whole-request errors."""
    return build_model_job(kv, resolve_model(kv, models, defaults), limits, log_id)


def build_model_job(kv: dict[str, Any], model: ServedModel, limits: Limits, log_id: int = 0) -> RequestJob:
    """The job of ``kv`` for ``model`` (already resolved)."""
    req = parse_request(kv, limits, model.task)
    slots: list[int | IEError] = []
    texts: list[str] = []
    for item in req.texts:
        try:
            texts.append(check_text(item, limits))
        except IEError as e:
            slots.append(e)
        else:
            slots.append(len(texts) - 1)
    engine = None
    if req.task == "uie":
        try:
            schema = parse_schema(req.schema_, max_nodes=limits.max_schema_nodes)
        except SchemaError as e:
            raise InvalidSchema(str(e)) from e
        if texts:
            engine = UIEJob(
                texts,
                schema,
                model.tokenizer,
                max_seq_len=model.max_seq_len,
                position_prob=req.position_prob or model.settings.position_prob,
                window_overlap=model.window_overlap,
                anchor_children=model.anchor_children,
                split_sentence=model.split_sentence,
            )
    elif texts:
        engine = SPOJob(
            texts,
            model.tokenizer,
            model.card.predicate_names,
            max_seq_len=model.max_seq_len,
            threshold=model.settings.threshold,
            window_overlap=model.window_overlap,
            relation_heads=model.relation_heads,
        )
    return RequestJob(task=req.task, engine=engine, slots=slots, log_id=log_id, model=model.name)
