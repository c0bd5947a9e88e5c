"""pytorch-fm (torchfm 0.7.0): one benchmark run, one JSON line on stdout.

torchfm is a model zoo without a trainer: its examples build
torchfm.model.dfm.DeepFactorizationMachineModel and train it with a plain PyTorch loop
(DataLoader, BCELoss on the sigmoid output, Adam), evaluating AUC after each epoch.
That is what this runner does, on the pandas + LabelEncoder preprocessing.

Accuracy protocol (--encoded): the model as the library builds it (its MLP puts BatchNorm1d
after every Linear; first-order weights start at N(0, 1)), dropout 0.2 and Adam's weight
decay 1e-6 from its example main.py (the model has no default dropout), and the example's
loop: train an epoch, validation AUC, keep the best model, stop after `patience` epochs
without a better one (its EarlyStopper with num_trials=2), test the best.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import common

if TYPE_CHECKING:  # torch is imported inside the functions that use it
    import torch


def main() -> None:
    args = common.parse_args(__doc__)
    with contextlib.redirect_stdout(sys.stderr):
        result = run_accuracy(args) if args.encoded else run(args)
    common.emit(result)


# torchfm's examples/main.py: DeepFM with dropout 0.2, Adam with weight decay 1e-6.
EXAMPLE_DROPOUT = 0.2
EXAMPLE_WEIGHT_DECAY = 1e-6


def train_epoch(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    criterion: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> float:
    """One pass of the examples' training loop over ``batches``; its seconds."""
    t0 = time.perf_counter()
    model.train()
    for fields, target in batches:
        loss = criterion(model(fields), target)
        model.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - t0


def run_accuracy(args: argparse.Namespace) -> dict:
    """The example's loop with its early stopper; test the best epoch's weights."""
    import copy

    import numpy as np
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from torchfm.model.dfm import DeepFactorizationMachineModel

    torch.manual_seed(args.seed)
    data = common.load_encoded(args.encoded)
    model = DeepFactorizationMachineModel(
        field_dims=data.vocab_sizes, embed_dim=args.embedding_dim, mlp_dims=tuple(args.hidden), dropout=EXAMPLE_DROPOUT
    )
    n_train = len(data.y["train"])
    # BatchNorm cannot train on a last batch of one row; drop such a row (never at this benchmark's sizes).
    train_batches = DataLoader(
        TensorDataset(torch.from_numpy(data.x["train"]), torch.from_numpy(data.y["train"])),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=n_train % args.batch_size == 1,
    )

    @torch.no_grad()
    def predict(part: str) -> np.ndarray:
        model.eval()
        x = torch.from_numpy(data.x[part])
        return torch.cat([model(x[i : i + args.predict_batch]) for i in range(0, len(x), args.predict_batch)]).numpy()

    criterion = torch.nn.BCELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=EXAMPLE_WEIGHT_DECAY)
    valid_aucs: list[float] = []
    best_state, trials, train_seconds = None, 0, 0.0
    for epoch in range(args.max_epochs):
        train_seconds += train_epoch(model, train_batches, criterion, optimizer)
        valid_aucs.append(common.auc_logloss(data.y["valid"], predict("valid"))[0])
        print(f"epoch {epoch + 1}: valid auc {valid_aucs[-1]:.4f}")
        if valid_aucs[-1] > max(valid_aucs[:-1], default=-1.0):  # the example's EarlyStopper, kept in memory
            best_state, trials = copy.deepcopy(model.state_dict()), 0
        elif trials + 1 < args.patience:
            trials += 1
        else:
            break
    model.load_state_dict(best_state)
    return common.accuracy_result(
        "torchfm", _version("torchfm"), torch.__version__, data, args, valid_aucs, train_seconds, predict("test")
    )


def run(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from torchfm.model.dfm import DeepFactorizationMachineModel

    torch.manual_seed(args.seed)
    t_start = time.perf_counter()
    data = common.pandas_label_encode(args.data, args.split, args.min_count)

    model = DeepFactorizationMachineModel(
        field_dims=data.vocab_sizes, embed_dim=args.embedding_dim, mlp_dims=tuple(args.hidden), dropout=0.0
    )
    # torchfm's MultiLayerPerceptron always puts BatchNorm1d after each Linear; the benchmark
    # model has no batch norm, so those layers become identities (nothing else changes).
    for i, layer in enumerate(model.mlp.mlp):
        if isinstance(layer, torch.nn.BatchNorm1d):
            model.mlp.mlp[i] = torch.nn.Identity()

    def loader(part: str, batch_size: int, shuffle: bool) -> DataLoader:
        dataset = TensorDataset(torch.from_numpy(data.x[part]), torch.from_numpy(data.y[part]))
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle)

    @torch.no_grad()
    def predict(batches: DataLoader) -> np.ndarray:
        model.eval()
        return torch.cat([model(fields) for fields, _ in batches]).numpy()

    train_batches = loader("train", args.batch_size, shuffle=True)
    valid_batches = loader("valid", args.predict_batch, shuffle=False)
    criterion = torch.nn.BCELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=0.0)
    train_seconds = 0.0
    for epoch in range(args.epochs):
        train_seconds += train_epoch(model, train_batches, criterion, optimizer)
        # Validation each epoch, as the examples do (outside the timed training loop).
        valid_auc, _ = common.auc_logloss(data.y["valid"], predict(valid_batches))
        print(f"epoch {epoch + 1}: valid auc {valid_auc:.4f}")

    test_batches = loader("test", args.predict_batch, shuffle=False)
    t_pred = time.perf_counter()
    scores = predict(test_batches)
    predict_seconds = time.perf_counter() - t_pred
    return common.result(
        "torchfm",
        _version("torchfm"),
        torch.__version__,
        data.rows,
        len(data.y["train"]),
        len(data.y["test"]),
        args.epochs,
        sum(data.vocab_sizes),
        sum(w.numel() for w in model.parameters()),
        data.seconds,
        train_seconds,
        predict_seconds,
        t_start,
        data.y["test"],
        scores,
    )


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    main()
