"""Trainer progress bars: one update per interval in a log, not one line per step."""

from __future__ import annotations

import io
import sys

from conversion.progress import LOG_INTERVAL_S, progress_bar


def test_a_log_gets_no_line_per_step(monkeypatch):
    log = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", log)
    bar = progress_bar("train")
    for _ in range(500):
        bar.update(1)
        bar.set_postfix(loss="0.1")
    bar.close()
    updates = log.getvalue().replace("\n", "\r").split("\r")
    assert bar.mininterval == LOG_INTERVAL_S
    assert len([u for u in updates if u.strip()]) <= 3, updates  # start, close (no time passed)
    assert "500step" in log.getvalue()
