"""The ``deepfm`` command line: a thin layer over the library.

    deepfm demo
    deepfm synth --rows 1000000 --out clicks.tsv [--day 3] [--setting tail] [--header]
    deepfm schema --data clicks.csv                  # the inferred schema, as YAML to edit
    deepfm train --data clicks.tsv --preset criteo --split 0.8,0.1,0.1 --out runs/criteo
    deepfm train --warm-start runs/day1 --data day2.tsv --split 0.9,0.1 --out runs/day2
    deepfm evaluate runs/criteo --data test.tsv
    deepfm predict runs/criteo --data new.tsv --out scores.csv
    deepfm export runs/criteo --onnx runs/criteo/model.onnx
    deepfm serve runs/criteo --host 127.0.0.1 --port 8000 [--workers N] [--engine onnx]
    deepfm calibrate runs/criteo --data valid.tsv [--method isotonic|platt]
    deepfm drift runs/criteo --data new.tsv --fail-on 'psi>0.25'   # exit 1 when crossed
    deepfm compare --data clicks.tsv --preset criteo --split 0.8,0.1,0.1 --models lr,fm,deepfm --seeds 3
    deepfm tune --data clicks.tsv --preset criteo --split 0.8,0.1,0.1 --minutes 20 --out runs/tune
    deepfm explain runs/criteo --data test.tsv --out runs/criteo/explain [--pair C1,C2]
    deepfm report runs/criteo --data test.tsv      # runs/criteo/report.html

Bad input ends with one line naming the file, line and field, and exit status 2. ``deepfm drift``
exits with 1 when a --fail-on threshold is crossed.

One module per command group (train, score, analyze, data), each a thin layer over the
library; parser.py holds every flag.
"""

from __future__ import annotations

import logging
import os
import sys

from deepfm._deprecated import moved_names
from deepfm.cli.parser import build_parser
from deepfm.errors import DeepFMError

__all__ = ["build_parser", "main"]

# deepfm 0.1's deepfm.cli module held every command.
__getattr__ = moved_names(
    __name__,
    {
        **{f"cmd_{c}": "deepfm.cli.train" for c in ("schema", "train", "compare", "tune")},
        **{f"cmd_{c}": "deepfm.cli.score" for c in ("evaluate", "predict", "calibrate", "export", "serve")},
        **{f"cmd_{c}": "deepfm.cli.analyze" for c in ("drift", "explain", "report")},
        **{f"cmd_{c}": "deepfm.cli.data" for c in ("synth", "demo")},
    },
)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # train --nproc relaunches itself under torchrun
    # Under torchrun every rank runs this: progress is logged once, by rank 0.
    other_rank = int(os.environ.get("RANK", "0")) != 0
    logging.basicConfig(
        level=logging.WARNING if getattr(args, "quiet", False) or other_rank else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except DeepFMError as exc:
        print(f"deepfm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file we cannot open, write or create: the OS says which
        print(f"deepfm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
