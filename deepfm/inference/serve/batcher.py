"""Micro-batching: requests that arrive while the model is busy are scored together.

No timer: a pass starts as soon as the previous one ends, with every request queued by then
(up to ``max_rows``), so batching adds no delay when the server is idle, and under load the
fixed cost of a pass (encoding each field, then the MLP) is shared by everything queued.

Each request is queued with the model that checked it; a pass scores each model's requests
with that model, so a reload swaps models between passes and a request is never checked by
one model and scored by another.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

import numpy as np
import pyarrow as pa

log = logging.getLogger("deepfm.serve")

M = TypeVar("M")  # the model a request was checked with (LoadedModel in the service)
Scored = tuple[np.ndarray, M]
Queued = tuple[pa.Table, M, "asyncio.Future[np.ndarray]"]


class Batcher(Generic[M]):
    """Scores queued tables together in one worker thread (see the module docstring).

    ``score(model, table)`` -> probabilities (N,); ``on_pass(rows, requests)`` is told the size
    of every pass (metrics)."""

    def __init__(
        self,
        score: Callable[[M, pa.Table], np.ndarray],
        max_rows: int,
        on_pass: Callable[[int, int], None] | None = None,
    ) -> None:
        self.score, self.max_rows, self.on_pass = score, max_rows, on_pass
        self.queue: deque[Queued] = deque()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="deepfm-score")
        self.wake: asyncio.Event | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name="deepfm-batcher")

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def stop(self) -> None:
        """Score what is queued, then stop (a graceful shutdown answers every request)."""
        while self.queue and self.running:
            await asyncio.sleep(0.01)
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def submit(self, table: pa.Table, model: M) -> np.ndarray:
        """Probabilities for a checked table, scored in the next pass by ``model``. -> (N,) float64"""
        assert self.wake is not None, "Batcher.start() first"
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self.queue.append((table, model, future))
        self.wake.set()
        return await future

    def _next_pass(self) -> list[Queued]:
        """The queued requests of the next pass: the oldest request's model, up to max_rows."""
        batch = [self.queue.popleft()]
        rows, model = batch[0][0].num_rows, batch[0][1]
        while self.queue and self.queue[0][1] is model and rows + self.queue[0][0].num_rows <= self.max_rows:
            batch.append(self.queue.popleft())
            rows += batch[-1][0].num_rows
        return [q for q in batch if not q[2].done()]  # a cancelled request is skipped

    async def _run(self) -> None:
        assert self.wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.queue:
                batch = self._next_pass()
                if not batch:
                    continue
                model = batch[0][1]
                table = pa.concat_tables([t for t, _, _ in batch]) if len(batch) > 1 else batch[0][0]
                try:
                    probs = await loop.run_in_executor(self.executor, self.score, model, table)
                except Exception as exc:  # a bug, not a bad request: those were refused before
                    log.exception("scoring a batch of %d requests failed", len(batch))
                    for _, _, f in batch:
                        if not f.done():
                            f.set_exception(exc)
                    continue
                if self.on_pass is not None:
                    self.on_pass(table.num_rows, len(batch))
                start = 0
                for t, _, f in batch:
                    if not f.done():
                        f.set_result(probs[start : start + t.num_rows])
                    start += t.num_rows
