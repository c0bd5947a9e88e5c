"""What a server process is told (``deepfm serve``'s options) and how it loads its model."""

from __future__ import annotations

import gc
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from deepfm.errors import ConfigError
from deepfm.inference.predictor import Predictor

SETTINGS_ENV = "DEEPFM_SERVE_SETTINGS"  # how uvicorn's worker processes get their settings
ADMIN_TOKEN_ENV = "DEEPFM_ADMIN_TOKEN"  # POST /admin/reload exists only when this is set


@dataclass(frozen=True)
class ServeSettings:
    """What a server process needs to build its app (sent to workers as JSON)."""

    model: str
    engine: str = "torch"  # torch | onnx
    onnx: str | None = None  # default: <model>/model.onnx
    max_records: int = 10_000  # per request
    max_body_bytes: int = 16 << 20
    threads: int = 1  # intra-op threads of the model, per worker process
    max_batch_rows: int = 16_384  # rows scored in one pass when requests are batched
    watch: bool = False  # reload when the model folder (or the symlink naming it) changes
    watch_seconds: float = 2.0  # how often --watch looks

    def __post_init__(self) -> None:
        if self.engine not in ("torch", "onnx"):
            raise ConfigError(f"--engine must be torch or onnx, got {self.engine!r}")
        for name in ("max_records", "max_body_bytes", "threads", "max_batch_rows"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if not self.watch_seconds > 0:
            raise ConfigError(f"--watch-seconds must be positive, got {self.watch_seconds!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to score, and what names it. The id is read once, at load: the folder
    may be replaced later (a reload), and the answers this model gives must keep its id."""

    predictor: Predictor
    model_id: str
    folder: str  # the real folder, symlinks resolved
    loaded_at: float  # unix time
    load_seconds: float


def load_model(settings: ServeSettings) -> LoadedModel:
    """The settings' model, its manifest checked (Bundle.load), warmed up (lookup dicts built,
    kernels run once). A symlink is resolved first, so a later swap of the link does not
    change the folder this model was read from."""
    import torch

    t0 = time.perf_counter()
    # One process, many small requests: more intra-op threads only contend with each other.
    torch.set_num_threads(settings.threads)
    folder = Path(settings.model).resolve() if Path(settings.model).exists() else Path(settings.model)
    onnx = settings.onnx
    if settings.engine == "onnx" and onnx is None:
        onnx = str(folder / "model.onnx")  # the new folder's graph, not the old one's
    predictor = Predictor.load(folder, settings.engine, onnx, threads=settings.threads)
    model_id = predictor.bundle.model_id  # the manifest the load checked, not the folder's now
    predictor.warm_up()
    return LoadedModel(predictor, model_id, str(folder), time.time(), time.perf_counter() - t0)


def load_predictor(settings: ServeSettings) -> Predictor:
    """The settings' Predictor, warmed up (see :func:`load_model`)."""
    return load_model(settings).predictor


def settle_gc() -> None:
    """Tune this server process's garbage collector, once a model is loaded.

    The model, its libraries and the vocabularies are hundreds of thousands of objects that
    live as long as the process: a full collection walked them all and stalled every request
    in flight for ~100 ms, a few times a second under load. Frozen, collections only look at
    what requests allocate; a larger first threshold makes them rarer (requests allocate many
    short-lived containers, freed by reference counting anyway)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
