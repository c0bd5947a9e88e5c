"""Micro-batching: requests that arrive while the model is busy are scored together.

No timer: a pass starts as soon as the previous one ends, with every request queued by then
(up to ``max_rows``), so batching adds no delay when the server is idle, and under load the
fixed cost of a pass (encoding each field, then the MLP) is shared by everything queued.

A request is queued as a part (an Arrow table, or a small request's checked values still in
Python lists, which the pass turns into Arrow arrays for all of them at once: one call per field
per pass instead of per request) with its number of rows and the model that checked it; a pass scores each model's requests
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

log = logging.getLogger("deepfm.serve")

M = TypeVar("M")  # the model a request was checked with (LoadedModel in the service)
P = TypeVar("P")  # a request's rows, checked (a table, or columns of Python values)
Queued = tuple[P, int, M, "asyncio.Future[np.ndarray]"]


class Batcher(Generic[P, M]):
    """Scores queued parts together in one worker thread (see the module docstring).

    ``score(model, parts)`` -> the probabilities of each part, in order; ``on_pass(rows,
    requests)`` is told the size of every pass (metrics)."""

    def __init__(
        self,
        score: Callable[[M, list[P]], list[np.ndarray]],
        max_rows: int,
        on_pass: Callable[[int, int], None] | None = None,
    ) -> None:
        self.score, self.max_rows, self.on_pass = score, max_rows, on_pass
        self.queue: deque[Queued[P, M]] = deque()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="deepfm-score")
        self.wake: asyncio.Event | None = None
        self.task: asyncio.Task[None] | None = None
        self.scoring = False  # a pass is taken from the queue and not yet answered

    def start(self) -> None:
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name="deepfm-batcher")

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def stop(self) -> None:
        """Score what is queued, then stop (a graceful shutdown answers every request)."""
        while (self.queue or self.scoring) and self.running:  # the pass in flight is answered too
            await asyncio.sleep(0.01)
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def submit(self, part: P, rows: int, model: M) -> np.ndarray:
        """Probabilities for a checked part of ``rows`` rows, scored in the next pass by
        ``model``. -> (rows,) float64"""
        assert self.wake is not None, "Batcher.start() first"
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self.queue.append((part, rows, model, future))
        self.wake.set()
        return await future

    def _next_pass(self) -> list[Queued[P, M]]:
        """The queued requests of the next pass: the oldest request's model, up to max_rows."""
        batch = [self.queue.popleft()]
        rows, model = batch[0][1], batch[0][2]
        while self.queue and self.queue[0][2] is model and rows + self.queue[0][1] <= self.max_rows:
            batch.append(self.queue.popleft())
            rows += batch[-1][1]
        return [q for q in batch if not q[3].done()]  # a cancelled request is skipped

    async def _run(self) -> None:
        assert self.wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            self.scoring = True
            try:
                await self._drain(loop)
            finally:
                self.scoring = False

    async def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """Score the queue, pass after pass, until it is empty."""
        while self.queue:
            batch = self._next_pass()
            if batch:
                await self._score(loop, batch)

    async def _score(self, loop: asyncio.AbstractEventLoop, batch: list[Queued[P, M]]) -> None:
        """One pass over ``batch``; when it fails, each request is scored alone, so a request
        that breaks the model's pass fails itself, not the requests batched with it."""
        try:
            probs = await loop.run_in_executor(self.executor, self.score, batch[0][2], [q[0] for q in batch])
        except Exception as exc:  # a bug, not a bad request: those were refused before
            if len(batch) > 1:
                for q in batch:
                    await self._score(loop, [q])
                return
            log.exception("scoring a request of %d rows failed", batch[0][1])
            if not batch[0][3].done():
                batch[0][3].set_exception(exc)
            return
        if self.on_pass is not None:
            self.on_pass(sum(q[1] for q in batch), len(batch))
        for (*_, f), p in zip(batch, probs):
            if not f.done():
                f.set_result(p)
