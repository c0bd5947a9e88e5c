"""What the commands share: the run's config and inputs from the flags, reading options."""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from deepfm.bundle import Bundle
from deepfm.config import RunConfig, load_config, read_options, with_overrides
from deepfm.data.column_split import ColumnSplit
from deepfm.data.readers import open_reader
from deepfm.data.schema import PRESETS
from deepfm.data.schema_inference import infer_schema, schema_yaml
from deepfm.data.storage import is_uri
from deepfm.errors import ConfigError, DeepFMError
from deepfm.training import RunInputs

log = logging.getLogger("deepfm")


def read_overrides(args: argparse.Namespace) -> dict[str, Any]:
    delimiter = args.delimiter
    if delimiter in ("\\t", "tab"):
        delimiter = "\t"
    return {"format": args.format, "delimiter": delimiter, "header": args.header, "on_bad_row": args.on_bad_row}


def shape_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that set the schema and the model's shape, by name: a warm start and a
    resumed run keep the shape they started with, so these may not be given again."""
    return {
        "--config": args.config,
        "--preset": args.preset,
        "--label": args.label,
        "--model": args.kind,
        "--embedding-dim": args.embedding_dim,
        "--hidden": args.hidden,
        "--dropout": args.dropout,
    }


def run_config(args: argparse.Namespace) -> Any:
    """The RunConfig of train/compare: --config, --preset or an inferred schema, then flags."""
    raw = load_config(args.config) if args.config else {}
    if args.preset and {"fields", "preset"} & raw.keys():
        raise usage_error(f"{args.config} names its fields already: give --config or --preset, not both")
    if getattr(args, "warm_start", None) is not None:
        given = [flag for flag, value in shape_flags(args).items() if value is not None]
        if given:
            raise usage_error(
                f"--warm-start keeps the schema and model of {args.warm_start}; leave out {', '.join(given)}"
            )
        config = Bundle.load(args.warm_start).config
    elif {"fields", "preset"} & raw.keys():
        config = RunConfig.from_dict(raw, where=str(args.config))
    else:  # the fields from --preset or from the data; the rest (model, train, data) from --config
        where = str(args.config or "the flags")
        options = replace(read_options(raw, where), **{k: v for k, v in read_overrides(args).items() if v is not None})
        if args.preset:
            schema = PRESETS[args.preset]()
        else:
            columns = raw.get("columns")
            schema = inferred_schema(args.data, raw.get("label", args.label or "label"), options, columns)
        config = RunConfig.from_dict({**raw, **schema.to_dict()}, where=where)
    config = _field_overrides(config, args)
    try:
        hidden = tuple(int(h) for h in args.hidden.split(",")) if args.hidden else None
    except ValueError:
        raise usage_error(f"--hidden wants layer sizes like 400,400,400, got {args.hidden!r}") from None
    if getattr(args, "track", None):  # the flags replace the config file's track:
        config = replace(config, track=tuple(args.track))
    return with_overrides(
        config,
        model={"kind": args.kind, "embedding_dim": args.embedding_dim, "hidden": hidden, "dropout": args.dropout},
        train={
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "embedding_lr": args.embedding_lr,
            "l2_embedding": args.l2_embedding,
            "patience": args.patience,
            "seed": args.seed,
            "device": args.device,
            "threads": args.threads,
            "progress": False if args.quiet else None,
            "checkpoint_every": args.checkpoint_every,
            "shard_tables": getattr(args, "shard_tables", None),  # train only
        },
        data=read_overrides(args),
    )


def _field_overrides(config: RunConfig, args: argparse.Namespace) -> RunConfig:
    """--min-count, --max-vocab and --hash-buckets applied to every field they concern."""
    for flag, key in (("min_count", "min_count"), ("max_vocab", "max_vocab")):
        if getattr(args, flag) is not None:
            fields = tuple(replace(f, **{key: getattr(args, flag)}) for f in config.schema.fields)
            config = replace(config, schema=replace(config.schema, fields=fields))
    if args.hash_buckets is not None:
        fields = tuple(
            replace(f, hash_buckets=args.hash_buckets) if f.kind != "numeric" else f for f in config.schema.fields
        )
        config = replace(config, schema=replace(config.schema, fields=fields))
    return config


def run_inputs(args: argparse.Namespace, **more: Any) -> Any:
    """The RunInputs of train/compare/tune: the data files, split and cache flags."""
    return RunInputs(
        args.data,
        valid=args.valid,
        test=args.test,
        split=args.split,
        split_by=split_by(args),
        cache=not args.no_cache,
        cache_dir=args.cache_dir,
        **more,
    )


def check_out_outside_data(out: Any, *data: Any) -> None:
    """Refuse a model folder inside a data folder: the next run on that folder would read the
    model's files as data."""
    if out is None or is_uri(str(out)):
        return
    target = Path(out).resolve()
    for given in data:
        for item in given if isinstance(given, list) else [given]:
            if item is None or is_uri(str(item)) or not Path(item).is_dir():
                continue
            if target.is_relative_to(Path(item).resolve()):
                raise usage_error(f"--out {out} is inside the data folder {item}: a later run on that folder would "
                                  "read the model's files as data; write the model elsewhere")  # fmt: skip


def split_by(args: argparse.Namespace) -> ColumnSplit | None:
    """--split-by COLUMN --valid-from V [--test-from W], checked together; else the config's
    ``split:`` section."""
    if args.split_by is None:
        if args.valid_from is not None or args.test_from is not None:
            raise usage_error("--valid-from and --test-from go with --split-by COLUMN")
        raw = load_config(args.config) if args.config else {}
        if "split" in raw and args.split is None and args.valid is None:  # the flags win
            return ColumnSplit.from_dict(raw["split"], where=str(args.config))
        return None
    if args.valid_from is None:
        raise usage_error("--split-by needs --valid-from: the first value of the validation rows")
    return ColumnSplit(args.split_by, args.valid_from, args.test_from)


def inferred_schema(data: Path, label: str, options: Any, columns: list[str] | None = None) -> Any:
    """The schema inferred for ``data`` (whose column names are ``columns`` when it has no
    header), logged as the YAML ``deepfm schema`` prints."""
    schema, guesses = infer_schema(open_reader(data, options, column_names=columns), label)
    if columns is not None:
        schema = replace(schema, columns=tuple(columns))
    log.info(
        "inferred the schema (deepfm schema --data %s prints it to edit):\n%s",
        data,
        schema_yaml(schema, guesses, str(data)),
    )
    return schema


def model_read_options(bundle: Any, args: argparse.Namespace) -> Any:
    """The reading options a model was trained with, changed by this command's flags."""
    overrides = {k: v for k, v in read_overrides(args).items() if v is not None}
    return replace(bundle.config.data, **overrides)


def usage_error(message: str) -> DeepFMError:
    """The error of a flag that makes no sense: a ConfigError, exit status 2."""
    return ConfigError(message)
