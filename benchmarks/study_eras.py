"""Study runs made under earlier defaults, labelled so that each is set against the defaults
of its own time rather than today's (benchmarks/accuracy_report.py's defaults section)."""

from __future__ import annotations

# The min_count of runs that do not record one: the peers' encoding (PEER_SETTINGS), and
# deepfm's default before min_count "auto".
MIN_COUNT_UNRECORDED = 2
# The defaults before fresh embedding tables and lr_decay 0.03 (CHANGELOG): no fresh tables,
# lr_decay 0.1.
BEFORE_FRESH = "defaults before fresh tables"


def before_auto(run: dict) -> dict:
    """A study's "defaults" run from before min_count "auto" (its resolved block names no
    min_count), on data where "auto" now resolves to another number: a "min_count 2" run."""
    from deepfm.data.schema import auto_min_count

    old = run["variant"] == "defaults" and "min_count" not in run.get("resolved", {})
    if old and auto_min_count(run.get("train_rows", 0)) != MIN_COUNT_UNRECORDED:
        return run | {"variant": f"min_count {MIN_COUNT_UNRECORDED}"}
    return run


def fresh(run: dict) -> bool:
    """Whether a run drew fresh embedding tables (train.reset_embeddings resolved on)."""
    return run.get("resolved", {}).get("reset_embeddings") is True


def by_era(rows: list[dict], current: list[dict], superseded: list[dict]) -> list[dict]:
    """The study's ``rows`` with this benchmark's defaults runs (``current``) as "defaults".

    Where those drew fresh tables, the older defaults runs of the data set (the study's own
    and the benchmark's ``superseded`` ones, the latest of each seed) become BEFORE_FRESH, set
    against today's, and each study run without fresh tables is set against them (its
    ``baseline``). "reset_embeddings on", measured at lr_decay 0.1, is named so."""
    rows = [
        r | {"variant": "reset_embeddings on lr_decay 0.1"} if r["variant"] == "reset_embeddings on" else r
        for r in rows
    ]
    replaced = {r["dataset"] for r in current}
    new_era = {r["dataset"] for r in current if fresh(r)}
    older: dict[tuple[str, int], dict] = {}
    for r in [*rows, *(before_auto(s) for s in superseded)]:
        if r["variant"] == "defaults" and r["dataset"] in new_era and not fresh(r):
            older[(r["dataset"], r["seed"])] = r | {"variant": BEFORE_FRESH}
    out = [*current, *older.values()]
    for r in rows:
        if r["variant"] == "defaults" and r["dataset"] in replaced:
            continue
        out.append(r | {"baseline": BEFORE_FRESH} if r["dataset"] in new_era and not fresh(r) else r)
    return out
