"""Adaptive batching for a Paddle Serving op: run at once when idle, batch what queued meanwhile.

Paddle Serving's auto-batching (``batch_size`` + ``auto_batching_timeout``) waits up to the
timeout for a batch to fill, even when nothing else is coming: at low load every request pays
that wait. :class:`AdaptiveBatchingOp` takes the first request as soon as it arrives, adds every
request already queued behind it (up to ``batch_size``) without waiting, and runs. While the
engine runs, new requests queue; the next batch takes them all. So a lone request never waits,
and under load batches fill by themselves (as continuous batching does).
"""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.paddle_serving.compat import ChannelTimeoutError, Op

_NO_WAIT_S = 1e-9  # the channels read a timeout <= 0 as "block"; this takes only what is queued


class AdaptiveBatchingOp(Op):
    """An :class:`Op` whose batches are what is queued when it is free (``adaptive=True``), or
    Paddle Serving's timeout batching (``adaptive=False``)."""

    def __init__(self, *args, adaptive: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.adaptive = adaptive

    def _auto_batching_generator(
        self, input_channel, op_name: str, batch_size: int, timeout: float | None, op_info_prefix: str
    ) -> Iterator[list]:
        if not self.adaptive:
            yield from super()._auto_batching_generator(
                input_channel, op_name, batch_size, timeout, op_info_prefix
            )
            return
        while True:
            batch = [input_channel.front(op_name)]  # blocks until a request arrives
            while len(batch) < batch_size:
                try:
                    batch.append(input_channel.front(op_name, _NO_WAIT_S))
                except ChannelTimeoutError:
                    break
            yield batch
