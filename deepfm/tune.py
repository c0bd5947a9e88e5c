"""``deepfm tune``: hyperparameter search with Optuna (``pip install deepfm[tune]``).

Each trial is a normal ``train`` run (early stopping inside it) scored by its validation
AUC. Optuna's TPE sampler proposes learning rates, embedding size, dropout, L2, min_count and
batch size; a median pruner stops trials whose per-epoch validation AUC falls behind. The
search stops after ``trials`` trials or ``timeout`` seconds, whichever comes first, and
writes ``best.yaml`` so that ``deepfm train --config best.yaml`` trains the best model again.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from deepfm.config import RunConfig
from deepfm.errors import ConfigError
from deepfm.train import train

log = logging.getLogger(__name__)

BATCH_SIZES = ("auto", 256, 512, 1024, 2048, 4096)  # auto: see TrainConfig.resolve_batch_size
EMBEDDING_DIMS = (8, 16, 32)
MIN_COUNTS = (1, 2, 3, 5, 10)


def suggest(trial: Any, base: RunConfig) -> RunConfig:
    """The search space: one RunConfig per trial, everything else as in ``base``."""
    min_count = trial.suggest_categorical("min_count", MIN_COUNTS)
    fields = tuple(replace(f, min_count=min_count) for f in base.schema.fields)
    model = replace(
        base.model,
        embedding_dim=trial.suggest_categorical("embedding_dim", EMBEDDING_DIMS),
        dropout=trial.suggest_float("dropout", 0.0, 0.5),
    )
    training = replace(
        base.train,
        lr=trial.suggest_float("lr", 1e-4, 1e-2, log=True),
        embedding_lr=trial.suggest_float("embedding_lr", 3e-4, 3e-2, log=True),
        l2_embedding=trial.suggest_float("l2_embedding", 1e-7, 1e-2, log=True),
        batch_size=trial.suggest_categorical("batch_size", BATCH_SIZES),
        progress=False,
    )
    return replace(base, schema=replace(base.schema, fields=fields), model=model, train=training)


def tune(
    config: RunConfig,
    data: str | Path,
    out: str | Path,
    trials: int = 50,
    timeout: float | None = None,
    valid: str | Path | None = None,
    test: str | Path | None = None,
    split: str | None = None,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    keep_trials: bool = False,
) -> dict[str, Any]:
    """Search, write ``best.yaml``, ``trials.json`` and ``trials.md`` to ``out``, and return
    the summary. The default config is trial 0, so the search can only improve on it."""
    try:
        import optuna
    except ImportError as exc:  # an optional extra
        raise ConfigError("deepfm tune needs Optuna: pip install 'deepfm[tune]'") from exc
    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=config.train.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
    )
    # Trial 0 is the config as given (defaults when nothing was set), mapped into the space.
    study.enqueue_trial(_as_params(config), skip_if_exists=True)
    configs: dict[int, RunConfig] = {}
    results: dict[int, dict[str, Any]] = {}

    def objective(trial: Any) -> float:
        run_config = suggest(trial, config)
        configs[trial.number] = run_config
        folder = out / "trials" / f"{trial.number:03d}"

        def report(row: dict[str, float]) -> None:
            if "valid_auc" in row and math.isfinite(row["valid_auc"]):
                trial.report(row["valid_auc"], int(row["epoch"]))
                if trial.should_prune():
                    raise optuna.TrialPruned()

        try:
            bundle = train(run_config, data, folder, valid=valid, test=test, split=split, cache=cache, cache_dir=cache_dir, on_epoch=report)
        finally:
            if not keep_trials:
                shutil.rmtree(folder, ignore_errors=True)
        m = bundle.metrics
        if "valid_auc" not in m:
            raise ConfigError("tuning needs validation rows: give --split with a validation part or --valid")
        results[trial.number] = {k: m.get(k) for k in ("valid_auc", "valid_logloss", "test_auc", "test_logloss", "epochs", "train_seconds")}
        return float(m["valid_auc"])

    study.optimize(objective, n_trials=trials, timeout=timeout, catch=())
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise ConfigError("no trial finished: raise --timeout or --trials")
    best = study.best_trial
    best_config = configs[best.number]
    best_dict = best_config.to_dict()
    best_dict["train"]["progress"] = True
    (out / "best.yaml").write_text(yaml.safe_dump(best_dict, sort_keys=False))
    rows = [
        {
            "trial": t.number,
            "state": t.state.name.lower(),
            "valid_auc": t.value,
            **results.get(t.number, {}),
            **t.params,
        }
        for t in study.trials
    ]
    summary = {
        "data": str(data),
        "trials": len(study.trials),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
        "best_trial": best.number,
        "best_valid_auc": best.value,
        "best_params": best.params,
        "best": results[best.number],
        "default": results.get(0),
        "rows": rows,
    }
    (out / "trials.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "trials.md").write_text(to_markdown(summary))
    log.info("best trial %d: valid AUC %.4f; config written to %s", best.number, best.value, out / "best.yaml")
    return summary


def _as_params(config: RunConfig) -> dict[str, Any]:
    """A config's values as a point of the search space (nearest allowed choice)."""
    t, m = config.train, config.model
    min_count = config.schema.fields[0].min_count

    def nearest(value: float, choices: tuple[Any, ...]) -> Any:
        numbers = [c for c in choices if isinstance(c, int)]
        return min(numbers, key=lambda c: abs(math.log(c) - math.log(max(value, 1e-12))))

    return {
        "min_count": nearest(min_count, MIN_COUNTS),
        "embedding_dim": nearest(m.embedding_dim, EMBEDDING_DIMS),
        "dropout": min(max(float(m.dropout), 0.0), 0.5),
        "lr": min(max(t.lr, 1e-4), 1e-2),
        "embedding_lr": min(max(t.embedding_lr, 3e-4), 3e-2),
        "l2_embedding": min(max(t.l2_embedding, 1e-7), 1e-2),
        "batch_size": t.batch_size if t.batch_size == "auto" else nearest(float(t.batch_size), BATCH_SIZES),
    }


def to_markdown(summary: dict[str, Any]) -> str:
    keys = ["trial", "state", "valid_auc", "test_auc", "epochs", *summary["best_params"].keys()]
    lines = [
        f"Data: `{summary['data']}`; {summary['trials']} trials ({summary['pruned']} pruned); "
        f"best: trial {summary['best_trial']}, valid AUC {summary['best_valid_auc']:.4f}.",
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

