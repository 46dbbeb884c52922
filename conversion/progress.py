"""Progress bars that read well in a terminal and in a log file."""

from __future__ import annotations

import sys

from tqdm import tqdm

LOG_INTERVAL_S = 30.0  # not a terminal (CI, a log file): one update per this many seconds


class ProgressBar(tqdm):
    """tqdm whose ``set_postfix`` waits for the next refresh, as ``update`` does.

    tqdm's own ``set_postfix`` refreshes at once by default, so a loop that sets a postfix every
    step writes a line every step whatever ``mininterval`` says.
    """

    def set_postfix(self, ordered_dict=None, refresh: bool = False, **kwargs) -> None:
        super().set_postfix(ordered_dict, refresh=refresh, **kwargs)


def progress_bar(desc: str, unit: str = "step") -> ProgressBar:
    """A bar on stderr: live in a terminal, an update every 30 s otherwise."""
    interactive = sys.stderr.isatty()
    return ProgressBar(
        desc=desc,
        unit=unit,
        file=sys.stderr,
        dynamic_ncols=interactive,
        mininterval=0.5 if interactive else LOG_INTERVAL_S,
        maxinterval=LOG_INTERVAL_S * 2,
    )
