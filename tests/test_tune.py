"""deepfm tune: trials within the budget, trial 0 is the given config, best.yaml reproduces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepfm.cli import main

from helpers import write_criteo_tsv

pytest.importorskip("optuna")

SMALL = ["--embedding-dim", "4", "--hidden", "16", "--epochs", "2", "--threads", "1", "--quiet"]


def test_tune_writes_a_best_config_that_train_reproduces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_criteo_tsv(tmp_path / "d.tsv", 1500, seed=21)
    out = tmp_path / "tune"
    base = ["--data", str(data), "--preset", "criteo", "--split", "0.7,0.2,0.1"]
    assert main(["tune", *base, "--trials", "4", "--out", str(out), *SMALL]) == 0
    summary = json.loads((out / "trials.json").read_text())
    assert summary["trials"] == 4
    rows = summary["rows"]
    # Trial 0 is the given config: embedding 4 is mapped to the nearest choice (8), the rest
    # are the defaults, batch size and min_count 'auto'.
    assert rows[0]["batch_size"] == "auto" and rows[0]["min_count"] == "auto" and rows[0]["lr"] == pytest.approx(1e-3)
    best = summary["best_trial"]
    assert summary["best_valid_auc"] == max(r["valid_auc"] for r in rows if r["state"] == "complete")
    # Platt on each trial's valid rows, except where a trial ranks them no better than chance
    # (a fit there would reverse the ranking: deepfm.training.job.calibrate_on_valid)
    assert rows[0]["calibrated"]
    assert all(r["calibrated"] for r in rows if r["state"] == "complete" and r["valid_auc"] > 0.55)
    assert "| trial |" in (out / "trials.md").read_text()
    capsys.readouterr()
    # Training again from best.yaml gives the best trial's validation AUC exactly (same seed).
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--config",
                str(out / "best.yaml"),
                "--split",
                "0.7,0.2,0.1",
                "--out",
                str(tmp_path / "again"),
                "--quiet",
            ]
        )
        == 0
    )
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["valid_auc"] == pytest.approx(rows[best]["valid_auc"], abs=1e-12)


def test_tune_needs_at_least_one_trial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_criteo_tsv(tmp_path / "d.tsv", 300, seed=22)
    code = main(
        [
            "tune",
            "--data",
            str(data),
            "--preset",
            "criteo",
            "--split",
            "0.8,0.2",
            "--trials",
            "0",
            "--out",
            str(tmp_path / "t"),
            "--quiet",
        ]
    )
    assert code == 2 and "--trials" in capsys.readouterr().err


def test_tune_on_logloss_ranks_by_calibrated_logloss(tmp_path: Path) -> None:
    """--metric logloss keeps the trial of the lowest validation log loss, measured after the
    Platt calibration each trial fits on its validation rows: no worse calibrated than trial
    0, the defaults."""
    data = write_criteo_tsv(tmp_path / "d.tsv", 1500, seed=23)
    out = tmp_path / "tune"
    base = ["--data", str(data), "--preset", "criteo", "--split", "0.7,0.2,0.1"]
    assert main(["tune", *base, "--trials", "3", "--metric", "logloss", "--out", str(out), *SMALL]) == 0
    summary = json.loads((out / "trials.json").read_text())
    done = [r for r in summary["rows"] if r["state"] == "complete"]
    # Each trial is calibrated unless Platt scaling would reverse its ranking (a trial whose
    # valid AUC is near or below 0.5 on these 300 rows).
    assert summary["metric"] == "logloss" and done[0]["calibrated"]
    assert all(r["calibrated"] or r["valid_auc"] < 0.55 for r in done), done
    assert summary["best_valid_logloss"] == min(r["valid_logloss"] for r in done)
    assert summary["best_valid_logloss"] <= summary["default"]["valid_logloss"]
    assert "ranked by valid logloss" in (out / "trials.md").read_text()
