"""Model swaps without a failed request: ``POST /admin/reload`` and ``deepfm serve --watch``.

The new bundle is loaded, its manifest checked and warmed up on a thread beside the old one,
which keeps serving meanwhile. Then one assignment makes it current: requests checked from
then on go to the new model; those already queued are scored by the model that checked them
(deepfm.inference.serve.batcher). A bundle that fails to load or verify changes nothing; the
reason goes to the log, to ``deepfm_reload_error`` and ``deepfm_reloads{result="failed"}``,
and to the answer of /admin/reload.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from pathlib import Path
from typing import Any

from deepfm.inference.serve.metrics import Metrics
from deepfm.inference.serve.settings import LoadedModel, ServeSettings, load_model

log = logging.getLogger("deepfm.serve")


class ReloadFailed(Exception):
    """The new bundle could not be loaded or verified; the old model still serves."""


class Models:
    """The model being served (``current``) and its replacement by a reload."""

    def __init__(self, settings: ServeSettings, first: LoadedModel, metrics: Metrics) -> None:
        self.settings, self.current, self.metrics = settings, first, metrics
        self.lock: asyncio.Lock | None = None
        self.last_error: str | None = None
        metrics.served(first.model_id, first.folder, first.predictor.engine.name, first.loaded_at, first.load_seconds)

    async def reload(self) -> dict[str, Any]:
        """Load the settings' model folder again and serve it if it is another model.
        Raises ReloadFailed (the old model still serving) when it cannot be loaded."""
        if self.lock is None:
            self.lock = asyncio.Lock()
        async with self.lock:  # one reload at a time: two would load the same folder twice
            old = self.current
            try:
                new = await asyncio.get_running_loop().run_in_executor(None, load_model, self.settings)
            except Exception as exc:  # whatever the folder holds, the old model keeps serving
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.metrics.reloads.labels("failed").inc()
                self.metrics.reload_error.info({"model_path": self.settings.model, "error": self.last_error})
                log.error("reload of %s failed; still serving %s: %s", self.settings.model, old.model_id, exc)
                raise ReloadFailed(self.last_error) from None
            answer = {"model": new.model_id, "previous": old.model_id, "load_seconds": round(new.load_seconds, 3)}
            if new.model_id == old.model_id:
                self.metrics.reloads.labels("unchanged").inc()
                return {**answer, "swapped": False}
            self.current = new  # the swap: one assignment, read by each request as it is checked
            self.metrics.reloads.labels("swapped").inc()
            self.metrics.served(new.model_id, new.folder, new.predictor.engine.name, new.loaded_at, new.load_seconds)
            log.info("now serving %s from %s (was %s)", new.model_id, new.folder, old.model_id)
            # The new model's objects join the frozen ones (see settle_gc). Collected first: cyclic
            # garbage left by the load would otherwise be frozen, never to be freed. This
            # collection walks only what is not frozen yet, the new model and requests' objects,
            # not the old model or the libraries; the new model's vocabularies are many objects,
            # so requests in flight may stall once per swap, up to the ~100 ms a walk of a whole
            # model took (see settle_gc). The old model holds no reference cycles: reference
            # counting frees it once its last queued request is answered.
            gc.collect()
            gc.freeze()
            return {**answer, "swapped": True}

    async def watch(self) -> None:
        """Reload whenever the model path changes: the folder a symlink names, or any file in
        the folder (a failed reload is tried again on the next change)."""
        seen = folder_state(self.settings.model)
        while True:
            await asyncio.sleep(self.settings.watch_seconds)
            state = folder_state(self.settings.model)
            if state == seen:
                continue
            seen = state
            try:
                await self.reload()
            except ReloadFailed:
                pass  # logged and counted; the next change is tried again


def folder_state(path: str) -> tuple[Any, ...]:
    """What --watch compares: where the path leads, and each file's name, size and mtime."""
    try:
        real = Path(path).resolve()
        with os.scandir(real) as entries:
            files = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries if e.is_file())
        return (str(real), *files)
    except OSError as exc:  # the folder is being replaced right now: look again later
        return ("unreadable", str(exc))
