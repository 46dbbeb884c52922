"""Runs engine jobs through a backend: rows of every job, sorted by length, padded per batch."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.backends.base import Backend
from pipeline.errors import LimitExceeded
from pipeline.jobs import EngineJob
from pipeline.tokenizer import Encoded


def build_feed(rows: Sequence[Encoded], inputs: Sequence[str], pad_id: int = 0) -> dict[str, np.ndarray]:
    """Pad ``rows`` to the longest and return the int64 feed for the model's ``inputs``."""
    length = max(len(r) for r in rows)
    n = len(rows)
    ids = np.full((n, length), pad_id, dtype=np.int64)
    types = np.zeros((n, length), dtype=np.int64)
    mask = np.zeros((n, length), dtype=np.int64)
    for i, r in enumerate(rows):
        k = len(r)
        ids[i, :k] = r.input_ids
        types[i, :k] = r.token_type_ids
        mask[i, :k] = 1
    all_inputs = {
        "input_ids": ids,
        "token_type_ids": types,
        "attention_mask": mask,
        "position_ids": np.broadcast_to(np.arange(length, dtype=np.int64), (n, length)).copy(),
    }
    return {name: all_inputs[name] for name in inputs}


@dataclass(frozen=True)
class RunBounds:
    """What one run may cost: rows per engine call, engine output bytes per call (rows of
    ``length`` tokens make ``row_output_bytes(length)`` each), engine rows per job (all stages)."""

    max_batch_rows: int = 16
    max_output_bytes: int | None = None
    row_output_bytes: Callable[[int], int] | None = None
    max_job_rows: int | None = None

    def chunks(self, lengths: Sequence[int]) -> Iterator[range]:
        """Consecutive index ranges over rows of ascending ``lengths``, one per engine call: at most
        ``max_batch_rows`` rows and ``max_output_bytes`` of outputs (a row alone always runs)."""
        start = 0
        for end in range(1, len(lengths) + 1):
            n = end - start
            over_bytes = (
                self.max_output_bytes is not None
                and self.row_output_bytes is not None
                and n > 1
                and n * self.row_output_bytes(lengths[end - 1]) > self.max_output_bytes
            )
            if n > self.max_batch_rows or over_bytes:
                yield range(start, end - 1)
                start = end - 1
        if start < len(lengths):
            yield range(start, len(lengths))


@dataclass
class RunStats:
    """What one ``run_jobs`` call did, for logs and metrics."""

    batches: list[int] = field(default_factory=list)  # rows per engine call
    tokens: int = 0
    stages: int = 0
    job_rows: list[int] = field(default_factory=list)  # per job given, rows it ran
    job_tokens: list[int] = field(default_factory=list)  # per job given, tokens it ran
    refused: dict[int, LimitExceeded] = field(default_factory=dict)  # job index -> why it stopped


def run_jobs(
    backend: Backend,
    jobs: Sequence[EngineJob],
    inputs: Sequence[str],
    outputs: Sequence[str],
    max_batch_rows: int = 16,
    pad_id: int = 0,
    bounds: RunBounds | None = None,
) -> RunStats:
    """Drive every job to completion; each stage batches the rows of all jobs together. A job
    whose rows would pass ``bounds.max_job_rows`` stops there (``RunStats.refused``); the others
    go on."""
    bounds = bounds or RunBounds(max_batch_rows=max_batch_rows)
    stats = RunStats(job_rows=[0] * len(jobs), job_tokens=[0] * len(jobs))
    pending = list(enumerate(jobs))  # (index in jobs, job)
    while pending:
        owned: list[tuple[int, int, Encoded]] = []  # (index in pending, row index, row)
        kept = []
        for given, job in pending:
            rows = job.next_rows()
            if bounds.max_job_rows is not None and stats.job_rows[given] + len(rows) > bounds.max_job_rows:
                stats.refused[given] = LimitExceeded(
                    f"the request needs more than {bounds.max_job_rows} engine rows (prompts x "
                    f"windows of its texts); the limit is ie.limits.max_rows_per_request"
                )
                continue
            stats.job_rows[given] += len(rows)
            stats.job_tokens[given] += sum(len(row) for row in rows)
            owned.extend((len(kept), r, row) for r, row in enumerate(rows))
            kept.append((given, job))
        pending = kept
        if not owned:
            break
        stats.stages += 1
        order = sorted(range(len(owned)), key=lambda k: len(owned[k][2]))
        for part in bounds.chunks([len(owned[k][2]) for k in order]):
            chunk = [owned[order[k]] for k in part]
            feed = build_feed([row for _, _, row in chunk], inputs, pad_id)
            fetch = backend.infer(feed)
            stats.batches.append(len(chunk))
            stats.tokens += sum(len(row) for _, _, row in chunk)
            for b, (j, r, _) in enumerate(chunk):
                pending[j][1].row_done(r, *(fetch[name][b] for name in outputs))
            del fetch, feed  # the next call's outputs never sit beside these
        staged = {j for j, _, _ in owned}
        for j in sorted(staged):
            pending[j][1].stage_done()
        pending = [pending[j] for j in sorted(staged)]
    return stats
