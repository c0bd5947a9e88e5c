"""train.reset_embeddings: epochs from the second start from a fresh embedding table while
each is a new best; the first that is not ends the resets and goes back to the best weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from deepfm.config import TrainConfig
from deepfm.errors import ConfigError
from deepfm.training import Trainer, train
from deepfm.training.progress import History
from deepfm.training.sharded_trainer import check_sharded
from deepfm.training.stopping import EarlyStopping, Verdict

from helpers import simple_records, simple_schema, small_config, write_records_csv


def verdicts(config: TrainConfig, scores: list[float]) -> list[tuple[Verdict, bool]]:
    """Each epoch's verdict on ``scores`` and whether the next epoch starts from a fresh table."""
    stopping, history, model = EarlyStopping(config), History(), torch.nn.Linear(1, 1)
    out = []
    for epoch, score in enumerate(scores, start=1):
        verdict = stopping.after_epoch({"epoch": epoch, "valid_auc": score}, history, model)
        out.append((verdict, stopping.resets_table(epoch + 1)))
    return out


def test_resets_last_while_each_fresh_table_is_a_new_best() -> None:
    config = TrainConfig(reset_embeddings=True, patience=2, min_improvement=1e-4)
    got = verdicts(config, [0.70, 0.71, 0.72, 0.7195, 0.71, 0.705])
    assert got == [
        (Verdict.BEST, True),  # epoch 2 starts fresh
        (Verdict.BEST, True),
        (Verdict.BEST, True),
        (Verdict.BACK, False),  # a fresh table that did no better: back to epoch 3, no more resets
        (Verdict.FALL, False),  # from here the usual rules: a fall, then patience
        (Verdict.STOP, False),
    ]
    # a miss of a fresh table does not count against patience: with patience 1 it is not a stop
    assert verdicts(TrainConfig(reset_embeddings=True, patience=1), [0.70, 0.69])[1] == (Verdict.BACK, False)
    # off: never a fresh table, and the same scores fall instead
    assert verdicts(TrainConfig(reset_embeddings=False), [0.70, 0.69])[1] == (Verdict.FALL, False)


def test_no_resets_without_validation_rows() -> None:
    stopping = EarlyStopping(TrainConfig(reset_embeddings=True))
    stopping.after_epoch({"epoch": 1}, History(), torch.nn.Linear(1, 1))
    assert not stopping.resets_table(2)  # nothing could tell whether a fresh table helped


def test_auto_and_bad_values() -> None:
    auto = TrainConfig(reset_embeddings="auto")
    assert auto.resolve_reset_embeddings(deep=True, warm=False)
    assert not auto.resolve_reset_embeddings(deep=False, warm=False)  # FM, LR: a fresh table is a fresh model
    assert not TrainConfig(reset_embeddings="auto", shard_tables="row").resolve_reset_embeddings(True, False)
    assert TrainConfig(reset_embeddings=True).resolve_reset_embeddings(deep=False, warm=False)  # as given
    # never for a warm start: it would drop the table it starts from, even where its base
    # model's config (which a warm start takes) says true
    assert not TrainConfig(reset_embeddings=True).resolve_reset_embeddings(deep=True, warm=True)
    for bad in ("sometimes", 1, 0.0):
        with pytest.raises(ConfigError, match="reset_embeddings must be true, false or 'auto'"):
            TrainConfig(reset_embeddings=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="reset_embeddings"):
        check_sharded(TrainConfig(shard_tables="row", l2_embedding=0.0, reset_embeddings=True))


def scripted_scores(monkeypatch: pytest.MonkeyPatch, scores: list[float]) -> list[dict[str, Any]]:
    """Make epoch k's valid AUC ``scores[k - 1]`` and record, at each epoch's start, the table,
    one MLP weight, the table optimizer's step count and the dense learning rate."""
    real_epoch = Trainer.epoch
    starts: list[dict[str, Any]] = []

    def epoch(self: Trainer, train_part: Any, valid: Any, batch_size: int) -> dict[str, float]:
        mlp = next(p for name, p in self.model.named_parameters() if not name.startswith("embedding"))
        starts.append(
            {
                "table": self.model.embedding.weight.detach().clone(),
                "mlp": mlp.detach().clone(),
                "steps": self.row_opt.steps,
                "lr": self.dense_opt.param_groups[0]["lr"],
            }
        )
        row = real_epoch(self, train_part, valid, batch_size)
        row["valid_auc"] = scores[int(row["epoch"]) - 1]
        return row

    monkeypatch.setattr(Trainer, "epoch", epoch)
    return starts


def test_a_fresh_table_each_epoch_then_back_to_the_best(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_records_csv(tmp_path / "d.csv", simple_records(600, seed=2))
    starts = scripted_scores(monkeypatch, [0.70, 0.71, 0.705, 0.72, 0.72, 0.72])
    config = small_config(simple_schema(), seed=7, epochs=6, patience=2, reset_embeddings=True)
    bundle = train(config, data, tmp_path / "m", split="0.8,0.2", cache=False)
    history = bundle.metrics["history"]
    assert [h["fresh_table"] for h in history] == [0.0, 1.0, 1.0, 0.0, 0.0, 0.0]  # 5, 6 no better: patience
    assert bundle.metrics["best_epoch"] == 4

    # Epoch 2 starts from a new draw of the table (the seed and the epoch name it), its
    # optimizer state cleared; the MLP goes on from where epoch 1 left it.
    dim = config.model.embedding_dim
    generator = torch.Generator().manual_seed(config.train.seed * 1000 + 2)
    fresh = torch.empty_like(starts[1]["table"])
    torch.nn.init.normal_(fresh[:, :dim], std=float(bundle.config.model.init_std), generator=generator)
    assert torch.equal(starts[1]["table"][:, :dim], fresh[:, :dim])
    assert torch.equal(starts[1]["table"][:, dim], torch.zeros(len(fresh)))  # first-order weights start at zero
    assert starts[1]["steps"] == 0 and starts[2]["steps"] == 0
    assert not torch.equal(starts[1]["mlp"], starts[0]["mlp"])  # the MLP kept what epoch 1 learned
    assert not torch.equal(starts[2]["table"], starts[1]["table"])  # epoch 3: another fresh draw

    # Epoch 3's table did no better than epoch 2's: epoch 4 starts from epoch 2's weights (the
    # ones at the start of epoch 3, bar the table epoch 3 drew), at the same learning rate.
    assert starts[3]["steps"] > 0 and starts[3]["lr"] == starts[0]["lr"]
    assert torch.equal(starts[3]["mlp"], starts[2]["mlp"])
    assert not torch.equal(starts[3]["table"], starts[2]["table"])


@pytest.mark.parametrize("where", ["at the end of epoch 2", "inside epoch 3"])
def test_resume_with_resets_gives_identical_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """A run stopped with resets still on (its checkpoint from the end of epoch 2, or from
    inside epoch 3, which started from a fresh table) and resumed gives every epoch's figures
    and the final weights of one never stopped: epoch 3 draws the same table, once."""
    from deepfm.errors import TrainingError
    from deepfm.training import resume

    from helpers import nan_loss_at_step

    data = write_records_csv(tmp_path / "d.csv", simple_records(1500, seed=3))
    # batches of 100: 12 steps an epoch; a checkpoint every 5 steps (and at each epoch's end)
    config = small_config(
        simple_schema(), seed=5, epochs=4, patience=4, batch_size=100, reset_embeddings=True, checkpoint_every=5
    )
    ref = train(config, data, tmp_path / "ref", split="0.8,0.2", cache=False)
    want_history = ref.metrics["history"]
    assert [h["fresh_table"] for h in want_history][:3] == [0.0, 1.0, 1.0]  # epochs 2, 3 start fresh

    if where == "at the end of epoch 2":

        class Crash(Exception):
            pass

        def crash_in_epoch_3(row: dict[str, float]) -> None:
            if row["epoch"] == 3:
                raise Crash

        with pytest.raises(Crash):
            train(config, data, tmp_path / "run", split="0.8,0.2", cache=False, on_epoch=crash_in_epoch_3)
    else:
        real_step = nan_loss_at_step(monkeypatch, 24 + 8)  # epoch 3's 8th step; its last checkpoint: step 30
        with pytest.raises(TrainingError):
            train(config, data, tmp_path / "run", split="0.8,0.2", cache=False)
        monkeypatch.setattr(Trainer, "step", real_step)
    got = resume(tmp_path / "run")
    for key in ("fresh_table", "train_loss", "valid_auc", "lr"):
        assert [h[key] for h in got.metrics["history"]] == [h[key] for h in want_history], key
    want, have = load_file(tmp_path / "ref" / "model.safetensors"), load_file(tmp_path / "run" / "model.safetensors")
    for k in want:
        assert torch.equal(have[k], want[k]), k
