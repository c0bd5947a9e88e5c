"""The accuracy benchmark's summaries, checks and page (docs/accuracy.md).

Everything here is computed from the runs in the results JSON; no number is written by hand.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from benchlib import DISPLAY

# how a check records its outcome: add(check, dataset, PASS/FAIL/None for n/a, line)
_Add = Callable[[str, str, "bool | None", str], None]

# The rows of a data set's table, in order: deepfm's runs, then the peers.
DEEPFM_ROWS = {
    "deepfm": "deepfm (defaults)",
    "deepfm-fm": "deepfm --model fm",
    "deepfm-lr": "deepfm --model lr",
    "deepfm-inferred": "deepfm, schema inferred",
}
PEER_ROWS = ["deepctr", "fuxictr", "torchfm"]
BIG_ROWS = 300_000  # data sets this large must give deepfm a margin over the best peer
AUC_MARGIN = 0.005  # that margin, and how close the inferred schema must come to the written one
SPREAD = 2.0  # "beyond the seed spread": a difference of means above SPREAD x the larger sd
# The min_count of runs that do not record one: the peers' encoding (PEER_SETTINGS), and
# deepfm's default before min_count "auto".
MIN_COUNT_UNRECORDED = 2


def row_key(run: dict) -> str:
    """Which table row a run belongs to: deepfm's variant, or the peer."""
    return (
        run["library"]
        if run["library"] != "deepfm"
        else ("deepfm" if run["variant"] == "defaults" else f"deepfm-{run['variant']}")
    )


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def stats(runs: list[dict]) -> dict[str, Any]:
    """Mean and sample sd over seeds of one row's successful runs."""
    auc, auc_sd = _mean_sd([r["test_auc"] for r in runs])
    ll, ll_sd = _mean_sd([r["test_logloss"] for r in runs])
    return {
        "runs": len(runs),
        "seeds": sorted(r["seed"] for r in runs),
        "test_auc": auc,
        "test_auc_sd": auc_sd,
        "test_logloss": ll,
        "test_logloss_sd": ll_sd,
        "valid_auc": statistics.fmean(r["valid_auc"] for r in runs),
        "epochs": [r["epochs"] for r in runs],
        "stopped_early": all(r.get("stopped_early", True) for r in runs),
        "batch_size": sorted({r["batch_size"] for r in runs}),
        "min_count": sorted({str(r.get("resolved", {}).get("min_count", MIN_COUNT_UNRECORDED)) for r in runs}),
        "train_seconds": statistics.fmean(r["train_seconds"] for r in runs),
        "train_samples_per_s": statistics.fmean(r["train_samples_per_s"] for r in runs),
    }


def summarize(runs: list[dict]) -> dict[str, dict]:
    """Per table row, the stats of its runs. A peer tried at several batch sizes keeps the
    batch size with the better mean validation AUC over seeds; the others are listed."""
    rows: dict[str, dict] = {}
    for key in [*DEEPFM_ROWS, *PEER_ROWS]:
        mine = [r for r in runs if r["ok"] and row_key(r) == key]
        if not mine:
            continue
        by_batch = {b: [r for r in mine if r["batch_size"] == b] for b in sorted({r["batch_size"] for r in mine})}
        if key in PEER_ROWS and len(by_batch) > 1:
            tried = {b: stats(rs) for b, rs in by_batch.items()}
            best = max(tried, key=lambda b: tried[b]["valid_auc"])
            rows[key] = tried[best] | {
                "batch_chosen": best,
                "batches_tried": {
                    str(b): {k: s[k] for k in ("valid_auc", "test_auc", "test_logloss", "epochs")}
                    for b, s in tried.items()
                },
            }
        else:
            rows[key] = stats(mine)
    return rows


def best_peer(rows: dict[str, dict], metric: str = "test_auc") -> str | None:
    peers = [p for p in PEER_ROWS if p in rows]
    if not peers:
        return None
    return (
        max(peers, key=lambda p: rows[p][metric]) if metric == "test_auc" else min(peers, key=lambda p: rows[p][metric])
    )


def beyond_spread(rows: dict[str, dict], hi: str, lo: str) -> tuple[bool, float, float]:
    """Whether row hi's mean test AUC exceeds row lo's by more than SPREAD x the larger sd."""
    diff = rows[hi]["test_auc"] - rows[lo]["test_auc"]
    bar = SPREAD * max(rows[hi]["test_auc_sd"], rows[lo]["test_auc_sd"])
    return diff > bar, diff, bar


def checks(datasets: list[dict], summaries: dict[str, dict]) -> list[dict]:
    """The benchmark's checks, each PASS, FAIL or n/a (rows missing), with the numbers.
    ``datasets``: name, rows (nominal), family, setting, header (a schema-inferred run is due)."""
    out: list[dict] = []

    def add(check: str, name: str, ok: bool | None, text: str) -> None:
        out.append(
            {
                "check": check,
                "dataset": name,
                "result": "n/a" if ok is None else ("PASS" if ok else "FAIL"),
                "line": text,
            }
        )

    for ds in datasets:
        name, rows = ds["name"], summaries.get(ds["name"], {})
        _peer_checks(add, name, rows, AUC_MARGIN if ds["rows"] >= BIG_ROWS else 0.0)
        if ds["family"] == "synth" and ds["rows"] >= 1_000_000:
            _order_check(add, name, rows)
        if ds["family"] == "synth" and ds["rows"] == BIG_ROWS:
            if "deepfm" in rows and "deepfm-lr" in rows:
                d, lr = rows["deepfm"]["test_auc"], rows["deepfm-lr"]["test_auc"]
                add("deepfm_ge_lr", name, d >= lr, f"{name}: DeepFM {d:.4f} >= LR {lr:.4f}")
            else:
                add("deepfm_ge_lr", name, None, f"{name}: DeepFM >= LR: runs missing")
        if ds.get("header"):
            _inferred_check(add, name, rows)
    return out


def _peer_checks(add: _Add, name: str, rows: dict, margin: float) -> None:
    """deepfm's defaults against the best peer: AUC (by ``margin`` more on large data), logloss."""
    mine, peer = rows.get("deepfm"), best_peer(rows)
    if mine and peer:
        bar = rows[peer]["test_auc"] + margin
        add(
            "auc_vs_peers",
            name,
            mine["test_auc"] >= bar,
            f"{name}: deepfm defaults' test AUC {mine['test_auc']:.4f} >= best peer ({DISPLAY[peer]}) "
            f"{rows[peer]['test_auc']:.4f}{f' + {margin}' if margin else ''}",
        )
        lpeer = best_peer(rows, "test_logloss")
        add(
            "logloss_vs_peers",
            name,
            mine["test_logloss"] <= rows[lpeer]["test_logloss"],
            f"{name}: deepfm defaults' test logloss {mine['test_logloss']:.4f} <= best peer ({DISPLAY[lpeer]}) "
            f"{rows[lpeer]['test_logloss']:.4f}",
        )
    else:
        add(
            "auc_vs_peers",
            name,
            None,
            f"{name}: deepfm defaults vs the best peer: {'no peer runs' if mine else 'no deepfm runs'}",
        )


def _inferred_check(add: _Add, name: str, rows: dict) -> None:
    """The schema-inferred run within AUC_MARGIN of the written schema's."""
    mine = rows.get("deepfm")
    inf = rows.get("deepfm-inferred")
    if mine and inf:
        gap = inf["test_auc"] - mine["test_auc"]
        add(
            "inferred_schema",
            name,
            abs(gap) <= AUC_MARGIN,
            f"{name}: schema inferred {inf['test_auc']:.4f} within {AUC_MARGIN} of the written schema "
            f"{mine['test_auc']:.4f} (difference {gap:+.4f})",
        )
    else:
        add("inferred_schema", name, None, f"{name}: inferred vs written schema: runs missing")


def _order_check(add: _Add, name: str, rows: dict[str, dict]) -> None:
    """DeepFM > FM > LR, each step beyond the seed spread."""
    if not all(k in rows for k in ("deepfm", "deepfm-fm", "deepfm-lr")):
        add("deepfm_fm_lr_order", name, None, f"{name}: DeepFM > FM > LR: runs missing")
        return
    ok1, d1, bar1 = beyond_spread(rows, "deepfm", "deepfm-fm")
    ok2, d2, bar2 = beyond_spread(rows, "deepfm-fm", "deepfm-lr")
    add(
        "deepfm_fm_lr_order",
        name,
        ok1 and ok2,
        f"{name}: DeepFM > FM by {d1:+.4f} (needs > {bar1:.4f}) and FM > LR by {d2:+.4f} (needs > {bar2:.4f})",
    )


# ---------------------------------------------------------------- page
def _cell(mean: float, sd: float) -> str:
    return f"{mean:.4f} ± {sd:.4f}"


def table(rows: dict[str, dict], truth: dict | None) -> str:
    head = "| library / model | test AUC | test logloss | epochs | batch | min count | train s | train samples/s |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    names = DEEPFM_ROWS | {p: DISPLAY[p] for p in PEER_ROWS}
    for key, label in names.items():
        r = rows.get(key)
        if r is None:
            continue
        epochs = "–".join(str(e) for e in sorted({min(r["epochs"]), max(r["epochs"])}))
        batch = "/".join(str(b) for b in r["batch_size"]) + (" (chosen)" if "batch_chosen" in r else "")
        lines.append(
            f"| {label} | {_cell(r['test_auc'], r['test_auc_sd'])} | {_cell(r['test_logloss'], r['test_logloss_sd'])} "
            f"| {epochs} | {batch} | {'/'.join(r.get('min_count', []))} | {r['train_seconds']:,.1f} "
            f"| {r['train_samples_per_s']:,.0f} |"
        )
    if truth:
        lines.append(f"| Bayes-optimal (true p) | {truth['test_auc']:.4f} | {truth['test_logloss']:.4f} | | | | | |")
    return "\n".join(lines)


def batch_notes(rows: dict[str, dict]) -> str:
    notes = []
    for p in PEER_ROWS:
        tried = rows.get(p, {}).get("batches_tried")
        if tried:
            parts = ", ".join(f"{b}: valid {t['valid_auc']:.4f} / test {t['test_auc']:.4f}" for b, t in tried.items())
            notes.append(f"{DISPLAY[p]} {rows[p]['batch_chosen']} ({parts})")
    return ("Batch chosen by mean validation AUC: " + "; ".join(notes) + ".") if notes else ""


def render(report: dict, results: Any, study: list[Any] | None = None, speed: Any = None) -> str:
    """docs/accuracy.md from a finished results file, and the defaults study's runs (the
    defaults-study-*.jsonl files of benchmarks/defaults_study.py) when there are some."""
    from pathlib import Path

    from benchlib import ROOT

    def link(results: Any) -> str:
        path = Path(results).resolve()
        rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else None
        return f"[`{rel}`](../{rel})" if rel else f"`{path.name}` (outside the repository)"

    from accuracy_data import catalogue

    raw = ", ".join(link(r) for r in (results if isinstance(results, list) else [results]))
    ran = {d["name"] for d in report["datasets"]}
    missing = [d.name for d in catalogue() if d.name not in ran]
    # The checks only cover the data sets that ran: say which of the catalogue did not.
    unchecked = f" Not run for these results, so not checked: {', '.join(missing)}." if missing else ""
    marks = [c["result"] for c in report["checks"]]
    seeds = ", ".join(str(s) for s in report["seeds"])
    peer_runs = [r for r in report["runs"] if r["library"] in PEER_ROWS]
    reused = sum(1 for r in peer_runs if r.get("reused"))
    quick = (
        "\n**A --quick smoke run: a few thousand rows per data set, two epochs. Not a result.**\n"
        if report["quick"]
        else ""
    )
    parts = [
        "# Accuracy: deepfm beside DeepCTR-Torch, FuxiCTR and pytorch-fm\n",
        f"Generated by `benchmarks/accuracy.py` on {report['date']}; do not edit by hand, rerun it.{quick}\n",
        f"```bash\n{report['command']}    # with the project's .venv active\n```\n",
        f"{marks.count('PASS')} of {len(marks)} checks pass ({marks.count('FAIL')} fail, {marks.count('n/a')} n/a). "
        f"Seeds {seeds}: every figure is the mean ± sample sd over them. {reused} of {len(peer_runs)} peer runs "
        f"were taken from an earlier results file (`--reuse`).{unchecked} Raw runs, summaries and versions: {raw}.\n",
        "## Checks\n",
        "\n".join(f"- **{c['result']}** {c['line']}" for c in report["checks"]) + "\n",
        f'"Beyond the seed spread": the difference of the means is larger than {SPREAD:g} × the larger of the two '
        f"sample sds. Data sets of {BIG_ROWS:,} rows and more ask deepfm for {AUC_MARGIN} AUC over the best peer.\n",
        "## Data sets\n",
        _datasets_table(report["datasets"]),
        "## Results\n",
    ]
    for ds in report["datasets"]:
        rows = report["summary"].get(ds["name"], {})
        parts.append(f"### {ds['title']} (`{ds['name']}`)\n")
        parts.append(table(rows, ds.get("truth")) + "\n")
        notes = batch_notes(rows)
        if notes:
            parts.append(notes + "\n")
    parts.append(defaults_section([Path(p) for p in study or []], report["runs"]))
    parts.append(speed_section(speed))
    settings = report["peer_settings"]
    parts.append(
        PROTOCOL_TEXT.format(**settings | {"small_batches": " and ".join(str(b) for b in settings["small_batches"])})
    )
    parts.append(_settings_table(report))
    parts.append(_machine(report))
    return "\n".join(parts)


def _datasets_table(datasets: list[dict]) -> str:
    lines = [
        "| data set | source | train / valid / test rows | fields | peers' ids | test click rate | Bayes AUC / logloss (test) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for ds in datasets:
        p, t = ds["parts"], ds.get("truth")
        src = ds["source"]
        where = (
            f"`deepfm synth --setting {ds['setting']} --header`"
            if ds["family"] == "synth"
            else f"`{src.get('file', '')}`"
        )
        bayes = f"{t['test_auc']:.4f} / {t['test_logloss']:.4f}" if t else "unknown"
        rate = f"{ds['test_click_rate']:.3f}"
        lines.append(
            f"| {ds['name']} | {where} | {p['train']:,} / {p['valid']:,} / {p['test']:,} | {ds['fields']} "
            f"| {ds['peer_vocabulary']:,} | {rate} | {bayes} |"
        )
    return "\n".join(lines) + "\n"


def _settings_table(report: dict) -> str:
    """The generator settings of the synth data sets, with what was measured on their test parts."""
    from deepfm.data.synth_settings import SETTINGS

    measured = {ds["setting"]: ds["truth"] for ds in report["datasets"] if ds["family"] == "synth" and ds.get("truth")}
    lines = [
        "## Generator settings\n",
        "`deepfm synth --setting NAME` (deepfm/data/synth_settings.py); Bayes AUC and click "
        "rate measured on the test part of the largest data set of each setting here.\n",
        "| setting | FM weight | MLP weight | vocabulary scale | Zipf shift | numeric share | target Bayes AUC | Bayes AUC (test) | click rate (test) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in SETTINGS.items():
        t = measured.get(name)
        share = "as drawn" if s.numeric_share is None else f"{s.numeric_share:g}"
        got = f"{t['test_auc']:.4f} | {t['click_rate']:.3f}" if t else "| "
        lines.append(
            f"| {name} | {s.fm_weight:g} | {s.mlp_weight:g} | {s.card_scale:g} | {s.zipf_shift:+g} | {share} "
            f"| {s.bayes_auc:g} | {got} |"
        )
    return "\n".join(lines) + "\n"


def _machine(report: dict) -> str:
    env = report["environment"]
    mine, theirs = env.get("deepfm_env", {}), env.get("peers_env", {})
    v, pv = mine.get("versions", {}), theirs.get("versions", {})
    commit = (env.get("deepfm_commit") or "unknown") + (
        " with uncommitted changes in deepfm/" if env.get("deepfm_tree_dirty") else ""
    )
    peers = ", ".join(
        f"{DISPLAY[p]} {pv.get(k, '?')}"
        for p, k in (("deepctr", "deepctr-torch"), ("fuxictr", "fuxictr"), ("torchfm", "torchfm"))
    )
    stack = ", ".join(f"{k} {x}" for k, x in pv.items() if k not in ("deepctr-torch", "fuxictr", "torchfm"))
    nice = (
        (
            " The run had a lower priority (`nice`) and shared the machine with other work: train seconds and samples/s "
            "are noisy, compare them within a table only."
        )
        if report["command"].startswith("nice ")
        else ""
    )
    threads = (
        f", set for every run alike by `--threads {report['threads']}` (OMP_NUM_THREADS)"
        if report.get("threads")
        else ""
    )
    return f"""## Machine and versions

- CPU: {env.get("cpu")}, {env.get("cores")} cores, {env.get("ram_gib")} GiB RAM; {env.get("os")}; no GPU used.{nice}
- Python {mine.get("python", "?")}; deepfm {v.get("deepfm", "?")} at commit {commit}, torch {v.get("torch", "?")}, numpy {v.get("numpy", "?")}
- Peers ({"their own venv" + (", versions as recorded in the reused results file" if theirs.get("from") else "") if theirs else "not run"}): {peers if theirs else "-"}; {stack or "-"}
- torch threads per process: {mine.get("torch_threads", "?")} (deepfm), {theirs.get("torch_threads", "-")} (peers){threads}
"""


def before_auto(run: dict) -> dict:
    """A study's "defaults" run from before min_count "auto" (its resolved block names no
    min_count), on data where "auto" now resolves to another number: a "min_count 2" run."""
    from deepfm.data.schema import auto_min_count

    old = run["variant"] == "defaults" and "min_count" not in run.get("resolved", {})
    if old and auto_min_count(run.get("train_rows", 0)) != MIN_COUNT_UNRECORDED:
        return run | {"variant": f"min_count {MIN_COUNT_UNRECORDED}"}
    return run


def defaults_section(study: list[Any], runs: list[dict] | None = None) -> str:
    """What each default is and why, with the study's table (mean ± sd over its seeds) from
    the ``study`` files' runs. The "defaults" rows are this benchmark's deepfm defaults runs
    (the same command on the same files) wherever it ran the data set."""
    import json

    from defaults_study import curve_table, summary_table

    if not study:
        return DEFAULTS_TEXT + "\n(No defaults-study results file: run benchmarks/defaults_study.py.)\n"
    rows = [before_auto(json.loads(line)) for path in study for line in path.read_text().splitlines() if line.strip()]
    # This benchmark's defaults runs are the defaults of today's code: they replace the study's
    # own "defaults" rows of the same data sets, which may have run under an earlier rule.
    current = [r for r in runs or [] if r["library"] == "deepfm" and r["variant"] == "defaults"
               and r["dataset"] in {r["dataset"] for r in rows}]  # fmt: skip
    replaced = {r["dataset"] for r in current}
    # The curves table keeps every run with a curve, the study's replaced defaults runs too:
    # each curve is one run's own record, whatever the summary's means are made of.
    curves = curve_table(rows + current)
    rows = [r for r in rows if not (r["variant"] == "defaults" and r["dataset"] in replaced)] + current
    names = ", ".join(f"`benchmarks/results/{path.name}`" for path in study)
    head = (
        f"Each setting forced to a fixed value beside the defaults, by `benchmarks/defaults_study.py` "
        f'(runs in {names}; "rows per table row": the training rows x fields '
        f"over the embedding table's rows, which the auto settings read):\n"
    )
    if curves:
        curves = f"\n{CURVES_TEXT}\n{curves}\n"
    return DEFAULTS_TEXT + "\n" + head + "\n" + summary_table(rows) + "\n" + curves


CURVES_TEXT = """The runs that recorded their epochs (the study's, and this benchmark's deepfm defaults runs:
each keeps every epoch's valid AUC and dense learning rate from `metrics.json`): where a run peaks,
and what each fall back to the best epoch's weights, at the learning rates times `lr_decay`
(0.1), finds after it. "[lr x]" marks the first epoch at a new rate.
"""


SPEED_FLOOR = 34_000  # samples/s of the defaults at 1M rows on 2 cores before the accuracy work


def speed_section(path: Any) -> str:
    """The defaults' training speed, from a speed.py run that timed them beside the peers on
    one machine (the accuracy runs above share the machine and are not speed figures)."""
    import json
    from pathlib import Path

    if path is None:
        return "## Training speed of the defaults\n\n(No speed.py run with deepfm-defaults: run it.)\n"
    report = json.loads(Path(path).read_text())
    medians, env = report["medians"], report["environment"]
    mine = medians["deepfm-defaults"]
    peers = [lib for lib in report["libraries"] if not lib.startswith("deepfm") and medians[lib]["runs"]]
    best = max(peers, key=lambda p: medians[p]["train_samples_per_s"], default=None)
    versus = (
        f", {mine['train_samples_per_s'] / medians[best]['train_samples_per_s']:.2f}× the fastest peer run beside "
        f"it ({DISPLAY[best]}, {medians[best]['train_samples_per_s']:,.0f} samples/s at the speed page's fixed settings)"
        if best
        else ""
    )
    resolved = next(
        (r["resolved"] for r in report["runs"] if r["library"] == "deepfm-defaults" and r.get("resolved")), {}
    )
    return (
        "## Training speed of the defaults\n\n"
        f"`deepfm train` with its defaults trains {mine['train_samples_per_s']:,.0f} samples/s (median of "
        f"{mine['runs']} runs, {report['rows']:,} rows, {report['epochs']} epoch, batch {resolved.get('batch_size', '?')}, "
        f"batch norm {resolved.get('batch_norm', '?')}) on {env.get('cpu')}, {env.get('cores')} cores{versus}; "
        f"from `{report['command']}` on {report['date']} (`benchmarks/results/{Path(path).name}`, docs/benchmarks.md "
        f"describes the runs). The floor asked: {SPEED_FLOOR:,} samples/s at 1M rows on 2 cores, measured on this "
        f"machine before the accuracy work; this run is {'above' if mine['train_samples_per_s'] >= SPEED_FLOOR else 'below'} "
        "it (the peers' columns on docs/benchmarks.md show how fast the machine ran that day).\n"
    )


DEFAULTS_TEXT = """## The defaults and the evidence

`deepfm train` with no flags resolves every `auto` setting from the training data and writes the
values it chose into the model's `config.json` and `metrics.json` (`resolved`), so a run trains
the same model again from its own config.

| setting | default | why |
|---|---|---|
| `model.init_std` | `auto`: `sqrt(s / sqrt(P·D))`, clipped to [0.001, 0.1] (P field pairs, D = embedding size), s = 0.1 when each table row is seen 60 times or more in training, else 0.001 (0.0303 and 0.003 for 39 fields of 16) | the FM pairwise term starts with spread s in logit units whatever the number of fields. On sparse data most rows are seen a few times and their random start stays noise in the pairs at test time: a start near zero gains on the sparse sets (`init_std 0.003` against the 0.0303 of the dense rule: +0.0024 tail, +0.0057 noisy, +0.0007 criteo-100k; -0.0035 on the Criteo sample, within its spread). Dense data learns every row, and interaction-heavy data wants the larger start (interactions: 0.7680 at 0.0303, 0.7659 at 0.01, 0.7642 at 0.003); Frappe is even from 0.003 to 0.061. At 1M rows, where min_count 10 makes every set dense, 0.003 against the defaults' run of the same seed gained on the noisy (+0.0009 and +0.0008, seeds 1 and 2) and tail (+0.0007 and +0.0002) settings and lost on interactions (-0.0010) and criteo (-0.0005, seed 1); on noisy 1M 0.001 moved it by -0.0001 and 0.0001 by -0.0062 (seed 1); interactions at 100k lost 0.0038 at 0.003 (3 seeds). 0.003 helps the noisy settings and hurts the interaction-heavy ones at every size tried (and criteo at 1M), so the dense start stays |
| `model.batch_norm` | `auto`: on when each table row is seen 60 times or more in training | batch norm fits the MLP fast: a gain where values are seen often, memorization where most are rare (the `batch_norm on` / `off` rows below). On noisy 1M (dense after min_count 10, seed 1) turning it off lost 0.0035, and the peers' MLP (`dropout 0 batch_norm off`) 0.0029: it reached a better first epoch (valid AUC 0.6762 against 0.6749) but its pass at the decayed rates gained less (+0.0009 against +0.0043) |
| `train.embedding_lr` | `auto`: 3e-3 at 60 rows per table row or more; below, 1e-3, and for models with an MLP 1e-3 × sqrt(batch / 256), at most 3e-3 (1e-3 at batches of 256, 2e-3 at 1024, 3e-3 at 4096) | on sparse data at batches of 256, rare values' vectors memorize their few clicks at the larger step (`embedding_lr 3e-3`: -0.0017 criteo-100k, -0.0026 tail-100k, -0.0072 noisy-100k; on the Criteo sample -0.0044 against 1e-3 under the init rule of its day, within its spread); frequent values learn faster with it. Row-wise Adam moves a row about one step for each batch that holds it, so a value seen in most batches gets one update a batch: larger batches give it fewer, and the sparse step grows with the square root of the batch. On the tail setting, whose best epoch is its first, 1e-3 left DeepFM's first epoch underfit at batches of 1024 and 4096: 2e-3 gained +0.0057 at 300k rows (3e-3 the same within the spread), and at 1M rows 3e-3, a batch of 1024 or 2048, or batch norm each gained about +0.011 (single seeds, `synth-tail-1m` rows below). FM alone, with no MLP or dropout between its vectors and the clicks, memorized faster at the larger step (tail, 3 seeds: 0.7294 ± 0.0027 at 2e-3 against 0.7313 ± 0.0007 at 1e-3 at 300k rows; 0.7374 ± 0.0029 at 3e-3 against 0.7406 ± 0.0007 at 1M) and LR did not move (0.7306 and 0.7341 against 0.7305 and 0.7342): both keep 1e-3 (`accuracy-2026-12-07-tail-300k-deepfm.json` and `-tail-1m-deepfm.json` hold the runs at the larger step). On noisy 1M, dense after min_count 10, 1e-3 lost 0.0032 (seed 1) |
| `train.batch_size` | `auto`: the power of two nearest training rows / 256 (about 256 steps an epoch), in [256, 4096]; below ~8k rows, rows / 32 (at least 64) | early stopping looks once an epoch, and the rule before (32 steps an epoch: 2048 at 80k rows) ended 100k-row runs before the pairs were learned: at 80k training rows, 256 gains +0.003 (criteo), +0.016 (interactions), +0.005 (tail) and +0.007 (noisy) over 2048, and beats 512 on all four (`batch_size` rows below); Frappe (46k rows) is within its spread at 256, 512 and 1024. From ~500k rows it is 4096, the fast batch, as before: on the 1M-row tail setting batches of 1024 and 2048 gained as much as the larger row-wise step does at 4096, which costs no speed (`train.embedding_lr`); on noisy 1M a batch of 2048 lost 0.0010 (seed 1) |
| `train.lr` | 1e-3 (Adam, dense parameters) | the common choice of every peer; 5e-4 lost 0.0023 on noisy 1M (seed 1) |
| `train.epochs`, `patience`, `min_improvement` | 50, 2, 1e-4 | training ends by early stopping on validation AUC (the `epochs` column never reaches 50); a drop of less than 0.001 from the best counts as a stall and training goes on, a larger one goes back to the best epoch's weights with the learning rates × `lr_decay` 0.1 |
| `train.lr_decay` | 0.1 | on every 300k and 1M set the second pass at 1e-3 memorizes (valid AUC falls while train AUC jumps: the curves below), and a pass from the best epoch's weights at the smaller rates gains it back and more. A larger decay step memorizes again: `lr_decay 0.3` lost 0.0042 on noisy 1M (tail 1M +0.0001). A smaller one, 0.03, against the defaults' run of the same seed (seed 1; criteo-10k and Frappe seeds 1-3): +0.0012 tail 1M, +0.0011 tail 100k, +0.0010 noisy 100k, +0.0008 criteo 100k, +0.0006 interactions 1M, +0.0003 interactions 300k and 100k, +0.0002 criteo 1M, +0.0001 criteo 300k and noisy 300k, -0.0003 noisy 1M, -0.0009 tail 300k, criteo-10k 0.0000, Frappe -0.0001: about +0.0003 on average, within one seed's spread on most sets. Seed 2 gained on every set it ran (tail 1M +0.0011, noisy 1M +0.0009, criteo 300k and tail 300k +0.0004, interactions 300k +0.0003, noisy 300k +0.0001), and seed 3 on the three it ran (tail 1M +0.0019, tail 300k +0.0009, noisy 1M +0.0001): on tail 1M the three seeds gain +0.0011 to +0.0019, on noisy 1M -0.0003 to +0.0009. 0.01 is no better (tail 1M +0.0012, interactions 300k +0.0002, criteo 300k -0.0001) and takes 6-11 epochs. 0.1 stays until the rows above are measured again with 0.03 on 3 seeds |
| `train.calibrate` | true | Platt scaling fitted on the validation rows: early stopping keeps the epoch of the best AUC, often past the best logloss; skipped with fewer than 50 rows of a class or where it would reverse the ranking |
| `model.dropout`, `l2_embedding` | 0.2, 1e-5 | dropout 0 fit worse on every set tried, and on noisy 1M (seed 1) 0 lost 0.0033, 0.1 lost 0.0014 and 0.4 lost 0.0045; a larger L2 on the rows a batch uses (1e-4 and up) held Frappe's validation AUC on a plateau for good |
| `embedding_dim`, `hidden` | 16, 400×400×400 | the DeepFM paper's MLP; `deepfm tune` searches both; `embedding_dim 32` moved noisy 1M by -0.0001 (seed 1) |
| `min_count` (every field) | `auto`: 2 up to 100k training rows, rising linearly to 10 at 200k and staying there (4 at 120k, 6 at 150k) | values seen fewer times in the training part share their field's OOV row. A value seen a few times gets a vector that memorizes its rows, and from a few hundred thousand rows on a run holds many such values and trains them for several epochs. With 10 the first epoch is no better (interactions at 1M, seed 1: valid AUC 0.7988 after one epoch against 0.7996 with 2; both curves are below), but the second pass memorizes less, so the fall-backs to the best weights find more (0.8023 at best against 0.8009). The defaults with `auto` against the same command at 2, 3 seeds each (`accuracy-2026-12-07-auto-*.json` against the earlier files): at 240k training rows criteo +0.0034, tail +0.0020, noisy +0.0003 and interactions +0.0000: two of its seeds gained (0.7967 and 0.7973 against 0.7939), the third lost (0.7877), because its second epoch still gained on the first by 0.001, so its fall-back went to weights that had already memorized (train AUC 0.83; its curve is below); at 800k rows criteo +0.0018, interactions +0.0018, noisy +0.0017 and tail -0.0015. FM gained +0.0003 to +0.0026 on all eight sets and LR -0.0000 to +0.0013; the schema-inferred runs at 300k moved by -0.0006 (interactions, whose third seed did the same) to +0.0029. At 80k training rows 5 lost 0.0066 on the noisy setting (3 seeds, study), so data below 100k rows keeps 2; no run has trained between 100k and 200k rows, where the threshold rises. On the tail setting 10 drops most of the table's rows (53 rows per table row at 1M become 296), which makes the data dense for the other auto settings: batch norm on, the larger init and embedding step; the tail's change at 1M is that switch and the threshold together. Keeping the sparse settings there (`sparse settings`: batch norm off, init_std 0.003) gained +0.0013 on the 1M tail's seed 1, but at 300k (`sparse settings at batch 1024`, with that batch's sparse embedding step 2e-3) seeds 1 and 2 moved by -0.0023 and +0.0008, so the density stays read from the table min_count leaves. The study's `min_count 2` rows are its defaults runs from before `auto` |
"""


PROTOCOL_TEXT = """## Protocol

- **deepfm**: `deepfm train <data flags> --seed S` with nothing else: its defaults choose the batch
  size, learning rates, regularization, epochs (early stopping on validation AUC) and everything
  else. `--model lr` and `--model fm` are the same code with parts switched off. "schema
  inferred": the same file with a header, no `--preset`, only `--label label`. Numbers come from
  the model folder's `metrics.json` (test metrics of the restored best epoch). Its `min count`
  column is the `min_count` `auto` resolved to (from the training rows); runs that recorded
  none are from before `auto` and used 2.
- **Peers**: each data set is encoded once for all three (benchmarks/peers/encode.py): every
  field categorical, vocabularies fitted on the training part, values seen fewer than
  {min_count} times there and unseen values share one OOV id per field, a missing value is a value
  of its own, Criteo's counts log-bucketized (v > 2: floor(log(v)²)), a libFM field's value is its
  feature index. Each library's own DeepFM: embedding {embedding_dim}, MLP {hidden} ReLU, Adam lr {lr:g},
  validation AUC after every epoch, the best epoch's weights kept, patience {patience}, at most
  {max_epochs} epochs (`epochs` in the tables: how many ran, min–max over seeds). Batch {large_batch} from
  {small_train_rows:,} training rows up; below, every seed at {small_batches} and the batch size with the
  better mean validation AUC is kept. Everything else is the library's default:
  - **DeepCTR-Torch**: `DeepFM` with its defaults (L2 1e-5 on embeddings and the linear part, init std
    1e-4, no dropout, no batch norm), `compile('adam', 'binary_crossentropy', metrics=['auc'])`, `fit` with
    its own `EarlyStopping(monitor='val_auc', restore_best_weights=True)` callback. Its loss is summed
    over the batch, not averaged, and it casts ids through float32.
  - **FuxiCTR**: the model zoo's DeepFM rebuilt from the pip package's layers (the package ships no
    zoo) with the zoo's and `BaseModel`'s defaults: no regularization, dropout or batch norm, embeddings
    N(0, 1e-4), gradients clipped at norm 10, learning rate × 0.1 after each epoch without a better
    validation AUC (`reduce_lr_on_plateau`), and `BaseModel.fit`'s own early stopping, which reloads the
    best checkpoint.
  - **pytorch-fm**: `DeepFactorizationMachineModel` as the library builds it (batch norm after every
    hidden layer, first-order weights N(0, 1)), dropout 0.2 and Adam weight decay 1e-6 from its
    `examples/main.py` (the model has no default dropout), and that example's loop with its
    `EarlyStopper` (num_trials = patience), `BCELoss` on the sigmoid output.
- Train seconds and samples/s count the training loop only (not validation, checkpoints or
  preprocessing), summed over the epochs that ran.
"""
