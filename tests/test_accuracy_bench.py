"""The accuracy benchmark's own logic (benchmarks/accuracy_*.py): the checks computed from
runs, the peers' batch choice, and Frappe's libFM lines as a CSV. No training here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import accuracy_data  # noqa: E402
from accuracy_report import beyond_spread, checks, earlier_defaults_note, summarize, table  # noqa: E402
from defaults_study import summary_table  # noqa: E402
from study_eras import BEFORE_FRESH, before_auto, by_era  # noqa: E402


def _run(
    library: str,
    seed: int,
    auc: float,
    logloss: float = 0.45,
    variant: str = "peer",
    batch: int = 4096,
    valid: float | None = None,
) -> dict:
    return {
        "dataset": "d",
        "library": library,
        "variant": variant,
        "seed": seed,
        "ok": True,
        "test_auc": auc,
        "test_logloss": logloss,
        "valid_auc": auc if valid is None else valid,
        "epochs": 3,
        "batch_size": batch,
        "train_seconds": 1.0,
        "train_samples_per_s": 10.0,
    }


def _deepfm(variant: str, aucs: list[float], logloss: float = 0.44) -> list[dict]:
    return [_run("deepfm", s, a, logloss, variant=variant) for s, a in enumerate(aucs, 1)]


def test_summary_keeps_the_peer_batch_with_the_better_validation_auc() -> None:
    runs = [_run("deepctr", s, 0.70, batch=256, valid=0.72) for s in (1, 2)]
    runs += [_run("deepctr", s, 0.75, batch=2048, valid=0.71) for s in (1, 2)]  # better test, worse valid
    runs.append(_run("deepctr", 3, 0.10, batch=256) | {"ok": False})  # failed runs are left out
    row = summarize(runs)["deepctr"]
    assert row["batch_chosen"] == 256 and row["test_auc"] == pytest.approx(0.70) and row["runs"] == 2
    assert set(row["batches_tried"]) == {"256", "2048"}


def test_the_table_shows_the_min_count_each_run_fitted_with() -> None:
    runs = [r | {"resolved": {"min_count": 10}} for r in _deepfm("defaults", [0.80, 0.81])]
    runs += _deepfm("fm", [0.79, 0.79])  # a results file from before min_count "auto" records none
    runs += [_run("fuxictr", s, 0.78) for s in (1, 2)]
    cells = {line.split(" | ")[0]: line.split(" | ")[5] for line in table(summarize(runs), None).splitlines()[2:]}
    assert cells == {"| deepfm (defaults)": "10", "| deepfm --model fm": "2", "| FuxiCTR": "2"}


def test_the_table_shows_whether_each_run_drew_fresh_tables() -> None:
    runs = [r | {"resolved": {"reset_embeddings": True}} for r in _deepfm("defaults", [0.80, 0.81])]
    runs += [r | {"resolved": {"reset_embeddings": False}} for r in _deepfm("fm", [0.79, 0.79])]
    runs += _deepfm("lr", [0.78, 0.78])  # a results file from before fresh tables records none
    runs += [_run("fuxictr", s, 0.78) for s in (1, 2)]
    cells = {line.split(" | ")[0]: line.split(" | ")[6] for line in table(summarize(runs), None).splitlines()[2:]}
    assert cells == {
        "| deepfm (defaults)": "on",
        "| deepfm --model fm": "off",
        "| deepfm --model lr": "–",
        "| FuxiCTR": "",
    }


def test_study_defaults_from_before_min_count_auto_become_min_count_2_where_auto_differs() -> None:
    old = {"variant": "defaults", "train_rows": 800_000, "resolved": {"batch_size": 4096}}
    assert before_auto(old)["variant"] == "min_count 2"  # auto is 10 there
    small = old | {"train_rows": 80_000}
    assert before_auto(small) == small  # auto is 2 there: still the defaults
    new = old | {"resolved": {"min_count": 10}}
    assert before_auto(new) == new
    assert before_auto(old | {"variant": "min_count 5"})["variant"] == "min_count 5"


def test_the_page_names_the_data_sets_measured_underearlier_defaults_note() -> None:
    today = [r | {"resolved": {"reset_embeddings": True}} for r in _deepfm("defaults", [0.80, 0.81])]
    earlier = [r | {"dataset": "e"} for r in _deepfm("defaults", [0.80, 0.81])]  # records no reset_embeddings
    report = {
        "datasets": [{"name": "d"}, {"name": "e"}],
        "summary": {"d": summarize(today), "e": summarize(earlier)},
    }
    assert earlier_defaults_note(report).endswith("so their checks judge those: e.")
    assert earlier_defaults_note(report | {"datasets": [{"name": "d"}]}) == ""
    report["summary"]["d"] |= summarize(_deepfm("inferred", [0.79, 0.80]))  # another row, run before
    assert earlier_defaults_note(report).endswith("so their checks judge those: d, e.")


def test_study_runs_ofearlier_defaults_note_are_set_against_the_defaults_of_their_time() -> None:
    def era(runs: list[dict], fresh: bool | None) -> list[dict]:
        resolved = {"min_count": 10} | ({} if fresh is None else {"reset_embeddings": fresh})
        return [r | {"resolved": resolved} for r in runs]

    current = era(_deepfm("defaults", [0.810, 0.812]), fresh=True)  # today's: fresh tables
    superseded = era(_deepfm("defaults", [0.800, 0.802]), fresh=None)  # the page's, before
    study = era(_deepfm("defaults", [0.790]), fresh=None)  # the study's own, replaced by the page's
    study += era(_deepfm("lr 5e-4", [0.797, 0.799]), fresh=None) + era(_deepfm("reset_embeddings on", [0.808]), True)
    study += [r | {"dataset": "e"} for r in era(_deepfm("lr 5e-4", [0.7]), fresh=None)]  # not measured again
    rows = by_era(study, current, superseded)
    delta = {
        (cells[0], cells[2]): cells[6]
        for cells in (line.strip("| ").split(" | ") for line in summary_table(rows).splitlines()[2:])
    }
    assert delta == {
        ("d", "defaults"): "",
        ("d", BEFORE_FRESH): "-0.0100",  # the page's earlier runs, not the study's own
        ("d", "lr 5e-4"): "-0.0030",  # against the defaults it ran beside, not today's
        ("d", "reset_embeddings on lr_decay 0.1"): "-0.0030",
        ("e", "lr 5e-4"): "",
    }


def test_checks_pass_and_fail_from_the_numbers() -> None:
    runs = _deepfm("defaults", [0.800, 0.801, 0.802]) + _deepfm("fm", [0.790, 0.791, 0.792])
    runs += _deepfm("lr", [0.789, 0.790, 0.791]) + _deepfm("inferred", [0.797, 0.798, 0.799])
    runs += [_run("fuxictr", s, a, 0.46) for s, a in enumerate([0.797, 0.796, 0.798], 1)]
    runs += [_run("torchfm", s, a, 0.43) for s, a in enumerate([0.70, 0.70, 0.70], 1)]
    ds = {"name": "d", "family": "synth", "rows": 1_000_000, "header": True}
    result = {c["check"]: c["result"] for c in checks([ds], {"d": summarize(runs)})}
    # 0.801 < 0.797 + 0.005; logloss 0.44 > pytorch-fm's 0.43; FM - LR = 0.001 < 2 x sd 0.001
    assert result == {
        "auc_vs_peers": "FAIL",
        "logloss_vs_peers": "FAIL",
        "deepfm_fm_lr_order": "FAIL",
        "inferred_schema": "PASS",
    }
    small = ds | {"rows": 100_000}
    result = {c["check"]: c["result"] for c in checks([small], {"d": summarize(runs)})}
    assert result["auc_vs_peers"] == "PASS" and "deepfm_fm_lr_order" not in result
    assert {c["result"] for c in checks([ds], {"d": summarize(_deepfm("defaults", [0.8]))})} == {"n/a"}


def test_beyond_spread_uses_the_larger_sd() -> None:
    rows = {"a": {"test_auc": 0.80, "test_auc_sd": 0.001}, "b": {"test_auc": 0.797, "test_auc_sd": 0.002}}
    assert beyond_spread(rows, "a", "b") == (False, pytest.approx(0.003), pytest.approx(0.004))
    rows["b"]["test_auc_sd"] = 0.001
    assert beyond_spread(rows, "a", "b")[0]


def test_frappe_libfm_to_csv(tmp_path: Path) -> None:
    lines = [
        "1 266:1 1244:1 5042:1 5049:1 5054:1 5055:1 5058:1 5062:1 5074:1 5149:1\r\n",
        "-1 138:1 1296:1 5041:1 5052:1 5053:1 5055:1 5058:1 5061:1 5085:1 5201:1\r\n",
    ]
    src = tmp_path / "f.libfm"
    src.write_text("".join(lines))
    other = tmp_path / "g.libfm"
    other.write_text("-1 0:1 957:1 5039:1 5046:1 5053:1 5055:1 5058:1 5060:1 5069:1 5147:1\n")
    offsets = accuracy_data.frappe_offsets([src, other])
    assert offsets == [0, 957, 5039, 5046, 5053, 5055, 5058, 5060, 5069, 5147]
    dst = tmp_path / "f.csv"
    accuracy_data.libfm_to_csv(src, dst, offsets)
    assert dst.read_text().splitlines() == [
        "label,user,item,daytime,weekday,isweekend,homework,cost,weather,country,city",
        "1,266,287,3,3,1,0,0,2,5,2",
        "0,138,339,2,6,0,0,0,1,16,54",
    ]
    with pytest.raises(ValueError, match="line 1"):
        (tmp_path / "bad.libfm").write_text("1 3:1 4:1\n")
        accuracy_data.libfm_to_csv(tmp_path / "bad.libfm", dst, offsets)


def test_defaults_study_table_compares_each_variant_with_the_defaults() -> None:
    from defaults_study import summary_table

    def row(variant: str, seed: int, auc: float, batch: int = 256) -> dict:
        return {
            "dataset": "d",
            "variant": variant,
            "seed": seed,
            "ok": True,
            "test_auc": auc,
            "test_logloss": 0.5,
            "epochs": 4,
            "batch_size": batch,
            "resolved": {"rows_per_table_row": 52.4},
        }

    rows = [
        row("defaults", 1, 0.70),
        row("defaults", 2, 0.72),
        row("batch_norm on", 1, 0.68),
        row("batch_norm on", 2, 0.68),
        # run while the defaults resolved another batch: set against that batch's own row
        row("batch_size 2048", 1, 0.66, 2048),
        row("dropout 0", 1, 0.67, 2048),
    ]
    rows.append(row("batch_norm on", 3, 0.99) | {"ok": False})  # a failed run is left out
    lines = summary_table(rows).splitlines()
    assert lines[2].startswith("| d | 52 | defaults | 256 | 2 | 0.7100 ± 0.0141 |  |")
    assert lines[3].startswith("| d | 52 | batch_norm on | 256 | 2 | 0.6800 ± 0.0000 | -0.0300 |")
    assert lines[4].startswith("| d | 52 | batch_size 2048 | 2048 | 1 | 0.6600 | -0.0500 | 0.5000 |")  # one run: no sd
    assert lines[5].startswith("| d | 52 | dropout 0 | 2048 | 1 | 0.6700 | +0.0100 |")


def test_results_of_separate_runs_merge_into_one_page() -> None:
    """--render A.json B.json C.json: the data sets of all; one in several takes each library's
    (and deepfm variant's) runs from the last file that ran it (deepfm and the peers run apart);
    the commands and the deepfm commits kept; data with another fingerprint refused."""
    from accuracy import merge_results

    def report(commit: str, command: str, runs: dict[tuple[str, str], float]) -> dict:
        return {
            "date": "2026-12-0" + commit[-1],
            "command": command,
            "complete": True,
            "environment": {"deepfm_commit": commit},
            "datasets": [{"name": n, "fingerprint": "f" + n} for n in dict.fromkeys(n for n, _ in runs)],
            "runs": [{"dataset": n, "library": lib, "test_auc": auc} for (n, lib), auc in runs.items()],
        }

    a = report("aaa1", "accuracy.py --datasets x,y", {("x", "deepfm"): 0.7, ("y", "deepfm"): 0.6, ("y", "p"): 0.5})
    b = report("bbb2", "accuracy.py --datasets y,z", {("y", "deepfm"): 0.65, ("z", "deepfm"): 0.8})
    c = report("ccc3", "accuracy.py --libs p --datasets z", {("z", "p"): 0.75})
    merged = merge_results([a, b, c])
    assert [d["name"] for d in merged["datasets"]] == ["x", "y", "z"]
    assert sorted((r["dataset"], r["library"], r["test_auc"]) for r in merged["runs"]) == [
        ("x", "deepfm", 0.7),
        ("y", "deepfm", 0.65),  # B ran deepfm on y again: A's run gives way
        ("y", "p", 0.5),  # B did not run the peer: A's run stays
        ("z", "deepfm", 0.8),
        ("z", "p", 0.75),
    ]
    assert merged["command"].splitlines() == [a["command"], b["command"], c["command"]]
    assert merged["date"] == "2026-12-03"
    assert merged["environment"]["deepfm_commit"] == "aaa1 (x), bbb2 (y), bbb2 (z)"  # C ran no deepfm
    assert merge_results([a]) == a and len(a["runs"]) == 3
    # --variants fm: one of deepfm's variants run again replaces that variant's runs only
    variants = report("eee5", "accuracy.py --datasets x", {("x", "deepfm"): 0.7})
    variants["runs"] = [
        {"dataset": "x", "library": "deepfm", "variant": v, "test_auc": 0.7} for v in ("defaults", "fm")
    ]
    again = report("fff6", "accuracy.py --datasets x --variants fm", {("x", "deepfm"): 0.72})
    again["runs"][0]["variant"] = "fm"
    both = merge_results([variants, again])
    assert sorted((r["variant"], r["test_auc"]) for r in both["runs"]) == [("defaults", 0.7), ("fm", 0.72)]
    assert both["environment"]["deepfm_commit"] == "eee5, fff6 (x)"
    other_data = report("ddd4", "accuracy.py --datasets y", {("y", "deepfm"): 0.9})
    other_data["datasets"][0]["fingerprint"] = "another"
    with pytest.raises(SystemExit, match="y has other data"):
        merge_results([a, other_data])


def test_the_page_reports_the_defaults_speed_from_the_newest_speed_run_that_timed_them(tmp_path: Path) -> None:
    import json

    from accuracy import defaults_speed
    from accuracy_report import speed_section

    def speed(name: str, libs: list[str], mine: float) -> None:
        medians = {
            lib: {"runs": 3, "train_samples_per_s": mine if lib.startswith("deepfm") else 20_000.0} for lib in libs
        }
        runs = [{"library": "deepfm-defaults", "resolved": {"batch_size": 4096, "batch_norm": True}}]
        report = {"libraries": libs, "medians": medians, "runs": runs, "rows": 1_000_000, "epochs": 1}
        report |= {"environment": {"cpu": "a CPU", "cores": 2}, "command": "python benchmarks/speed.py", "date": "d"}
        (tmp_path / name).write_text(json.dumps(report))

    assert defaults_speed(tmp_path) is None
    speed("speed-2026-12-01.json", ["deepfm", "deepfm-defaults", "torchfm", "deepctr"], 40_000.0)
    speed("speed-2026-12-05.json", ["deepfm", "torchfm"], 50_000.0)  # newer, but no defaults row
    speed("speed-2026-12-06.json", ["deepfm-defaults", "torchfm"], 50_000.0)
    failed = json.loads((tmp_path / "speed-2026-12-06.json").read_text())
    failed["medians"]["deepfm-defaults"] = {"runs": 0, "train_samples_per_s": None}  # every defaults run failed
    (tmp_path / "speed-2026-12-06.json").write_text(json.dumps(failed))
    assert defaults_speed(tmp_path) == tmp_path / "speed-2026-12-01.json"
    text = speed_section(defaults_speed(tmp_path))
    assert "trains 40,000 samples/s (median of 3 runs, 1,000,000 rows" in text
    assert "2.00× the fastest peer run beside it (pytorch-fm, 20,000 samples/s" in text
    assert "No speed.py run" in speed_section(None)


def test_defaults_study_keeps_each_epochs_curve() -> None:
    from benchlib import epoch_curve

    history = [
        {"epoch": 1, "lr": 1e-3, "train_auc": 0.76, "valid_auc": 0.80, "seconds": 9.0},
        {"epoch": 2, "lr": 1e-4, "train_auc": 0.84, "valid_auc": 0.79, "seconds": 9.0},
    ]
    assert epoch_curve({"history": history}) == [
        {"epoch": 1, "lr": 1e-3, "train_auc": 0.76, "valid_auc": 0.80},
        {"epoch": 2, "lr": 1e-4, "train_auc": 0.84, "valid_auc": 0.79},
    ]
    assert epoch_curve({}) == []  # metrics written before history existed


def test_defaults_study_curve_table_marks_each_new_learning_rate() -> None:
    from defaults_study import curve_table

    curve = [
        {"epoch": 1, "lr": 1e-3, "valid_auc": 0.80},
        {"epoch": 2, "lr": 1e-3, "valid_auc": 0.79},
        {"epoch": 3, "lr": 1e-4, "valid_auc": 0.81},
    ]
    run = {"dataset": "d", "variant": "defaults", "seed": 1, "ok": True, "test_auc": 0.805, "best_epoch": 3}
    lines = curve_table([run | {"curve": curve}, run | {"seed": 2}]).splitlines()
    assert lines[2] == "| d | defaults | 1 | 0.8000, 0.7900, [lr 1e-04] 0.8100 | 3 | 0.8050 |"
    assert len(lines) == 3  # the run without a curve has no line
    assert curve_table([run]) == ""  # no curves at all: no table
    # No validation part: no valid AUC to show; a point without lr keeps the last rate.
    blind = [{"epoch": 1, "lr": 1e-3}, {"epoch": 2}, {"epoch": 3, "lr": 1e-4, "valid_auc": 0.7}]
    assert (
        curve_table([run | {"curve": blind}])
        .splitlines()[2]
        .startswith("| d | defaults | 1 | -, -, [lr 1e-04] 0.7000 |")
    )
