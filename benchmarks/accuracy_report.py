"""The accuracy benchmark's summaries, checks and page (docs/accuracy.md).

Everything here is computed from the runs in the results JSON; no number is written by hand.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from accuracy_texts import CURVES_TEXT, DEFAULTS_TEXT, PROTOCOL_TEXT
from benchlib import DISPLAY
from study_eras import MIN_COUNT_UNRECORDED, before_auto, by_era

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


def row_key(run: dict) -> str:
    """Which table row a run belongs to: deepfm's variant, or the peer."""
    return (
        run["library"]
        if run["library"] != "deepfm"
        else ("deepfm" if run["variant"] == "defaults" else f"deepfm-{run['variant']}")
    )


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fresh_tables(run: dict) -> str:
    """How a deepfm run resolved train.reset_embeddings: "on", "off", or "–" for a run from
    before it was a default (no fresh tables, lr_decay 0.1); "" for a peer."""
    if run["library"] != "deepfm":
        return ""
    value = run.get("resolved", {}).get("reset_embeddings")
    return "–" if value is None else ("on" if value else "off")


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
        "fresh_tables": sorted({fresh_tables(r) for r in runs}),
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
    head = (
        "| library / model | test AUC | test logloss | epochs | batch | min count | fresh tables | train s "
        "| train samples/s |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    names = DEEPFM_ROWS | {p: DISPLAY[p] for p in PEER_ROWS}
    for key, label in names.items():
        r = rows.get(key)
        if r is None:
            continue
        epochs = "–".join(str(e) for e in sorted({min(r["epochs"]), max(r["epochs"])}))
        batch = "/".join(str(b) for b in r["batch_size"]) + (" (chosen)" if "batch_chosen" in r else "")
        lines.append(
            f"| {label} | {_cell(r['test_auc'], r['test_auc_sd'])} | {_cell(r['test_logloss'], r['test_logloss_sd'])} "
            f"| {epochs} | {batch} | {'/'.join(r.get('min_count', []))} | {'/'.join(r.get('fresh_tables', []))} "
            f"| {r['train_seconds']:,.1f} "
            f"| {r['train_samples_per_s']:,.0f} |"
        )
    if truth:
        lines.append(f"| Bayes-optimal (true p) | {truth['test_auc']:.4f} | {truth['test_logloss']:.4f} | | | | | | |")
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
    unchecked += earlier_defaults_note(report)
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
    parts.append(defaults_section([Path(p) for p in study or []], report["runs"], report.get("superseded")))
    parts.append(speed_section(speed))
    settings = report["peer_settings"]
    parts.append(
        PROTOCOL_TEXT.format(**settings | {"small_batches": " and ".join(str(b) for b in settings["small_batches"])})
    )
    parts.append(_settings_table(report))
    parts.append(_machine(report))
    return "\n".join(parts)


def earlier_defaults_note(report: dict) -> str:
    """A sentence naming the data sets with deepfm rows that ran under earlier defaults ("–" in
    their fresh tables column), whose checks therefore do not judge today's defaults alone."""
    rows = report["summary"]
    old = [
        d["name"]
        for d in report["datasets"]
        if any(
            "–" in row.get("fresh_tables", [])
            for key, row in rows.get(d["name"], {}).items()
            if key.startswith("deepfm")
        )
    ]
    if not old:
        return ""
    return (
        f" **{len(old)} of {len(report['datasets'])} data sets have deepfm rows that ran under the defaults before"
        f' fresh tables and `lr_decay` 0.03** ("–" in their fresh tables column), so their checks judge those: {", ".join(old)}.'
    )


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


def defaults_section(study: list[Any], runs: list[dict] | None = None, superseded: list[dict] | None = None) -> str:
    """What each default is and why, with the study's table (mean ± sd over its seeds) from
    the ``study`` files' runs. The "defaults" rows are this benchmark's deepfm defaults runs
    (the same command on the same files) wherever it ran the data set; ``superseded``: its
    runs that later files replaced (study_eras.by_era)."""
    import json

    from defaults_study import curve_table, summary_table

    if not study:
        return DEFAULTS_TEXT + "\n(No defaults-study results file: run benchmarks/defaults_study.py.)\n"
    rows = [before_auto(json.loads(line)) for path in study for line in path.read_text().splitlines() if line.strip()]
    # This benchmark's defaults runs are the defaults of today's code: they replace the study's
    # own "defaults" rows of the same data sets, which may have run under an earlier rule.
    current = [r for r in runs or [] if r["library"] == "deepfm" and r["variant"] == "defaults"
               and r["dataset"] in {r["dataset"] for r in rows}]  # fmt: skip
    # The curves table keeps every run with a curve, the study's replaced defaults runs too:
    # each curve is one run's own record, whatever the summary's means are made of.
    curves = curve_table(rows + current)
    rows = by_era(rows, current, [r for r in superseded or [] if r["library"] == "deepfm"])
    names = ", ".join(f"`benchmarks/results/{path.name}`" for path in study)
    head = (
        f"Each setting forced to a fixed value beside the defaults, by `benchmarks/defaults_study.py` "
        f'(runs in {names}; "rows per table row": the training rows x fields '
        f"over the embedding table's rows, which the auto settings read):\n"
    )
    if curves:
        curves = f"\n{CURVES_TEXT}\n{curves}\n"
    return DEFAULTS_TEXT + "\n" + head + "\n" + summary_table(rows) + "\n" + curves


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
