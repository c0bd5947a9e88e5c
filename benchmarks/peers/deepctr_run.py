"""DeepCTR-Torch (deepctr-torch 0.3.0): one benchmark run, one JSON line on stdout.

The documented path: pandas + LabelEncoder, SparseFeat columns, deepctr_torch.models.DeepFM,
model.compile('adam', 'binary_crossentropy'), model.fit(...), model.predict(...).

Accuracy protocol (--encoded): the same DeepFM with the library's defaults beyond the shared
sizes (L2 1e-5 on embeddings and the linear part, init std 1e-4, no dropout, no batch norm,
summed loss), fit() with its own EarlyStopping callback on val_auc (patience 2, best weights
restored).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from typing import TYPE_CHECKING

# deepctr_torch asks PyPI for its newest version in a thread at import time. Send that
# request to a closed local port so that a benchmark run makes no network traffic.
os.environ["HTTPS_PROXY"] = os.environ["HTTP_PROXY"] = "http://127.0.0.1:9"

import common  # noqa: E402

if TYPE_CHECKING:  # torch is imported inside the functions that use it
    import torch


def main() -> None:
    args = common.parse_args(__doc__)
    # The library prints (device, epoch lines); keep stdout for the one JSON line.
    with contextlib.redirect_stdout(sys.stderr):
        result = run_accuracy(args) if args.encoded else run(args)
    common.emit(result)


def model_input(data: common.Encoded | common.EncodedSet, names: list[str], part: str) -> dict:
    """fit()'s and predict()'s input: one array of ids per field name."""
    return {name: data.x[part][:, i] for i, name in enumerate(names)}


def deepfm(columns: list, args: argparse.Namespace, **settings: float | bool) -> torch.nn.Module:
    """deepctr_torch.models.DeepFM over ``columns`` with the shared sizes; ``settings`` override
    the library's defaults (L2, dropout, batch norm)."""
    from deepctr_torch.models import DeepFM

    # compile('adam') is torch.optim.Adam with its default lr, 1e-3: the benchmark's lr.
    assert args.lr == 1e-3, "compile('adam') fixes the learning rate at 1e-3"
    return DeepFM(
        linear_feature_columns=columns,
        dnn_feature_columns=columns,
        dnn_hidden_units=tuple(args.hidden),
        dnn_activation="relu",
        seed=args.seed,
        task="binary",
        device="cpu",
        **settings,
    )


def run_accuracy(args: argparse.Namespace) -> dict:
    """Train until the library's EarlyStopping ends fit(); test the best epoch's weights."""
    import deepctr_torch
    import torch
    from deepctr_torch.callbacks import EarlyStopping
    from deepctr_torch.inputs import SparseFeat

    data = common.load_encoded(args.encoded)
    columns = [
        SparseFeat(name, vocabulary_size=size, embedding_dim=args.embedding_dim)
        for name, size in zip(data.fields, data.vocab_sizes)
    ]

    model = deepfm(columns, args)
    model.compile("adam", "binary_crossentropy", metrics=["auc"])
    stop = EarlyStopping(monitor="val_auc", mode="max", patience=args.patience, restore_best_weights=True)
    eval_timer = common.Timer()
    model.evaluate = eval_timer.wrap(model.evaluate)
    t_fit = time.perf_counter()
    history = model.fit(
        model_input(data, data.fields, "train"),
        data.y["train"],
        batch_size=args.batch_size,
        epochs=args.max_epochs,
        verbose=0,
        validation_data=(model_input(data, data.fields, "valid"), data.y["valid"]),
        shuffle=True,
        callbacks=[stop],
    )
    train_seconds = time.perf_counter() - t_fit - eval_timer.seconds
    # EarlyStopping restores the best weights only when it stops the run; after the last
    # allowed epoch they are put back here.
    if not stop.stopped_epoch and stop.best_weights is not None:
        model.load_state_dict(stop.best_weights)
    scores = model.predict(model_input(data, data.fields, "test"), batch_size=args.predict_batch)
    return common.accuracy_result(
        "deepctr-torch",
        deepctr_torch.__version__,
        torch.__version__,
        data,
        args,
        history.history["val_auc"],
        train_seconds,
        scores,
    )


def run(args: argparse.Namespace) -> dict:
    import deepctr_torch
    import torch
    from deepctr_torch.inputs import SparseFeat, get_feature_names

    t_start = time.perf_counter()
    data = common.pandas_label_encode(args.data, args.split, args.min_count)

    columns = [
        SparseFeat(name, vocabulary_size=size, embedding_dim=args.embedding_dim)
        for name, size in zip(common.FIELDS, data.vocab_sizes)
    ]
    names = get_feature_names(columns)

    # Same model as everywhere: FM + MLP 400-400-400 ReLU, no dropout, no batch norm, L2 0
    # (DeepCTR's defaults put 1e-5 on the embeddings and the linear part).
    settings = {"dnn_dropout": 0, "dnn_use_bn": False, "l2_reg_linear": 0, "l2_reg_embedding": 0, "l2_reg_dnn": 0}
    model = deepfm(columns, args, **settings)
    model.compile("adam", "binary_crossentropy")

    # fit() evaluates the validation part at the end of every epoch; time that separately so
    # that train samples/s counts the training loop only.
    eval_timer = common.Timer()
    model.evaluate = eval_timer.wrap(model.evaluate)
    t_fit = time.perf_counter()
    model.fit(
        model_input(data, names, "train"),
        data.y["train"],
        batch_size=args.batch_size,
        epochs=args.epochs,
        verbose=2,
        validation_data=(model_input(data, names, "valid"), data.y["valid"]),
        shuffle=True,
    )
    fit_seconds = time.perf_counter() - t_fit
    train_seconds = fit_seconds - eval_timer.seconds

    test_input = model_input(data, names, "test")
    t_pred = time.perf_counter()
    scores = model.predict(test_input, batch_size=args.predict_batch)
    predict_seconds = time.perf_counter() - t_pred
    return common.result(
        "deepctr-torch",
        deepctr_torch.__version__,
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


if __name__ == "__main__":
    main()
