"""Early stopping on the validation score, with the best weights kept, and learning-rate
decay when the score falls.

After each epoch the score (valid AUC; -logloss when the valid part holds one class only) is
one of:

- better than the best by more than ``min_improvement``: the new best, its weights kept;
- within OVERFIT_DROP of the best: a stall, and training goes on as it was;
- lower: the model overfits, so training goes back to the best weights with smaller steps.

After ``patience`` epochs without a new best, training stops; it ends with the best weights.
A loss that is no longer finite stops training at once (:func:`diverged`).

With ``train.reset_embeddings`` (MEDA, Fan et al. 2024), epochs 2, 3, ... start from a freshly
drawn embedding table while each such epoch is a new best. CTR models overfit at the second
pass over the rows because the vectors memorize the rows they saw; a fresh table sees each row
once more while the MLP keeps learning across the tables. The first fresh table that is not a
new best ends the resets: training goes back to the best weights and on at the same rates,
where a fall then decays them as usual (interaction-heavy data such as Frappe still needs many
passes at the full rates). That epoch does not count against ``patience``.
"""

from __future__ import annotations

import copy
import enum
import logging
import math
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from deepfm.config import TrainConfig
from deepfm.errors import TrainingError
from deepfm.training.progress import History
from deepfm.util.metrics import auc, logloss

log = logging.getLogger(__name__)

# A valid AUC this far below the best is the model overfitting (the second epoch of Criteo-like
# clicks falls by 0.01-0.04), which calls for the best weights and smaller steps; closer to the
# best it is a stall (dips of up to 0.0006 seen on plateaus), where training goes on as it was.
OVERFIT_DROP = 1e-3


class HasLr(Protocol):
    """The table's optimizer as fall_back sees it: RowAdam, or the sharded tables' Adagrad."""

    lr: float


class Verdict(enum.Enum):
    BEST = "best"  # a new best score: its weights are kept
    STALL = "stall"  # not better, not much worse: go on as before
    FALL = "fall"  # worse: back to the best weights, smaller steps
    STOP = "stop"  # patience is spent
    BACK = "back"  # a fresh table did no better: back to the best weights, the same steps


class EarlyStopping:
    """The best score and weights so far, and the epochs since: what decides each epoch's
    :class:`Verdict`. Saved in every checkpoint (the score and count in its header, the best
    weights as tensors)."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.best_score = -math.inf
        self.bad = 0  # epochs since the best
        self.best_state: dict[str, torch.Tensor] | None = None
        # Whether epochs from the second start from a fresh table (the module docstring).
        self.resetting = config.reset_embeddings is True

    def resets_table(self, epoch: int) -> bool:
        """Whether ``epoch`` (1-based) starts from a fresh embedding table."""
        return self.resetting and epoch >= 2

    def after_epoch(self, row: dict[str, float], history: History, model: torch.nn.Module) -> Verdict:
        """The verdict on an epoch's row of metrics; the history's best epoch follows it.
        Without validation rows every epoch is the best so far, and no table is reset (no
        score could tell whether a fresh one helped)."""
        if "valid_auc" not in row:
            history.best_epoch = int(row["epoch"])
            self.resetting = False
            return Verdict.STALL
        score = row.get("valid_auc_for_stopping", row["valid_auc"])
        if self.resets_table(int(row["epoch"])) and not self.improves(score):
            self.resetting = False
            log.info("a fresh embedding table did no better (%.4f, best %.4f): no more resets", score, self.best_score)
            return Verdict.BACK
        verdict = self.judge(score, model)
        if verdict is Verdict.BEST:
            history.best_epoch = int(row["epoch"])
        return verdict

    def improves(self, score: float) -> bool:
        """Whether ``score`` beats the best so far by more than ``min_improvement``."""
        return score > self.best_score + self.config.min_improvement

    def judge(self, score: float, model: torch.nn.Module) -> Verdict:
        """The verdict on an epoch's validation ``score``; keeps ``model``'s weights when best."""
        if self.improves(score):
            self.best_score, self.bad = score, 0
            self.best_state = copy.deepcopy(model.state_dict())
            return Verdict.BEST
        self.bad += 1
        if self.bad >= self.config.patience:
            log.info("valid AUC has not improved for %d epoch(s): stopping", self.bad)
            return Verdict.STOP
        if self.best_score - score <= OVERFIT_DROP:
            # A stall, not a fall: on interaction-heavy data valid AUC can sit still for a few
            # epochs before the pairs are learned (Frappe: 0.926 for epochs 3-6, then 0.94),
            # and smaller steps taken there never get out.
            log.info("valid AUC stalled (best %.4f, now %.4f): going on", self.best_score, score)
            return Verdict.STALL
        return Verdict.FALL

    def restore_best(self, model: torch.nn.Module) -> bool:
        """Load the best weights into ``model``; False when there are none yet."""
        if self.best_state is None:
            return False
        model.load_state_dict(self.best_state)
        return True

    def fall_back(
        self, model: torch.nn.Module, dense_opt: torch.optim.Optimizer, row_opt: HasLr, best_epoch: int
    ) -> None:
        """After a fall: back to the best weights, both learning rates times lr_decay. CTR models
        overfit fast, and continuing from the best with a smaller step usually finds a little
        more than pressing on would."""
        self.restore_best(model)
        decay = self.config.lr_decay
        for group in dense_opt.param_groups:
            group["lr"] *= decay
        row_opt.lr *= decay
        log.info("valid AUC did not improve: back to epoch %d, learning rates x%g", best_epoch, decay)


def validation_scores(labels: np.ndarray, probs: np.ndarray, first: bool) -> dict[str, float]:
    """An epoch's validation figures; with one class only AUC is undefined, so early stopping
    follows -logloss (``valid_auc_for_stopping``), said once, on the ``first`` epoch."""
    out = {"valid_auc": auc(labels, probs), "valid_logloss": logloss(labels, probs)}
    if not math.isfinite(out["valid_auc"]):
        if first:
            log.warning("the validation part has a single class: early stopping on logloss, not AUC")
        out["valid_auc_for_stopping"] = -out["valid_logloss"]
    return out


def diverged(mine: float, any_rank: float, epoch: int, step: int, checkpoint: Path | None) -> TrainingError:
    """The error that stops a run whose loss became NaN or infinite at ``step``: ``mine`` is
    this rank's loss, ``any_rank`` the sum over the ranks. Several ranks: one rank's NaN has
    already reached every rank's weights through the summed gradients, so every rank stops,
    before a checkpoint is written, rather than only the rank that saw it (the others would
    wait in the next collective)."""
    bad, where = (any_rank, " on another rank") if math.isfinite(mine) else (mine, "")
    kept = f"; the last good checkpoint is kept in {checkpoint}" if checkpoint else ""
    return TrainingError(
        f"training loss became {bad}{where} in epoch {epoch} (step {step}){kept}. "
        "Lower the learning rates (--lr, --embedding-lr) and start again or resume"
    )
