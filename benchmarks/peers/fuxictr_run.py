"""FuxiCTR (fuxictr 2.3.10): one benchmark run, one JSON line on stdout.

The pip package ships FuxiCTR's machinery (FeatureProcessor, FeatureMap, dataloaders,
layers, BaseModel) but not its model zoo, where DeepFM lives. The DeepFM below is put
together from the package's own building blocks the way the zoo's DeepFM is: one
FeatureEmbedding shared by a FactorizationMachine block (which adds its own first-order
LogisticRegression) and an MLP_Block over the flattened embeddings, sigmoid output,
trained by BaseModel.fit.

Preprocessing is FuxiCTR's FeatureProcessor, with the Criteo log buckets of its own
fuxictr.datasets.criteo.CustomizedFeatureProcessor. Two departures from build_dataset():
- FuxiCTR 2.3 runs FeatureProcessor.transform through Ray Data and writes Parquet read back
  by a Ray dataloader. On this 2-core machine that mostly measures Ray starting up, so the
  runner calls the same FeatureProcessor.transform in-process and feeds FuxiCTR's own
  NpzDataLoader (a torch DataLoader over an .npz file, its pre-Ray format).
- read_data() neither forwards has_header nor accepts a .tsv name, so the raw file is
  scanned with polars directly, with the processor's column types.

Accuracy protocol (--encoded): the ids of encode.py shifted by one (FuxiCTR keeps id 0 for
padding, as its FeatureProcessor does) behind a feature_map.json of categorical fields, the
same DeepFM with the zoo's and BaseModel's defaults (no regularization, no dropout, no batch
norm, embeddings N(0, 1e-4), Xavier-normal linear layers, gradients clipped at norm 10, the
learning rate times 0.1 after every epoch without a better validation AUC), and BaseModel.fit's
own early stopping on validation AUC (early_stop_patience), which reloads the best checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from typing import Any

import common
import fuxictr
import numpy as np
import polars as pl
import torch
from fuxictr.datasets.criteo import CustomizedFeatureProcessor
from fuxictr.features import FeatureMap
from fuxictr.pytorch.dataloaders.npz_dataloader import NpzDataLoader
from fuxictr.pytorch.layers import FactorizationMachine, FeatureEmbedding, MLP_Block
from fuxictr.pytorch.models import BaseModel
from fuxictr.pytorch.torch_utils import seed_everything


class Processor(CustomizedFeatureProcessor):
    """FuxiCTR's Criteo processor, with missing kept apart. FuxiCTR fills a missing value with fill_na and then drops fill_na from the
    vocabulary, so missing would land in OOV. The benchmark keeps missing as a value of
    its own, so these columns set fill_na to None and fill nulls in their preprocess
    step instead (custom preprocess methods are FuxiCTR's extension point)."""

    def bucket_keep_missing(self, col_name: str) -> pl.Expr:
        # convert_to_bucket's log bins, shifted by 100 as in common.log_bucket: unshifted,
        # log(3)^2 would floor to bin 1 and share a row with the count 1.
        x = pl.col(col_name)
        keys = pl.when(x > 2).then(self.convert_to_bucket(col_name) + 100).otherwise(x.floor().cast(pl.Int32))
        return keys.fill_null(common.MISSING_NUMBER)

    def keep_missing(self, col_name: str) -> pl.Expr:
        return pl.col(col_name).fill_null(common.MISSING_STRING)


class DeepFM(BaseModel):
    """The model zoo's DeepFM, rebuilt from fuxictr's pip-installed layers."""

    def __init__(
        self, feature_map: FeatureMap, embedding_dim: int, hidden_units: list[int], learning_rate: float, **kwargs: Any
    ) -> None:
        super().__init__(feature_map, model_id="DeepFM", gpu=-1, **kwargs)
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.fm = FactorizationMachine(feature_map)
        self.mlp = MLP_Block(
            input_dim=feature_map.sum_emb_out_dim(),
            output_dim=1,
            hidden_units=hidden_units,
            hidden_activations="ReLU",
            output_activation=None,
            dropout_rates=0,
            batch_norm=False,
        )
        self.compile("adam", "binary_crossentropy", learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        X = self.get_inputs(inputs)
        feature_emb = self.embedding_layer(X)
        y_pred = self.fm(X, feature_emb) + self.mlp(feature_emb.flatten(start_dim=1))
        return {"y_pred": self.output_activation(y_pred)}


def main() -> None:
    args = common.parse_args(__doc__)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with contextlib.redirect_stdout(sys.stderr):
        result = run_accuracy(args) if args.encoded else run(args)
    common.emit(result)


def encoded_inputs(data: common.EncodedSet, folder: str, embedding_dim: int) -> tuple[FeatureMap, dict[str, str]]:
    """A FeatureMap of the encoded fields, as FeatureProcessor would write it, and one .npz
    per part in the layout NpzDataLoader reads (one array per field, then the label)."""
    os.makedirs(folder, exist_ok=True)
    features = [
        {name: {"source": "", "type": "categorical", "padding_idx": 0, "vocab_size": size + 1}}
        for name, size in zip(data.fields, data.vocab_sizes)
    ]
    spec = {
        "dataset_id": "encoded",
        "num_fields": len(features),
        "total_features": sum(data.vocab_sizes) + len(features),
        "input_length": len(features),
        "labels": ["label"],
        "features": features,
    }
    json_file = os.path.join(folder, "feature_map.json")
    with open(json_file, "w") as f:
        json.dump(spec, f)
    feature_map = FeatureMap("encoded", folder)
    feature_map.load(json_file, {"embedding_dim": embedding_dim})
    paths = {}
    for part in ("train", "valid", "test"):
        paths[part] = os.path.join(folder, f"{part}.npz")
        arrays = {name: data.x[part][:, i] + 1 for i, name in enumerate(data.fields)}
        np.savez(paths[part], **arrays, label=data.y[part])
    return feature_map, paths


def run_accuracy(args: argparse.Namespace) -> dict:
    """BaseModel.fit with its early stopping; test the reloaded best checkpoint."""
    seed_everything(args.seed)
    data = common.load_encoded(args.encoded)
    feature_map, paths = encoded_inputs(data, os.path.join(args.workdir, "data"), args.embedding_dim)
    train_gen = NpzDataLoader(feature_map, paths["train"], batch_size=args.batch_size, shuffle=True)
    valid_gen = NpzDataLoader(feature_map, paths["valid"], batch_size=args.predict_batch, shuffle=False)
    test_gen = NpzDataLoader(feature_map, paths["test"], batch_size=args.predict_batch, shuffle=False)
    model = DeepFM(
        feature_map,
        embedding_dim=args.embedding_dim,
        hidden_units=args.hidden,
        learning_rate=args.lr,
        verbose=0,
        model_root=os.path.join(args.workdir, "checkpoints"),
        metrics=["logloss", "AUC"],
        early_stop_patience=args.patience,
    )
    os.makedirs(model.model_dir, exist_ok=True)
    valid_aucs: list[float] = []
    record = model.checkpoint_and_earlystop

    def checkpoint_and_earlystop(logs: dict[str, float], *a: Any, **kw: Any) -> Any:
        valid_aucs.append(float(logs["AUC"]))
        return record(logs, *a, **kw)

    model.checkpoint_and_earlystop = checkpoint_and_earlystop
    outside = common.Timer()  # validation, checkpoints and the final reload are not training
    model.eval_step = outside.wrap(model.eval_step)
    model.load_weights = outside.wrap(model.load_weights)
    t_fit = time.perf_counter()
    model.fit(train_gen, epochs=args.max_epochs, validation_data=valid_gen)
    train_seconds = time.perf_counter() - t_fit - outside.seconds
    scores = model.predict(test_gen)
    return common.accuracy_result(
        "fuxictr", fuxictr.__version__, torch.__version__, data, args, valid_aucs, train_seconds, scores
    )


def preprocess(args: argparse.Namespace, data_root: str) -> tuple[int, dict[str, str], dict[str, np.ndarray], str, str]:
    """Raw TSV -> fitted FeatureProcessor -> encoded .npz parts: (rows, part paths, part labels,
    the processor's data folder, its feature map file)."""
    feature_cols = [
        {
            "name": common.NUMERIC,
            "active": True,
            "dtype": "float",
            "type": "categorical",
            "fill_na": None,
            "preprocess": "bucket_keep_missing",
        },
        {
            "name": common.CATEGORICAL,
            "active": True,
            "dtype": "str",
            "type": "categorical",
            "fill_na": None,
            "preprocess": "keep_missing",
        },
    ]
    label_col = {"name": "label", "dtype": "float"}
    processor = Processor(
        feature_cols=feature_cols, label_col=label_col, dataset_id="criteo_synth", data_root=data_root
    )
    schema = (
        {"label": pl.Float64} | {c: pl.Float64 for c in common.NUMERIC} | {c: pl.String for c in common.CATEGORICAL}
    )
    raw = pl.scan_csv(args.data, separator="\t", has_header=False, new_columns=common.COLUMNS, schema_overrides=schema)
    n_rows = raw.select(pl.len()).collect().item()
    bounds = common.split_bounds(n_rows, args.split)
    parts = {name: processor.preprocess(raw.slice(a, b - a)) for name, (a, b) in bounds.items()}
    processor.fit(parts["train"], min_categr_count=args.min_count, rebuild_dataset=True)
    paths, labels = {}, {}
    for name, lazy in parts.items():
        frame = lazy.collect()
        encoded = processor.transform({c: frame[c].to_numpy() for c in frame.columns})
        paths[name] = os.path.join(processor.data_dir, f"{name}.npz")
        np.savez(paths[name], **{c: np.asarray(v) for c, v in encoded.items()})
        labels[name] = frame["label"].to_numpy()
    return n_rows, paths, labels, processor.data_dir, processor.json_file


def run(args: argparse.Namespace) -> dict:
    seed_everything(args.seed)
    t_start = time.perf_counter()
    n_rows, paths, labels, data_dir, json_file = preprocess(args, os.path.join(args.workdir, "data"))
    feature_map = FeatureMap("criteo_synth", data_dir)
    feature_map.load(json_file, {"embedding_dim": args.embedding_dim})
    train_gen = NpzDataLoader(feature_map, paths["train"], batch_size=args.batch_size, shuffle=True)
    valid_gen = NpzDataLoader(feature_map, paths["valid"], batch_size=args.predict_batch, shuffle=False)
    test_gen = NpzDataLoader(feature_map, paths["test"], batch_size=args.predict_batch, shuffle=False)
    preprocess_seconds = time.perf_counter() - t_start

    # ---- training: BaseModel.fit evaluates (and checkpoints) the validation part at the end
    # of each epoch and reloads the best checkpoint at the end; both are timed apart so that
    # train samples/s counts the training loop only.
    model = DeepFM(
        feature_map,
        embedding_dim=args.embedding_dim,
        hidden_units=args.hidden,
        learning_rate=args.lr,
        embedding_regularizer=None,
        net_regularizer=None,
        verbose=0,
        model_root=os.path.join(args.workdir, "checkpoints"),
        metrics=["logloss", "AUC"],
    )
    os.makedirs(model.model_dir, exist_ok=True)  # fit() saves its best checkpoint there
    outside = common.Timer()
    model.eval_step = outside.wrap(model.eval_step)
    model.load_weights = outside.wrap(model.load_weights)
    t_fit = time.perf_counter()
    model.fit(train_gen, epochs=args.epochs, validation_data=valid_gen)
    train_seconds = time.perf_counter() - t_fit - outside.seconds

    t_pred = time.perf_counter()
    scores = model.predict(test_gen)
    predict_seconds = time.perf_counter() - t_pred
    return common.result(
        "fuxictr",
        fuxictr.__version__,
        torch.__version__,
        n_rows,
        len(labels["train"]),
        len(labels["test"]),
        args.epochs,
        sum(spec["vocab_size"] for spec in feature_map.features.values()),
        sum(w.numel() for w in model.parameters()),
        preprocess_seconds,
        train_seconds,
        predict_seconds,
        t_start,
        labels["test"],
        scores,
    )


if __name__ == "__main__":
    main()
