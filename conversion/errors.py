"""The bridge's named errors: each says which file is wrong and what to do about it.

``python -m conversion.bridge`` ends with exit code 2 and the message (no traceback) on a
:class:`CheckpointError` or an INT8 model below its accuracy bar
(:class:`conversion.accuracy.AccuracyLossError`), with exit code 1 on a
:class:`ConversionError` or a failed parity check.
"""

from __future__ import annotations


class ConversionError(RuntimeError):
    """A conversion step did not produce what the next step needs."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be converted as it is; ``problem`` names the file, ``fix`` says
    what to change."""

    def __init__(self, problem: str, fix: str = ""):
        self.problem, self.fix = problem, fix
        super().__init__(problem + (f"; {fix}" if fix else ""))
