"""Turns a validated request into a :class:`RequestJob` (texts checked one by one)."""

from __future__ import annotations

from typing import Any

from pipeline.config import Limits
from pipeline.errors import IEError, InvalidRequest, InvalidSchema
from pipeline.jobs import RequestJob
from pipeline.models import ServedModel
from pipeline.schemas import check_text, parse_request
from pipeline.spo_job import SPOJob
from pipeline.uie.job import UIEJob
from pipeline.uie.schema import SchemaError, parse_schema


def build_job(
    kv: dict[str, Any], models: dict[str, ServedModel], limits: Limits, log_id: int = 0
) -> RequestJob:
    """Parse ``kv`` (the request's key/value pairs); raises IEError for whole-request errors."""
    req = parse_request(kv, limits)
    model = models.get(req.task)
    if model is None:
        raise InvalidRequest(f"task {req.task!r} is not served here; served: {sorted(models)}")
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
        )
    return RequestJob(task=req.task, engine=engine, slots=slots, log_id=log_id)
