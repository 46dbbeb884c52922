"""Pure UIE decoding (no Paddle import): schema tree, span pairing, windows and the per-request job."""

from pipeline.uie.job import UIEJob, child_prompt
from pipeline.uie.schema import SchemaError, SchemaNode, dbc2sbc, parse_schema
from pipeline.uie.spans import RowSpans, decode_row, get_bool_ids, pair_spans
from pipeline.windows import default_overlap, merge_window_spans, split_windows

__all__ = [
    "RowSpans",
    "SchemaError",
    "SchemaNode",
    "UIEJob",
    "child_prompt",
    "dbc2sbc",
    "decode_row",
    "default_overlap",
    "get_bool_ids",
    "merge_window_spans",
    "pair_spans",
    "parse_schema",
    "split_windows",
]
