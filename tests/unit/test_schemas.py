"""The request contract: whole-request errors vs per-text errors, texts as one string or a JSON list."""

import json

import pytest

from pipeline.config import Limits
from pipeline.errors import InvalidRequest, InvalidSchema, InvalidText, LimitExceeded, error_item
from pipeline.schemas import check_text, encode_results, parse_request

LIMITS = Limits(max_texts=3, max_text_chars=50)


def test_single_text_and_list():
    req = parse_request({"task": "spo", "text": "张伟出生于杭州。"}, LIMITS)
    assert req.texts == ["张伟出生于杭州。"] and req.schema_ is None
    req = parse_request({"task": "uie", "text": json.dumps(["a", "b"]), "schema": '["人物"]'}, LIMITS)
    assert req.texts == ["a", "b"] and req.schema_ == ["人物"]


def test_text_that_only_looks_like_json_stays_one_text():
    req = parse_request({"task": "spo", "text": "[注] 张伟"}, LIMITS)
    assert req.texts == ["[注] 张伟"]


def test_bare_schema_name_and_position_prob():
    req = parse_request({"task": "uie", "text": "x", "schema": "人物", "position_prob": "0.3"}, LIMITS)
    assert req.schema_ == "人物" and req.position_prob == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("kv", "exc", "needle"),
    [
        ({"text": "x"}, InvalidRequest, "missing key 'task'"),
        ({"task": "spo"}, InvalidRequest, "missing key 'text'"),
        ({"task": "ner", "text": "x"}, InvalidRequest, "unknown task"),
        ({"task": "spo", "text": "x", "foo": "1"}, InvalidRequest, "unknown keys"),
        ({"task": "uie", "text": "x"}, InvalidSchema, "needs a 'schema'"),
        ({"task": "spo", "text": "x", "schema": "[]"}, InvalidRequest, "takes no 'schema'"),
        (
            {"task": "uie", "text": "x", "schema": "人物", "position_prob": "2"},
            InvalidRequest,
            "position_prob",
        ),
        ({"task": "uie", "text": "x", "schema": "人物", "position_prob": "abc"}, InvalidRequest, "number"),
        ({"task": "spo", "text": "[]"}, InvalidRequest, "empty list"),
        ({"task": "spo", "text": json.dumps(["a"] * 4)}, LimitExceeded, "limit is 3"),
    ],
)
def test_whole_request_errors(kv, exc, needle):
    with pytest.raises(exc, match=needle):
        parse_request(kv, LIMITS)


@pytest.mark.parametrize(
    ("item", "exc"),
    [
        ("", InvalidText),
        ("  \t\n\u3000", InvalidText),
        ("\x00\x01", InvalidText),
        (5, InvalidText),
        (None, InvalidText),
        ("长" * 51, LimitExceeded),
    ],
)
def test_per_text_errors(item, exc):
    with pytest.raises(exc):
        check_text(item, LIMITS)


def test_good_texts_pass_unchanged():
    for text in ["张伟", "emoji 😀 mixed Кириллица", "a\x00b"]:
        assert check_text(text, LIMITS) == text


def test_error_items_and_encoding():
    item = error_item(InvalidText("empty or whitespace-only text"))
    assert item == {
        "error": {"code": 5000, "type": "invalid_text", "message": "empty or whitespace-only text"}
    }
    unknown = error_item(RuntimeError("secret path /x"))
    assert "secret" not in unknown["error"]["message"]
    assert json.loads(encode_results([{"人物": []}, item])) == [{"人物": []}, item]
