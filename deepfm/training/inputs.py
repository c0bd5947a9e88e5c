"""What a training run reads, written down so it can be checked and carried on.

:class:`RunInputs` names a run's data files, their split, the encoded-data cache, negative
downsampling and a warm start. A run writes it to ``run.json`` in its output folder, beside
the config, the identity of every file (path, size, modification time) and the number of
processes; ``deepfm train --resume`` reads it back (:func:`check_resume`), checks that the
files are the ones the run started on, and carries on. ``compare`` and ``tune`` pass one
RunInputs to each of their runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from deepfm.config import RunConfig, with_overrides
from deepfm.data.column_split import ColumnSplit
from deepfm.data.storage import data_identity, is_dataset, list_files
from deepfm.errors import ConfigError, DataError
from deepfm.training.checkpoint import CHECKPOINT
from deepfm.training.distributed import resolve_device
from deepfm.training.sharded_trainer import check_sharded
from deepfm.util.files import write_atomic

log = logging.getLogger(__name__)

RUN = "run.json"  # how the run was started: what `deepfm train --resume` starts again
DEFAULT_SPLIT = (0.9, 0.1, 0.0)  # without --valid or --split: the last 10% validate
# Training settings a resumed run must keep: they shape the steps it has taken.
FIXED_ON_RESUME = (
    "seed",
    "batch_size",
    "l2_embedding",
    "weight_decay",
    "lr_decay",
    "checkpoint_every",
    "shard_tables",
    "reset_embeddings",
)


def parse_split(text: str | tuple[float, ...] | list[float] | None) -> tuple[float, float, float] | None:
    """'0.8,0.1,0.1' -> (0.8, 0.1, 0.1); two numbers mean no test part."""
    if text is None:
        return None
    try:
        parts = [float(x) for x in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        raise ConfigError(f"--split wants 'train,valid[,test]' fractions like 0.8,0.1,0.1, got {text!r}") from None
    if len(parts) == 2:
        parts.append(0.0)
    if len(parts) != 3 or any(p < 0 for p in parts) or parts[0] <= 0:
        raise ConfigError(f"--split wants 'train,valid[,test]' fractions like 0.8,0.1,0.1, got {text!r}")
    if abs(sum(parts) - 1.0) > 1e-6:
        raise ConfigError(f"--split fractions must add up to 1, got {text!r} (sum {sum(parts):g})")
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True)
class RunInputs:
    """What a run reads. ``data`` is split by row order into train, valid and test parts by
    ``split`` (fractions, or text like "0.8,0.1,0.1"), or by a column's value (``split_by``,
    time), or ``valid`` and ``test`` are files (or datasets) of their own. ``cache``: keep the encoded data in ``cache_dir`` for later runs on the same
    files. ``neg_sample_rate`` < 1 trains on that share of the negatives. ``warm_start``: a
    model folder to continue from."""

    data: str | tuple[str, ...]
    valid: str | tuple[str, ...] | None = None
    test: str | tuple[str, ...] | None = None
    split: tuple[float, float, float] | None = None
    cache: bool = True
    cache_dir: str | None = None
    neg_sample_rate: float = 1.0
    warm_start: str | None = None
    split_by: ColumnSplit | None = None

    def __post_init__(self) -> None:
        # Paths as text (a Path or a str may be given; a list for several), the split as three fractions.
        for name in ("data", "valid", "test", "cache_dir", "warm_start"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                object.__setattr__(self, name, value[0] if len(value) == 1 else tuple(str(v) for v in value))
            elif value is not None:
                object.__setattr__(self, name, str(value))
        object.__setattr__(self, "split", parse_split(self.split))

    def with_default_split(self) -> RunInputs:
        """These inputs, with the last 10% of ``data`` validating when nothing else does."""
        if self.split is not None or self.valid is not None or self.split_by is not None:
            return self
        log.info("no --valid or --split given: using the last 10%% of %s for validation", self.data)
        return replace(self, split=DEFAULT_SPLIT)

    def identities(self) -> list[Any]:
        """The identity of the data, valid and test files (None where absent; a list of the
        files' identities for a dataset)."""
        return [data_identity(p) for p in (self.data, self.valid, self.test)]

    def to_json(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "valid": self.valid,
            "test": self.test,
            "split": self.split,
            "cache": self.cache,
            "cache_dir": self.cache_dir,
            "neg_sample_rate": self.neg_sample_rate,
            "warm_start": self.warm_start,
            "split_by": dataclasses.asdict(self.split_by) if self.split_by is not None else None,
        }

    @classmethod
    def from_json(cls, run: dict[str, Any]) -> RunInputs:
        """From ``run.json`` (one written before downsampling or warm start existed has neither)."""
        return cls(
            data=_spec(run["data"]) or "",
            valid=_spec(run["valid"]),
            test=_spec(run["test"]),
            split=run["split"],
            cache=run["cache"],
            cache_dir=run["cache_dir"],
            neg_sample_rate=run.get("neg_sample_rate", 1.0),
            warm_start=run.get("warm_start"),
            split_by=ColumnSplit(**run["split_by"]) if run.get("split_by") else None,
        )


def _spec(value: str | list[str] | None) -> str | tuple[str, ...] | None:
    """A data argument read back from JSON (several files: a list there)."""
    return tuple(value) if isinstance(value, list) else value


def write_run(out: Path, config: RunConfig, inputs: RunInputs, world: int) -> None:
    """``out/run.json``: the config, the inputs, their files' identities, the processes."""
    run = {"config": config.to_dict(), **inputs.to_json(), "files": inputs.identities(), "world_size": world}
    write_atomic(out / RUN, json.dumps(run, indent=1).encode())


def check_start(config: RunConfig, inputs: RunInputs, out: str | Path, nproc: int = 1) -> None:
    """What a run checks before it reads the data: that the data files exist, the device (one
    GPU for each of the ``nproc`` processes on this machine), and that ``out`` holds no
    interrupted run. ``deepfm train --nproc N`` calls it before it starts any process, so a
    mistake is one error line rather than one per rank."""
    for role, path in (("data", inputs.data), ("valid", inputs.valid), ("test", inputs.test)):
        if path is None:
            continue
        if is_dataset(path):
            list_files(path)  # a folder without files, a glob matching none: said here
        elif isinstance(path, str) and not Path(path).exists():
            raise DataError(f"file not found (the {role} file)", path=str(path))
    check_sharded(config.train)  # sharded tables: the settings they cannot train with, torchrec installed
    device = resolve_device(config.train.device)
    if device.type == "cuda" and nproc > 1 and torch.cuda.device_count() < nproc:
        raise ConfigError(
            f"{nproc} processes on this machine want a GPU each; PyTorch sees {torch.cuda.device_count()}: "
            "start fewer processes, or train on the CPU (--device cpu)"
        )
    if (Path(out) / CHECKPOINT).exists():
        raise ConfigError(
            f"{out} holds the checkpoint of an interrupted run: carry on with "
            f"'deepfm train --resume {out}', or remove {Path(out) / CHECKPOINT} to start again"
        )


def check_resume(
    out: str | Path, train_overrides: dict[str, Any] | None = None, world: int = 1
) -> tuple[RunConfig, RunInputs]:
    """The config (with ``train_overrides``) and inputs of the interrupted run in ``out``, or a
    ConfigError or DataError saying why it cannot be resumed as asked: in ``world`` processes,
    on the files it started with. ``deepfm train --resume --nproc N`` calls it before it
    starts any process."""
    out = Path(out)
    run = _read_run(out)
    config = RunConfig.from_dict(run["config"], where=str(out / RUN))
    changed = sorted(k for k, v in (train_overrides or {}).items() if v is not None and k in FIXED_ON_RESUME)
    if changed:
        raise ConfigError(f"--resume carries on the same run: {', '.join(changed)} cannot change")
    config = with_overrides(config, model={}, train=train_overrides or {}, data={})
    inputs = RunInputs.from_json(run)
    if inputs.identities() != run["files"]:
        raise DataError(
            f"the data files changed since the run started ({run['files']}); start it again without --resume"
        )
    started = run.get("world_size", 1)  # run.json before deepfm recorded it: checked on the checkpoint only
    if "world_size" in run and started != world:
        raise ConfigError(
            f"{out} was started in {started} process(es) and must carry on in as many (the checkpoint counts "
            f"global batches of --batch-size x processes): resume it with {'--nproc ' + str(started) if started > 1 else 'no --nproc'}"
        )
    return config, inputs


def _read_run(out: Path) -> dict[str, Any]:
    if not (out / RUN).is_file():
        done = " (it holds a finished model)" if (out / "manifest.json").is_file() else ""
        raise ConfigError(f"nothing to resume in {out}: no {RUN}{done}")
    try:
        run = json.loads((out / RUN).read_text())
        missing = {"config", "data", "valid", "test", "split", "cache", "cache_dir", "files"} - set(run)
    except (OSError, json.JSONDecodeError, TypeError) as exc:
        raise ConfigError(f"{out / RUN}: unreadable ({exc})") from None
    if missing:
        raise ConfigError(f"{out / RUN}: not a run description written by deepfm train (no {sorted(missing)})")
    return run
