"""The request and response contract, the same over RPC (PipelineClient) and HTTP JSON.

Request: Paddle Serving's ``{"key": [...], "value": [...]}`` with keys

- ``task``: ``"uie"`` or ``"spo"`` (may be left out when ``model`` is given)
- ``model``: optional, a served model's name (else the task's default model)
- ``text``: one text, or a JSON list of texts (a value starting with ``[`` that parses as a list)
- ``schema``: UIE only, a JSON schema as PaddleNLP Taskflow takes it
- ``position_prob``: optional, UIE span threshold in (0, 1)
- ``pipeline.profile``: optional, ``"1"`` adds the request's timestamps in the pipeline to the
  answer under the same key (Paddle Serving's ``PipelineClient.predict(..., profile=True)``)

Response: ``value[0]`` (key ``result``) is one JSON string: a list with, per text, either its
result or ``{"error": {"code", "type", "message"}}``.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.config import Limits
from pipeline.errors import InvalidRequest, InvalidSchema, InvalidText, LimitExceeded, NestedTooDeeply

PROFILE_KEY = "pipeline.profile"  # read by Paddle Serving's DAG, not by the service
REQUEST_KEYS = frozenset({"task", "model", "text", "schema", "position_prob", PROFILE_KEY})
RESULT_KEY = "result"


class IERequest(BaseModel):
    """A parsed request; ``texts`` are raw items, checked one by one by :func:`check_text`."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    task: Literal["uie", "spo"]
    texts: list[Any] = Field(min_length=1)
    schema_: Any = Field(default=None, alias="schema")
    position_prob: float | None = Field(default=None, gt=0.0, lt=1.0)


def nests_deeper_than(value: Any, max_depth: int) -> bool:
    """Whether ``value`` (parsed JSON) has lists/objects nested more than ``max_depth`` levels."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, list | dict))
    return False


def loads_json(data: str | bytes, max_depth: int, what: str) -> Any:
    """``json.loads`` that refuses documents nested deeper than ``max_depth`` (NestedTooDeeply).

    Other malformed input raises ``ValueError`` (``json.JSONDecodeError``, ``UnicodeDecodeError``)
    for the caller to word.
    """
    try:
        value = json.loads(data)
    except RecursionError as e:  # deeper than the interpreter's limit: far over ours
        raise NestedTooDeeply(f"{what} is nested too deeply (the limit is {max_depth} levels)") from e
    if isinstance(value, list | dict) and nests_deeper_than(value, max_depth):
        raise NestedTooDeeply(f"{what} is nested too deeply (the limit is {max_depth} levels)")
    return value


def _parse_texts(raw: Any, max_depth: int) -> list[Any]:
    if isinstance(raw, list):
        return raw
    if not isinstance(raw, str):
        raise InvalidRequest("'text' must be a string or a JSON list of strings")
    if raw.lstrip().startswith("["):
        try:
            parsed = loads_json(raw, max_depth, "'text'")
        except ValueError:
            return [raw]
        if isinstance(parsed, list):
            return parsed
    return [raw]


def _parse_schema(raw: Any, max_depth: int) -> Any:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise InvalidSchema("task 'uie' needs a 'schema' (a JSON list or object of names)")
    if isinstance(raw, str):
        try:
            return loads_json(raw, max_depth, "'schema'")
        except NestedTooDeeply as e:
            raise InvalidSchema(e.message) from e
        except ValueError:
            # A bare name such as 人物 is a valid one-node schema.
            return raw
    return raw


MAX_NAMED = 10  # names an error message lists at most


def first_names(names: list[str]) -> list[str]:
    """``names`` for an error message: the first :data:`MAX_NAMED`, then "..." if there are more."""
    return names[:MAX_NAMED] + (["..."] if len(names) > MAX_NAMED else [])


def check_keys(kv: dict[str, Any]) -> None:
    """Refuse keys the contract does not have, and a request naming neither task nor model."""
    unknown = set(kv) - REQUEST_KEYS
    if unknown:
        raise InvalidRequest(
            f"unknown keys {first_names(sorted(unknown))}; allowed keys are {sorted(REQUEST_KEYS)}"
        )
    if "task" not in kv and kv.get("model") in (None, ""):
        raise InvalidRequest("missing key 'task' (or 'model', a served model's name)")
    if "task" in kv and kv["task"] not in ("uie", "spo"):
        raise InvalidRequest(f"unknown task {kv['task']!r}; use 'uie' or 'spo'")
    if "model" in kv and not isinstance(kv["model"], str):
        raise InvalidRequest("'model' must be a string (a served model's name)")


def parse_request(kv: dict[str, Any], limits: Limits, task: str | None = None) -> IERequest:
    """Validate the request as a whole; raises InvalidRequest (or a subclass) on bad input.

    ``task`` is the task of the model the request resolved to (else the request's ``task``)."""
    check_keys(kv)
    if "text" not in kv:
        raise InvalidRequest("missing key 'text'")
    task = task or kv["task"]
    texts = _parse_texts(kv["text"], limits.max_json_depth)
    if not texts:
        raise InvalidRequest("'text' is an empty list")
    if len(texts) > limits.max_texts:
        raise LimitExceeded(f"{len(texts)} texts in one request; the limit is {limits.max_texts}")
    fields: dict[str, Any] = {"task": task, "texts": texts}
    if task == "uie":
        fields["schema"] = _parse_schema(kv.get("schema"), limits.max_json_depth)
    elif kv.get("schema") not in (None, ""):
        raise InvalidRequest("task 'spo' takes no 'schema'")
    if kv.get("position_prob") not in (None, ""):
        if task != "uie":
            raise InvalidRequest("'position_prob' applies to task 'uie' only")
        try:
            fields["position_prob"] = float(kv["position_prob"])
        except (TypeError, ValueError) as e:
            raise InvalidRequest("'position_prob' must be a number in (0, 1)") from e
    try:
        return IERequest.model_validate(fields)
    except ValidationError as e:
        err = e.errors()[0]
        raise InvalidRequest(f"'{'.'.join(map(str, err['loc']))}': {err['msg']}") from e


def lone_surrogate(text: str) -> int | None:
    """Index of the first lone surrogate (text that cannot be encoded as UTF-8), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


def _is_blank(text: str) -> bool:
    return all(c.isspace() or unicodedata.category(c) in ("Cc", "Cf", "Zs") for c in text)


def check_text(item: Any, limits: Limits) -> str:
    """Validate one text; raises InvalidText / LimitExceeded with a message for that item."""
    if not isinstance(item, str):
        raise InvalidText(f"a text must be a string, got {type(item).__name__}")
    if not item or _is_blank(item):
        raise InvalidText("empty or whitespace-only text")
    bad = lone_surrogate(item)
    if bad is not None:
        raise InvalidText(f"not valid Unicode: a lone surrogate (U+{ord(item[bad]):04X}) at index {bad}")
    if len(item) > limits.max_text_chars:
        raise LimitExceeded(
            f"text of {len(item)} chars; the limit is {limits.max_text_chars} (ie.limits.max_text_chars)"
        )
    return item


def encode_results(items: list[dict[str, Any]]) -> str:
    """The response's one JSON string (UTF-8 text, Chinese kept readable)."""
    return json.dumps(items, ensure_ascii=False, separators=(",", ":"))
