"""UIE schema: parse the user's schema (string, list or nested dict) into a tree of nodes.

Forms accepted, as PaddleNLP Taskflow accepts them (plus dict values that are dicts):

- ``"人物"`` or ``["人物", "地点"]``: entity types;
- ``{"人物": ["出生地", "毕业院校"]}`` / ``[{"歌曲名称": "歌手"}]``: relations, nested to any depth;
- ``{"地震触发词": ["时间", "震中位置"]}``: events (a trigger with argument children);
- ``"情感倾向[正向，负向]"``: classification; the labels are read from the trailing brackets.

Names keep their spelling (they are the result keys); prompts use the half-width form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

MAX_DEPTH = 8
MAX_NODES = 256
MAX_NAME_LEN = 64

_CLS_RE = re.compile(r"^(.*?)\[([^\[\]]*)\]$", re.S)


class SchemaError(ValueError):
    """The schema is empty, malformed or over a limit; the message says where."""


def dbc2sbc(text: str) -> str:
    """Full-width ASCII forms (U+FF01..U+FF5E) to half-width, as Taskflow does for prompts.

    Like Taskflow, the ideographic space U+3000 is left as is.
    """
    return "".join(chr(ord(c) - 0xFEE0) if 0xFF01 <= ord(c) <= 0xFF5E else c for c in text)


@dataclass
class SchemaNode:
    """One schema name with its children; ``labels`` is non-empty for classification nodes."""

    name: str
    children: list[SchemaNode] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    @property
    def prompt(self) -> str:
        """The root-level prompt: the name in half-width form."""
        return dbc2sbc(self.name)

    @property
    def is_classification(self) -> bool:
        return bool(self.labels)

    def cls_parts(self) -> tuple[str, str]:
        """For a classification node: (prefix, "[label1,label2]") of the half-width prompt."""
        match = _CLS_RE.match(self.prompt)
        if match is None:  # pragma: no cover - guarded by parse_schema
            raise SchemaError(f"{self.name!r} is not a classification name")
        return match.group(1).strip(), "[" + match.group(2) + "]"


def _labels(name: str) -> list[str]:
    match = _CLS_RE.match(dbc2sbc(name))
    if match is None:
        return []
    labels = [lab.strip() for lab in match.group(2).split(",")]
    if not any(labels):
        raise SchemaError(f"classification name {name!r} has no labels inside its brackets")
    if not all(labels):
        raise SchemaError(f"classification name {name!r} has an empty label")
    return labels


def _printable(text: str) -> str:
    """``text`` with lone surrogates (which cannot be encoded, so cannot be answered) escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class _Parser:
    def __init__(self, max_depth: int, max_nodes: int, max_name_len: int):
        self.max_depth = max_depth
        self.max_nodes = max_nodes
        self.max_name_len = max_name_len
        self.count = 0

    def node(self, name: Any, depth: int, path: str) -> SchemaNode:
        path = _printable(path)  # a bad name is part of its own path
        if isinstance(name, str) and _printable(name) != name:
            raise SchemaError(f"schema name at {path} is not valid Unicode (a lone surrogate)")
        if not isinstance(name, str):
            raise SchemaError(f"schema name at {path} must be a string, got {type(name).__name__}")
        if not name.strip():
            raise SchemaError(f"schema name at {path} is empty")
        if len(name) > self.max_name_len:
            raise SchemaError(
                f"schema name {name[:16]!r}... at {path} is longer than {self.max_name_len} characters"
            )
        if depth > self.max_depth:
            raise SchemaError(f"schema at {path} is nested deeper than {self.max_depth} levels")
        self.count += 1
        if self.count > self.max_nodes:
            raise SchemaError(f"schema has more than {self.max_nodes} names")
        return SchemaNode(name=name, labels=_labels(name))

    def level(self, spec: Any, depth: int, path: str) -> list[SchemaNode]:
        """Parse one level: a name, a list of names/dicts, or a dict of name -> children."""
        nodes: list[SchemaNode] = []
        if isinstance(spec, str):
            nodes.append(self.node(spec, depth, path))
        elif isinstance(spec, dict):
            if not spec:
                raise SchemaError(f"schema at {path} is an empty object")
            for key, value in spec.items():
                node = self.node(key, depth, f"{path}.{key}")
                node.children = self.children(value, depth + 1, f"{path}.{key}")
                nodes.append(node)
        elif isinstance(spec, list | tuple):
            if not spec:
                raise SchemaError(f"schema at {path} is an empty list")
            for i, item in enumerate(spec):
                if not isinstance(item, str | dict):
                    raise SchemaError(
                        f"schema element at {path}[{i}] must be a string or an object, "
                        f"got {type(item).__name__}"
                    )
                nodes.extend(self.level(item, depth, f"{path}[{i}]"))
        else:
            raise SchemaError(
                f"schema at {path} must be a string, a list or an object, got {type(spec).__name__}"
            )
        return _merge_same_names(nodes)

    def children(self, value: Any, depth: int, path: str) -> list[SchemaNode]:
        if isinstance(value, list | tuple | dict) and not value:
            return []  # {"人物": []} is an entity type without children
        if not isinstance(value, str | list | tuple | dict):
            raise SchemaError(
                f"children at {path} must be a string, a list or an object, got {type(value).__name__}"
            )
        return self.level(value, depth, path)


def _merge_same_names(nodes: list[SchemaNode]) -> list[SchemaNode]:
    """Siblings with the same name become one node with the union of their children."""
    merged: dict[str, SchemaNode] = {}
    for node in nodes:
        seen = merged.get(node.name)
        if seen is None:
            merged[node.name] = node
        else:
            seen.children = _merge_same_names(seen.children + node.children)
    return list(merged.values())


def parse_schema(
    schema: str | list | dict,
    max_depth: int = MAX_DEPTH,
    max_nodes: int = MAX_NODES,
    max_name_len: int = MAX_NAME_LEN,
) -> list[SchemaNode]:
    """Parse a UIE schema into its root nodes; raise :class:`SchemaError` when it is invalid."""
    if schema is None or (isinstance(schema, str | list | tuple | dict) and not schema):
        raise SchemaError("schema is empty")
    return _Parser(max_depth, max_nodes, max_name_len).level(schema, 1, "schema")


def schema_depth(nodes: list[SchemaNode]) -> int:
    """Number of levels of the tree (1 for a flat list of names)."""
    return max((1 + schema_depth(n.children) for n in nodes), default=0)
