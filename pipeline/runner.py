"""Runs engine jobs through a backend: rows of every job, sorted by length, padded per batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.backends.base import Backend
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


@dataclass
class RunStats:
    """What one ``run_jobs`` call did, for logs and metrics."""

    batches: list[int] = field(default_factory=list)  # rows per engine call
    tokens: int = 0
    stages: int = 0
    job_rows: list[int] = field(default_factory=list)  # per job given, rows it ran
    job_tokens: list[int] = field(default_factory=list)  # per job given, tokens it ran


def run_jobs(
    backend: Backend,
    jobs: Sequence[EngineJob],
    inputs: Sequence[str],
    outputs: Sequence[str],
    max_batch_rows: int = 16,
    pad_id: int = 0,
) -> RunStats:
    """Drive every job to completion; each stage batches the rows of all jobs together."""
    stats = RunStats(job_rows=[0] * len(jobs), job_tokens=[0] * len(jobs))
    pending = list(enumerate(jobs))  # (index in jobs, job)
    while pending:
        owned: list[tuple[int, int, Encoded]] = []  # (index in pending, row index, row)
        for j, (given, job) in enumerate(pending):
            rows = job.next_rows()
            stats.job_rows[given] += len(rows)
            stats.job_tokens[given] += sum(len(row) for row in rows)
            owned.extend((j, r, row) for r, row in enumerate(rows))
        if not owned:
            break
        stats.stages += 1
        per_job: list[dict[str, list]] = [{} for _ in pending]
        counts = [0] * len(pending)
        for j, _, _ in owned:
            counts[j] += 1
        for j, c in enumerate(counts):
            per_job[j] = {name: [None] * c for name in outputs}
        order = sorted(range(len(owned)), key=lambda k: len(owned[k][2]))
        for start in range(0, len(order), max_batch_rows):
            chunk = [owned[k] for k in order[start : start + max_batch_rows]]
            feed = build_feed([row for _, _, row in chunk], inputs, pad_id)
            fetch = backend.infer(feed)
            stats.batches.append(len(chunk))
            stats.tokens += sum(len(row) for _, _, row in chunk)
            for b, (j, r, _) in enumerate(chunk):
                for name in outputs:
                    per_job[j][name][r] = fetch[name][b]
        next_pending = []
        for j, (given, job) in enumerate(pending):
            if counts[j]:
                job.consume(*(per_job[j][name] for name in outputs))
                next_pending.append((given, job))
        pending = next_pending
    return stats
