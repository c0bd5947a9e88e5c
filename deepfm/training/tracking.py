"""Experiment tracking: train, tune and compare runs in TensorBoard or MLflow (``pip install 'deepfm[track]'``).

    deepfm train --data clicks.tsv --track tensorboard:runs/tb --track mlflow:http://127.0.0.1:5000

A spec names where runs go: ``tensorboard:DIR`` (event files under DIR/<run>) or
``mlflow[:TRACKING_URI]`` (without a URI: MLflow's own default, MLFLOW_TRACKING_URI).
A tracked run gets the resolved config as parameters, every epoch's row (train and
validation AUC/logloss, learning rate, samples/s) at step = epoch, the within-epoch learning
curve at step = training rows seen, the final valid/test metrics (ECE and throughput too),
and the bundle and report.html as artifacts (MLflow: the bundle as a pyfunc model, see
:mod:`deepfm.integrations.mlflow`). ``tune`` and ``compare`` log one parent run whose
children are the trials or the model/seed runs.

A tracker never costs a run: its first failing call (a server that is down, a full disk)
logs one warning, and from then on it does nothing; the model and metrics.json are written
to the output folder as always. MLflow retries a failing request first (its
MLFLOW_HTTP_REQUEST_MAX_RETRIES and MLFLOW_HTTP_REQUEST_TIMEOUT decide for how long).

This module imports no tracking package at import time: ``import deepfm`` stays light, and
training imports it only when a run is tracked. The specs are parsed by deepfm.config.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from deepfm.config import parse_spec, specs
from deepfm.errors import ConfigError

if TYPE_CHECKING:
    from deepfm.bundle import Bundle
    from deepfm.config import RunConfig

log = logging.getLogger(__name__)
PIP = "pip install 'deepfm[track]'"
RECORD = "tracking.json"  # in the output folder: where its run went (a warm start links to it)
# Top-level numbers of metrics.json logged once at the end (valid_*/test_* come from metrics.summary).
FINAL = ("epochs", "best_epoch", "train_rows", "train_samples_per_s", "train_seconds", "preprocess_seconds",
         "preprocess_rows_per_s", "valid_predict_samples_per_s", "test_predict_samples_per_s", "total_seconds")  # fmt: skip


class Tracker(Protocol):
    """Where a run's parameters, metrics and files go. ``child`` is an unstarted run nested
    under this one (tune's trials, compare's runs); ``start`` opens the run."""

    def start(self, name: str, tags: dict[str, str] | None = None) -> None:
        """Open the run (a child: nested under its parent)."""

    def log_params(self, params: dict[str, Any]) -> None:
        """Settings, nested mappings as dotted keys ("train.lr")."""

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        """Numbers at one step (non-numbers and non-finite values are left out)."""

    def log_steps(self, points: list[tuple[int, dict[str, Any]]]) -> None:
        """Numbers at many steps at once: a learning curve."""

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        """A file or folder."""

    def log_bundle(self, bundle: Bundle) -> None:
        """The trained model folder."""

    def child(self) -> Tracker:
        """An unstarted run nested under this one."""

    def end(self, status: str = "FINISHED") -> None:
        """Close the run: FINISHED, FAILED or KILLED."""

    def record(self) -> dict[str, Any]:
        """Where the run went, for tracking.json (empty: nowhere)."""


class NullTracker:
    """Tracks nothing: the run without --track."""

    def start(self, name: str, tags: dict[str, str] | None = None) -> None: ...
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, Any], step: int) -> None: ...
    def log_steps(self, points: list[tuple[int, dict[str, Any]]]) -> None: ...
    def log_artifact(self, path: Path, folder: str | None = None) -> None: ...
    def log_bundle(self, bundle: Bundle) -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...

    def child(self) -> Tracker:
        return self

    def record(self) -> dict[str, Any]:
        return {}


class _Health:
    """Shared by a run and its children: one warning, then every call is a no-op."""

    def __init__(self, where: str) -> None:
        self.where, self.dead = where, False

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.dead:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any tracker failure must leave training alone
            self.dead = True
            log.warning("tracking to %s failed (%s: %s: %s); training goes on without it, its metrics stay in the "
                        "output folder", self.where, what, type(exc).__name__, str(exc).splitlines()[0][:300] if str(exc) else "")  # fmt: skip
            return None


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a mapping (trackers take floats; JSON nulls and NaN are left out)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
            out[k] = float(v)
    return out


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config mappings as dotted keys ("train.lr"), values as strings."""
    out: dict[str, str] = {}
    for k, v in params.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v if isinstance(v, str) else json.dumps(v, default=str)
    return out


class TensorBoardTracker:
    """Event files under ``folder/<run>`` (a child: ``folder/<parent>/<run>``), written by
    torch's SummaryWriter; parameters and artifact paths as text summaries."""

    def __init__(self, folder: str | Path, health: _Health | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401 - fails here without the tensorboard package

        self.folder = Path(folder)
        self.writer: Any = None
        self.path: Path | None = None
        self.health = health or _Health(f"tensorboard:{folder}")
        self.run_name = ""

    def start(self, name: str, tags: dict[str, str] | None = None) -> None:
        self.health.call("start", self._start, name, tags or {})

    def _start(self, name: str, tags: dict[str, str]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        path, n = self.folder / _safe(name), 1
        while path.exists():  # a run of the same name: its own folder, not mixed into the old events
            n += 1
            path = self.folder / f"{_safe(name)}-{n}"
        self.path, self.run_name = path, path.name
        self.writer = SummaryWriter(log_dir=str(path))
        if tags:
            self.writer.add_text("tags", _table(tags))

    def log_params(self, params: dict[str, Any]) -> None:
        if self.writer is not None:
            self.health.call("log_params", self.writer.add_text, "params", _table(flatten(params)))

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        if self.writer is not None:
            self.health.call("log_metrics", self._scalars, _numbers(metrics), step)

    def log_steps(self, points: list[tuple[int, dict[str, Any]]]) -> None:
        for step, metrics in points:
            self.log_metrics(metrics, step)

    def _scalars(self, metrics: dict[str, float], step: int) -> None:
        assert self.writer is not None
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        # TensorBoard keeps no files: it names where they are.
        if self.writer is not None:
            self.health.call(
                "log_artifact",
                self.writer.add_text,
                f"artifacts/{folder or Path(path).name}",
                str(Path(path).resolve()),
            )

    def log_bundle(self, bundle: Bundle) -> None:
        if bundle.path is not None:
            self.log_artifact(bundle.path, "bundle")

    def child(self) -> Tracker:
        folder = self.path if self.path is not None else self.folder
        return TensorBoardTracker(folder, self.health)

    def end(self, status: str = "FINISHED") -> None:
        if self.writer is not None:
            if status != "FINISHED":
                self.health.call("end", self.writer.add_text, "status", status)
            self.health.call("end", self.writer.close)
            self.writer = None

    def record(self) -> dict[str, Any]:
        return {"tensorboard": str(self.path)} if self.path is not None else {}


class MlflowTracker:
    """A run in an MLflow tracking server (or store) through ``MlflowClient``: no global state
    of the ``mlflow`` module is touched. Experiment: $MLFLOW_EXPERIMENT_NAME, else "deepfm".
    With ``register``, the bundle is also registered as that model name's next version."""

    def __init__(
        self, uri: str | None = None, register: str | None = None, parent: MlflowTracker | None = None
    ) -> None:
        from mlflow import MlflowClient

        self.client: Any = parent.client if parent is not None else MlflowClient(tracking_uri=uri)
        self.uri: str = parent.uri if parent is not None else (uri or self.client.tracking_uri)
        self.health: _Health = parent.health if parent is not None else _Health(f"mlflow:{self.uri}")
        self.register, self.parent = register, parent
        self.run_id: str | None = None
        self.experiment_id: str | None = parent.experiment_id if parent is not None else None

    def start(self, name: str, tags: dict[str, str] | None = None) -> None:
        self.health.call("start", self._start, name, dict(tags or {}))

    def _start(self, name: str, tags: dict[str, str]) -> None:
        if self.experiment_id is None:
            experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "deepfm")
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
        if self.parent is not None and self.parent.run_id is not None:
            tags["mlflow.parentRunId"] = self.parent.run_id  # how MLflow's UI nests runs
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        self.run_id = run.info.run_id
        log.info("tracking run %s in %s (experiment %s)", self.run_id, self.uri, self.experiment_id)

    def log_params(self, params: dict[str, Any]) -> None:
        if self.run_id is not None:
            self.health.call("log_params", self._params, flatten(params))

    def _params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in params.items()]  # 6000: MLflow's longest parameter value
        for i in range(0, len(items), 100):  # a batch takes at most 100 parameters
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        self.log_steps([(step, metrics)])

    def log_steps(self, points: list[tuple[int, dict[str, Any]]]) -> None:
        """Every point in as few requests as MLflow allows (one request costs ~0.1 s)."""
        if self.run_id is not None:
            self.health.call("log_metrics", self._metrics, [(step, _numbers(m)) for step, m in points])

    def _metrics(self, points: list[tuple[int, dict[str, float]]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for step, metrics in points for k, v in metrics.items()]
        for i in range(0, len(items), 1000):  # a batch takes at most 1000 metrics
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        if self.run_id is not None:
            log_one = self.client.log_artifacts if Path(path).is_dir() else self.client.log_artifact
            self.health.call("log_artifact", log_one, self.run_id, str(path), folder)

    def log_bundle(self, bundle: Bundle) -> None:
        """The bundle as the run's pyfunc model "model" (its files under model/artifacts/bundle)."""
        if self.run_id is not None:
            from deepfm.integrations.mlflow import log_model

            self.health.call("log_bundle", log_model, bundle, "model", run_id=self.run_id, tracking_uri=self.uri,
                             registered_model_name=self.register)  # fmt: skip

    def child(self) -> Tracker:
        return MlflowTracker(parent=self)

    def end(self, status: str = "FINISHED") -> None:
        if self.run_id is not None:
            self.health.call("end", self._end, status)

    def _end(self, status: str) -> None:
        # MLflow prints the run's link to stdout, where deepfm train prints its JSON summary: log it.
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            self.client.set_terminated(self.run_id, status)
        for line in printed.getvalue().splitlines():
            log.info("%s", line)

    def record(self) -> dict[str, Any]:
        return {"mlflow": {"tracking_uri": self.uri, "run_id": self.run_id}} if self.run_id is not None else {}


class MultiTracker:
    """Several trackers at once (--track given twice): every call goes to each."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    def _each(self, method: str, *args: Any) -> None:
        for t in self.trackers:
            getattr(t, method)(*args)

    def start(self, name: str, tags: dict[str, str] | None = None) -> None:
        self._each("start", name, tags)

    def log_params(self, params: dict[str, Any]) -> None:
        self._each("log_params", params)

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        self._each("log_metrics", metrics, step)

    def log_steps(self, points: list[tuple[int, dict[str, Any]]]) -> None:
        self._each("log_steps", points)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self._each("log_artifact", path, folder)

    def log_bundle(self, bundle: Bundle) -> None:
        self._each("log_bundle", bundle)

    def end(self, status: str = "FINISHED") -> None:
        self._each("end", status)

    def child(self) -> Tracker:
        return MultiTracker([t.child() for t in self.trackers])

    def record(self) -> dict[str, Any]:
        return {k: v for t in self.trackers for k, v in t.record().items()}


def open_tracker(track: str | Sequence[str] | None, register: str | None = None) -> Tracker:
    """The unstarted tracker of one spec or several (None or none: a NullTracker). A missing
    package is a ConfigError naming the pip command; ``register`` needs an mlflow spec."""
    parsed = [parse_spec(s) for s in specs(track)]
    if register is not None and not any(kind == "mlflow" for kind, _ in parsed):
        raise ConfigError(f"--register {register} needs an MLflow tracker: add --track mlflow[:TRACKING_URI]")
    trackers: list[Tracker] = []
    for kind, target in parsed:
        try:
            trackers.append(
                TensorBoardTracker(str(target)) if kind == "tensorboard" else MlflowTracker(target, register)
            )
        except ImportError as exc:
            raise ConfigError(
                f"--track {kind} needs the tracking extra ({exc.name or exc} is not installed): {PIP}"
            ) from None
    if not trackers:
        return NullTracker()
    return trackers[0] if len(trackers) == 1 else MultiTracker(trackers)


def _as_tracker(track: Any, register: str | None = None) -> Tracker:
    return open_tracker(track, register) if track is None or isinstance(track, (str, list, tuple)) else track


# ---------------------------------------------------------------- runs of train, tune, compare
def track_run(track: Any, config: RunConfig, run: Callable[..., Bundle], out: str | Path,
              on_epoch: Callable[[dict[str, float]], None] | None = None, warm_start: str | Path | None = None) -> Bundle:  # fmt: skip
    """``train``'s hook: start a tracked run (``track``: spec(s) or an unstarted Tracker),
    call ``run(config, on_epoch=...)`` (train without tracking), then log the result."""
    from dataclasses import replace

    tracker = _as_tracker(track)
    if int(os.environ.get("RANK", "0")) != 0:  # data-parallel: rank 0 speaks for the run
        tracker = NullTracker()
    tags = {"deepfm.out": str(out), "deepfm.model": config.model.kind}
    base = _record_of(warm_start) if warm_start is not None else {}
    if warm_start is not None:
        tags["deepfm.warm_start"] = str(warm_start)
        if "mlflow" in base:  # yesterday's run, for the daily chain of warm starts
            tags["deepfm.warm_start_run_id"] = str(base["mlflow"].get("run_id"))
    tracker.start(Path(out).name or "run", tags)
    tracker.log_params(config.to_dict())

    def epoch(row: dict[str, float]) -> None:
        tracker.log_metrics(row, step=int(row["epoch"]))
        if on_epoch is not None:
            on_epoch(row)

    with _ending(tracker):
        bundle = run(replace(config, track=()), on_epoch=epoch)
        log_result(tracker, bundle, Path(out))
    return bundle


def log_result(tracker: Tracker, bundle: Bundle, out: Path) -> None:
    """The end of a trained run: the resolved settings, the learning curve, the final metrics,
    the bundle and report.html; where the run went is written to ``out``/tracking.json."""
    m = bundle.metrics
    tracker.log_params({"resolved": m.get("resolved") or {}, "neg_sample_rate": m.get("neg_sample_rate")})
    points, rows = [], 0
    for point in m.get("train_curve") or []:
        rows += int(point.get("rows") or 0)  # step: training rows seen, the learning curve's x
        points.append((rows, {f"curve_{k}": v for k, v in point.items() if k != "rows"}))
    tracker.log_steps(points)
    final = {k: m[k] for k in FINAL if k in m}
    final.update({k: v for k, v in m.items() if k.startswith(("valid_", "test_")) and not k.endswith("_calibration")})
    tracker.log_metrics(final, step=int(m.get("epochs") or 0))
    tracker.log_bundle(bundle)
    if (out / "report.html").is_file():
        tracker.log_artifact(out / "report.html")
    record = tracker.record()
    if record and out.is_dir():
        (out / RECORD).write_text(json.dumps(record, indent=1))


@contextlib.contextmanager
def group(track: Any, name: str, config: RunConfig, files: Callable[[], list[Path]] = list) -> Iterator[Tracker]:
    """A parent run for tune or compare (each trial or model run a ``child()``); at its end
    ``files()`` are logged as artifacts."""
    tracker = _as_tracker(track)
    tracker.start(name, {"deepfm.command": name.split()[0]})
    tracker.log_params(config.to_dict())
    with _ending(tracker):
        yield tracker
        for f in files():
            if f.is_file():
                tracker.log_artifact(f)


@contextlib.contextmanager
def _ending(tracker: Tracker) -> Iterator[None]:
    """End the run FINISHED, KILLED on Ctrl-C or a pruned trial, FAILED on an error; re-raise."""
    try:
        yield
    except BaseException as exc:
        tracker.end("KILLED" if isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "TrialPruned" else "FAILED")
        raise
    tracker.end("FINISHED")


def _record_of(folder: str | Path) -> dict[str, Any]:
    try:
        data = json.loads((Path(folder) / RECORD).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "run"


def _table(values: dict[str, str]) -> str:
    """A markdown table (TensorBoard's text tab renders it)."""
    return "| key | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in values.items())
