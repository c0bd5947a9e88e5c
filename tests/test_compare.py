"""deepfm compare: every model and seed trained on one split; the table holds their means."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deepfm.cli import main
from deepfm.errors import ConfigError

from helpers import write_criteo_tsv


def test_compare_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_criteo_tsv(tmp_path / "d.tsv", 1500, seed=11)
    out = tmp_path / "cmp"
    code = main(
        [
            "compare",
            "--data",
            str(data),
            "--preset",
            "criteo",
            "--split",
            "0.8,0.1,0.1",
            "--models",
            "lr,deepfm",
            "--seeds",
            "2",
            "--out",
            str(out),
            "--epochs",
            "1",
            "--embedding-dim",
            "4",
            "--hidden",
            "16",
            "--threads",
            "1",
            "--quiet",
        ]
    )
    assert code == 0
    summary = json.loads((out / "compare.json").read_text())
    assert [r["model"] for r in summary["models"]] == ["lr", "deepfm"]
    assert len(summary["runs"]) == 4
    for row in summary["models"]:
        # The table's mean is the mean of the runs' own metrics.json test AUCs.
        aucs = [
            json.loads((out / "runs" / f"{row['model']}-seed{r['seed']}" / "metrics.json").read_text())["test_auc"]
            for r in summary["runs"]
            if r["model"] == row["model"]
        ]
        assert row["auc_mean"] == pytest.approx(np.mean(aucs))
        assert row["auc_std"] == pytest.approx(np.std(aucs))
    # Different seeds give different models.
    lr_runs = [r["auc"] for r in summary["runs"] if r["model"] == "lr"]
    assert lr_runs[0] != lr_runs[1]
    table = (out / "compare.md").read_text()
    assert "| lr |" in table and "| deepfm |" in table and "±" in table
    assert "| deepfm |" in capsys.readouterr().out


def test_compare_refuses_unknown_models(tmp_path: Path) -> None:
    from deepfm.config import RunConfig
    from deepfm.data.schema import criteo_schema
    from deepfm.training import RunInputs
    from deepfm.training.compare import compare

    with pytest.raises(ConfigError, match="xgboost"):
        compare(
            RunConfig(schema=criteo_schema()), RunInputs(tmp_path / "none.tsv"), tmp_path / "o", ["deepfm", "xgboost"]
        )
