"""UIE schema parsing: every accepted form and every SchemaError."""

from __future__ import annotations

import pytest

from pipeline.uie.schema import SchemaError, SchemaNode, dbc2sbc, parse_schema, schema_depth


def shape(nodes: list[SchemaNode]):
    """Nested (name, children) tuples for compact comparison."""
    return [(n.name, shape(n.children)) for n in nodes]


def test_string_and_list_of_names():
    assert shape(parse_schema("人物")) == [("人物", [])]
    assert shape(parse_schema(["时间", "选手", "赛事名称"])) == [("时间", []), ("选手", []), ("赛事名称", [])]


def test_relations_dict_and_list_of_dicts():
    nodes = parse_schema([{"歌曲名称": ["歌手", "所属专辑"]}, "人物"])
    assert shape(nodes) == [("歌曲名称", [("歌手", []), ("所属专辑", [])]), ("人物", [])]
    assert shape(parse_schema({"人物": "出生地"})) == [("人物", [("出生地", [])])]
    assert shape(parse_schema({"人物": []})) == [("人物", [])]


def test_nested_dicts_to_any_depth():
    nodes = parse_schema({"人物": {"出生地": ["所属国家", {"城市": {"区": "街道"}}]}})
    assert shape(nodes) == [
        ("人物", [("出生地", [("所属国家", []), ("城市", [("区", [("街道", [])])])])]),
    ]
    assert schema_depth(nodes) == 5


def test_event_schema():
    nodes = parse_schema([{"地震触发词": ["地震强度", "时间", "震中位置", "震源深度"]}])
    assert nodes[0].name == "地震触发词"
    assert [c.name for c in nodes[0].children] == ["地震强度", "时间", "震中位置", "震源深度"]


def test_classification_labels_and_prompt():
    (node,) = parse_schema("情感倾向[正向，负向]")
    assert node.is_classification
    assert node.labels == ["正向", "负向"]
    assert node.name == "情感倾向[正向，负向]"  # the result key keeps the spelling
    assert node.prompt == "情感倾向[正向,负向]"  # the prompt is half-width
    assert node.cls_parts() == ("情感倾向", "[正向,负向]")
    (bare,) = parse_schema(["[正向,负向]"])
    assert bare.labels == ["正向", "负向"] and bare.prompt == "[正向,负向]"
    (en,) = parse_schema("Sentiment classification [negative, positive]")
    assert en.labels == ["negative", "positive"]
    assert en.cls_parts() == ("Sentiment classification", "[negative, positive]")
    opinion = parse_schema([{"评价维度": ["观点词", "情感倾向[正向，负向]"]}])[0]
    assert [c.is_classification for c in opinion.children] == [False, True]
    assert not parse_schema("人物")[0].is_classification


def test_full_width_names_become_half_width_prompts():
    (node,) = parse_schema("ＣＥＯ（职位）")
    assert node.prompt == "CEO(职位)"
    assert dbc2sbc("１２３ａｂｃ！") == "123abc!"
    assert dbc2sbc("中文\u3000不变") == "中文\u3000不变"  # Taskflow leaves U+3000 as is


def test_same_sibling_names_merge():
    nodes = parse_schema([{"人物": ["出生地"]}, {"人物": ["毕业院校", "出生地"]}, "人物"])
    assert shape(nodes) == [("人物", [("出生地", []), ("毕业院校", [])])]


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("", "empty"),
        ([], "empty"),
        ({}, "empty"),
        (None, "empty"),
        ("   ", "empty"),
        (["人物", ""], "empty"),
        ({"人物": ["  "]}, "empty"),
        ({1: ["a"]}, "must be a string"),
        ([{"人物": ["出生地"]}, 3], "string or an object"),
        ({"人物": 5}, "children"),
        ({"人物": None}, "children"),
        (42, "must be a string, a list or an object"),
        ([["人物"]], "string or an object"),
        ("情感倾向[]", "no labels"),
        ("情感倾向[正向,,负向]", "empty label"),
    ],
)
def test_invalid_schemas(schema, message):
    with pytest.raises(SchemaError, match=message):
        parse_schema(schema)


def test_schema_error_is_a_value_error():
    assert issubclass(SchemaError, ValueError)


def nested(depth: int):
    spec: object = "叶"
    for i in range(depth - 1):
        spec = {f"层{i}": spec}
    return spec


def test_depth_limit():
    assert schema_depth(parse_schema(nested(8))) == 8
    with pytest.raises(SchemaError, match="deeper than 8"):
        parse_schema(nested(9))
    assert schema_depth(parse_schema(nested(3), max_depth=3)) == 3
    with pytest.raises(SchemaError, match="deeper than 2"):
        parse_schema(nested(3), max_depth=2)


def test_node_count_limit():
    assert len(parse_schema([f"类{i}" for i in range(256)])) == 256
    with pytest.raises(SchemaError, match="more than 256"):
        parse_schema([f"类{i}" for i in range(257)])
    with pytest.raises(SchemaError, match="more than 3"):
        parse_schema({"a": ["b", "c", "d"]}, max_nodes=3)


def test_name_length_limit():
    assert parse_schema("名" * 64)[0].name == "名" * 64
    with pytest.raises(SchemaError, match="longer than 64"):
        parse_schema("名" * 65)
    with pytest.raises(SchemaError, match="longer than 4"):
        parse_schema({"人物": "出生地城市"}, max_name_len=4)


@pytest.mark.parametrize("schema", [["人\ud800"], {"人物\ud800": ["职业"]}, {"人物": ["职\udfff"]}])
def test_a_lone_surrogate_in_a_name_is_a_schema_error_that_can_be_answered(schema):
    with pytest.raises(SchemaError, match="not valid Unicode") as err:
        parse_schema(schema)
    str(err.value).encode("utf-8")  # the message itself must be encodable
