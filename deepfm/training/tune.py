"""``deepfm tune``: hyperparameter search with Optuna (``pip install deepfm[tune]``).

Each trial is a normal ``train`` run (early stopping inside it, and the Platt calibration
training fits on the validation rows) scored by its validation AUC or log loss (``metric``).
Optuna's TPE sampler proposes learning rates, embedding size and initial scale, dropout, L2,
min_count and batch size; a median pruner stops trials whose per-epoch validation score falls
behind. The search stops after ``trials`` trials or ``timeout`` seconds, whichever comes
first, and writes ``best.yaml`` so that ``deepfm train --config best.yaml`` trains the best
model again.

Tuning on AUC alone used to pick overconfident models (a better ranking at a worse log loss):
every trial is now calibrated on its validation rows before it is scored, so the winner is as
well calibrated as the defaults, and ``metric="logloss"`` ranks trials by calibrated log loss.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import yaml

from deepfm.config import RunConfig
from deepfm.errors import ConfigError
from deepfm.training.inputs import RunInputs
from deepfm.training.job import run_training
from deepfm.util.validation import Auto

log = logging.getLogger(__name__)

BATCH_SIZES = ("auto", 256, 512, 1024, 2048, 4096)  # auto: see TrainConfig.resolve_batch_size
EMBEDDING_DIMS = (8, 16, 32)
MIN_COUNTS = ("auto", 1, 2, 3, 5, 10, 20)  # auto: see deepfm.data.schema.auto_min_count
INIT_STDS = ("auto", 0.003, 0.01, 0.03, 0.1)  # auto: see deepfm.config.auto_init_std
EMBEDDING_LRS = ("auto", 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)  # auto: see TrainConfig.resolve_embedding_lr
BATCH_NORMS = ("auto", True, False)  # auto: see ModelConfig.resolved
METRICS: dict[str, Literal["maximize", "minimize"]] = {
    "auc": "maximize",
    "logloss": "minimize",
}  # valid_<metric> of each trial


def suggest(trial: Any, base: RunConfig) -> RunConfig:
    """The search space: one RunConfig per trial, everything else as in ``base``."""
    min_count = trial.suggest_categorical("min_count", MIN_COUNTS)
    fields = tuple(replace(f, min_count=min_count) for f in base.schema.fields)
    model = replace(
        base.model,
        embedding_dim=trial.suggest_categorical("embedding_dim", EMBEDDING_DIMS),
        dropout=trial.suggest_float("dropout", 0.0, 0.5),
        init_std=trial.suggest_categorical("init_std", INIT_STDS),
        batch_norm=trial.suggest_categorical("batch_norm", BATCH_NORMS),
    )
    training = replace(
        base.train,
        lr=trial.suggest_float("lr", 1e-4, 1e-2, log=True),
        embedding_lr=trial.suggest_categorical("embedding_lr", EMBEDDING_LRS),
        l2_embedding=trial.suggest_float("l2_embedding", 1e-7, 1e-2, log=True),
        batch_size=trial.suggest_categorical("batch_size", BATCH_SIZES),
        progress=False,
    )
    return replace(base, schema=replace(base.schema, fields=fields), model=model, train=training)


def tune(
    config: RunConfig,
    inputs: RunInputs,
    out: str | Path,
    trials: int = 50,
    timeout: float | None = None,
    keep_trials: bool = False,
    metric: str = "auc",
    tracker: Any = None,
) -> dict[str, Any]:
    """Search, write ``best.yaml``, ``trials.json`` and ``trials.md`` to ``out``, and return
    the summary. Every trial trains on ``inputs``. The default config is trial 0, so the
    search can only improve on it. ``metric``: "auc" (higher is better) or "logloss" (lower),
    on the validation rows. ``tracker``: a started run whose children the trials are (default:
    one from config.track)."""
    if config.track and tracker is None:  # one parent run, each trial a child run
        from deepfm.training.tracking import group

        files = lambda: [Path(out) / "best.yaml", Path(out) / "trials.md"]  # noqa: E731
        with group(config.track, f"tune {Path(out).name}", config, files) as parent:
            return tune(replace(config, track=()), inputs, out, trials, timeout, keep_trials, metric, parent)
    try:
        import optuna
    except ImportError as exc:  # an optional extra
        raise ConfigError("deepfm tune needs Optuna: pip install 'deepfm[tune]'") from exc
    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    if metric not in METRICS:
        raise ConfigError(f"--metric must be one of {list(METRICS)}, got {metric!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction=METRICS[metric],
        sampler=optuna.samplers.TPESampler(seed=config.train.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
    )
    # Trial 0 is the config as given (defaults when nothing was set), mapped into the space.
    study.enqueue_trial(_as_params(config), skip_if_exists=True)
    trial_runs = _Trials(config, inputs, out, f"valid_{metric}", keep_trials, tracker)
    study.optimize(trial_runs.objective, n_trials=trials, timeout=timeout, catch=())
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise ConfigError("no trial finished: raise --timeout or --trials")
    best = study.best_trial
    best_dict = trial_runs.configs[best.number].to_dict()
    best_dict["train"]["progress"] = True
    (out / "best.yaml").write_text(yaml.safe_dump(best_dict, sort_keys=False))
    summary = _summary(study, trial_runs.results, inputs, metric)
    (out / "trials.json").write_text(json.dumps(summary, indent=1, default=str))
    if tracker is not None:
        tracker.log_metrics(
            {f"best_{k}": v for k, v in trial_runs.results[best.number].items()}, step=len(study.trials)
        )
    (out / "trials.md").write_text(to_markdown(summary))
    log.info("best trial %d: valid %s %.4f; config written to %s", best.number, metric, best.value, out / "best.yaml")
    return summary


class _Trials:
    """The runs of a study: each trial trains a model with its config, reports every epoch's
    validation score to the pruner, and records its figures."""

    def __init__(
        self, config: RunConfig, inputs: RunInputs, out: Path, key: str, keep: bool, tracker: Any = None
    ) -> None:
        self.config, self.inputs, self.out, self.key, self.keep = config, inputs, out, key, keep
        self.tracker = tracker
        self.configs: dict[int, RunConfig] = {}
        self.results: dict[int, dict[str, Any]] = {}

    def objective(self, trial: Any) -> float:
        import optuna

        run_config = suggest(trial, self.config)
        self.configs[trial.number] = run_config
        folder = self.out / "trials" / f"{trial.number:03d}"

        def report(row: dict[str, float]) -> None:
            if self.key in row and math.isfinite(row[self.key]):
                trial.report(row[self.key], int(row["epoch"]))
                if trial.should_prune():
                    raise optuna.TrialPruned()

        try:
            track = self.tracker.child() if self.tracker is not None else None
            bundle = run_training(run_config, self.inputs, folder, on_epoch=report, track=track)
        finally:
            if not self.keep:
                shutil.rmtree(folder, ignore_errors=True)
        m = bundle.metrics
        if self.key not in m:
            raise ConfigError("tuning needs validation rows: give --split with a validation part or --valid")
        keys = ("valid_auc", "valid_logloss", "test_auc", "test_logloss", "epochs", "train_seconds")
        self.results[trial.number] = {k: m.get(k) for k in keys}
        self.results[trial.number]["calibrated"] = m.get("valid_calibration") is not None
        return float(m[self.key])


def _summary(study: Any, results: dict[int, dict[str, Any]], inputs: RunInputs, metric: str) -> dict[str, Any]:
    """trials.json: every trial's state, figures and parameters; the best and the default."""
    import optuna

    best = study.best_trial
    rows = [
        {
            "trial": t.number,
            "state": t.state.name.lower(),
            "valid_auc": None,  # pruned trials have none
            **results.get(t.number, {}),
            **t.params,
        }
        for t in study.trials
    ]
    return {
        "data": inputs.data,
        "trials": len(study.trials),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
        "metric": metric,
        "best_trial": best.number,
        "best_valid_auc": results[best.number]["valid_auc"],
        "best_valid_logloss": results[best.number]["valid_logloss"],
        "best_params": best.params,
        "best": results[best.number],
        "default": results.get(0),
        "rows": rows,
    }


def _as_params(config: RunConfig) -> dict[str, Any]:
    """A config's values as a point of the search space (nearest allowed choice)."""
    t, m = config.train, config.model
    return {
        "min_count": nearest_choice(config.schema.fields[0].min_count, MIN_COUNTS),
        "embedding_dim": nearest_choice(m.embedding_dim, EMBEDDING_DIMS),
        "dropout": min(max(float(m.dropout), 0.0), 0.5),
        "lr": min(max(t.lr, 1e-4), 1e-2),
        "embedding_lr": nearest_choice(t.embedding_lr, EMBEDDING_LRS),
        "l2_embedding": min(max(t.l2_embedding, 1e-7), 1e-2),
        "batch_size": nearest_choice(t.batch_size, BATCH_SIZES),
        "init_std": nearest_choice(m.init_std, INIT_STDS),
        "batch_norm": m.batch_norm,
    }


def nearest_choice(value: float | Auto, choices: tuple[Any, ...]) -> Any:
    """ "auto" as itself, a number as the choice nearest it on a log scale."""
    if value == "auto":
        return value
    numbers = [c for c in choices if c != "auto"]
    return min(numbers, key=lambda c: abs(math.log(float(c) / float(value))))


def to_markdown(summary: dict[str, Any]) -> str:
    keys = [
        "trial",
        "state",
        "valid_auc",
        "valid_logloss",
        "test_auc",
        "test_logloss",
        "epochs",
        *summary["best_params"].keys(),
    ]
    lines = [
        f"Data: `{summary['data']}`; {summary['trials']} trials ({summary['pruned']} pruned), ranked by valid "
        f"{summary['metric']}; best: trial {summary['best_trial']}, valid AUC {summary['best_valid_auc']:.4f}, "
        f"valid log loss {summary['best_valid_logloss']:.4f} (calibrated on the validation rows).",
        "",
        "| " + " | ".join(keys) + " |",
        "|" + "---|" * len(keys),
    ]
    for row in summary["rows"]:
        lines.append("| " + " | ".join(_cell(row.get(k)) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
