"""Resident memory of this process (Linux ``/proc``; 0 where it cannot be read)."""

from __future__ import annotations

import os


def rss_bytes() -> int:
    """The process's resident set size in bytes."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
