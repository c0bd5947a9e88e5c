"""The long fuzz run: every property target of tests/test_fuzz.py (and the service's request
model in tests/test_serve_fuzz.py when present) with many cases, then what happened to them.

    python benchmarks/fuzz.py --cases 10000

CI runs the same targets with a few dozen cases. Here hypothesis draws fresh random cases
(not the fixed CI ones) until --cases per target. A target fails on any exception that is
not one of deepfm's documented errors, or on data reaching the model that is not finite or
in range; pytest's output then shows the smallest failing case. Writes
benchmarks/results/fuzz-<date>.json: per target, the count of each outcome.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ["tests/test_fuzz.py", "tests/test_serve_fuzz.py"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=10_000, help="cases per target (default 10000)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / f"fuzz-{datetime.date.today()}.json")
    args = ap.parse_args()
    files = [t for t in TARGETS if (ROOT / t).exists()]
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "outcomes.jsonl"
        env = {
            **os.environ,
            "DEEPFM_FUZZ_CASES": str(args.cases),
            "DEEPFM_FUZZ_RANDOM": "1",
            "DEEPFM_FUZZ_LOG": str(log),
            "OMP_NUM_THREADS": "1",
        }
        t0 = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files], cwd=ROOT, env=env
        )
        seconds = time.perf_counter() - t0
        counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for line in log.read_text().splitlines() if log.exists() else []:
            row = json.loads(line)
            counts[row["target"]][row["outcome"]] += 1
    result = {
        "command": f"python benchmarks/fuzz.py --cases {args.cases}",
        "date": str(datetime.date.today()),
        "passed": run.returncode == 0,
        "seconds": round(seconds, 1),
        "targets": {t: dict(c.most_common()) for t, c in counts.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    for target, c in counts.items():
        total = sum(c.values())
        print(f"\n{target}: {total:,} cases")
        for what, n in c.most_common():
            print(f"  {n:>7,}  {what}")
    print(
        f"\n{'all targets held' if run.returncode == 0 else 'A TARGET FAILED (see pytest above)'} in {seconds:.0f} s; wrote {args.out}"
    )
    sys.exit(run.returncode)


if __name__ == "__main__":
    main()
