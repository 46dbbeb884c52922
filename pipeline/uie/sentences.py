"""Chinese sentence boundaries, for reading a text sentence by sentence (Taskflow's ``split_sentence``).

A sentence ends after ``。！？!?`` or an ellipsis (``……``, ``......``), and after a closing quote
that directly follows one of them. The sentences cover the text back to back: every character,
whitespace included, belongs to exactly one sentence, so offsets map back by adding its start.
"""

from __future__ import annotations

import re

_END = re.compile(r"(?:[。！？!?]+|…{2,}|\.{6,})[”’\"']*")


def sentence_bounds(text: str) -> list[tuple[int, int]]:
    """``[start, end)`` of each sentence of ``text``, in order, covering it; ``[]`` for ``""``."""
    bounds: list[tuple[int, int]] = []
    start = 0
    for m in _END.finditer(text):
        if m.end() < len(text):
            bounds.append((start, m.end()))
            start = m.end()
    if start < len(text):
        bounds.append((start, len(text)))
    return bounds
