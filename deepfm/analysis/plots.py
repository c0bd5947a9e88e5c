"""Figures as PNG bytes (matplotlib, Agg backend: no display needed).

matplotlib is an optional extra (``pip install 'deepfm[report]'``); without it every function
here raises a ConfigError that says so.
"""

from __future__ import annotations

import functools
import io
from typing import Any

import numpy as np

from deepfm.analysis.explain import Explanation
from deepfm.errors import ConfigError

DPI = 100
LABEL_CHARS = 22  # longer value labels are cut in the drill-down grid


def require_matplotlib() -> None:
    """Raise the ConfigError that names the extra when matplotlib is not installed."""
    _pyplot()


@functools.lru_cache(maxsize=1)
def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:  # an optional extra
        raise ConfigError("figures and reports need matplotlib: pip install 'deepfm[report]'") from exc
    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


# ---------------------------------------------------------------- explanation
def explanation_figures(expl: Explanation) -> dict[str, bytes]:
    """{"decomposition", "pairs", "drilldown"}: the last two only for kinds with FM pairs."""
    figures = {"decomposition": decomposition(expl)}
    if expl.pair_mean_abs is not None:
        figures["pairs"] = pair_heatmap(expl)
    if expl.drilldown is not None:
        figures["drilldown"] = drilldown_heatmap(expl)
    return figures


def pair_heatmap(expl: Explanation) -> bytes:
    """F x F heatmap of mean |<v_i, v_j>|, the strongest pairs outlined."""
    plt = _pyplot()
    assert expl.pair_mean_abs is not None
    m = expl.pair_mean_abs.copy()
    np.fill_diagonal(m, np.nan)  # a field does not pair with itself
    f = len(expl.fields)
    size = min(3.5 + 0.16 * f, 7.5)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(m, cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="mean |<v_i, v_j>| (logit)")
    fontsize = 9 if f <= 15 else 7 if f <= 30 else 5.5
    ax.set_xticks(range(f), expl.fields, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(f), expl.fields, fontsize=fontsize)
    names = expl.fields
    for rank, top in enumerate(expl.top_pairs(3)):
        i, j = names.index(top["fields"][0]), names.index(top["fields"][1])
        for r, c in ((i, j), (j, i)):
            ax.add_patch(
                plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.2 - 0.5 * rank)
            )
    ax.set_title(f"Field-pair interaction strength over {expl.rows:,} rows\n(red: the three strongest pairs)")
    return _png(fig)


def decomposition(expl: Explanation) -> bytes:
    """The logit's parts (mean |part| and standard deviation) and the fields with the largest
    first-order weights."""
    plt = _pyplot()
    panels = 1 + (expl.first_order is not None)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.6), squeeze=False)
    axes = list(axes[0])
    ax = axes.pop(0)
    names = list(expl.parts)
    y = np.arange(len(names))
    ax.barh(y - 0.2, [expl.parts[n].mean_abs for n in names], height=0.4, label="mean |part|", color="#4c72b0")
    ax.barh(y + 0.2, [expl.parts[n].std for n in names], height=0.4, label="std over rows", color="#dd8452")
    for k, n in enumerate(names):
        ax.annotate(
            f"mean {expl.parts[n].mean:+.3f}",
            (expl.parts[n].mean_abs, k - 0.2),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("logit units")
    ax.set_title("How the logit splits")
    ax.legend(fontsize=8, loc="upper right")
    if expl.first_order is not None:
        ax = axes.pop(0)
        order = np.argsort(-expl.first_order, kind="stable")[:15]
        ax.barh(range(len(order)), expl.first_order[order], color="#8172b3")
        ax.set_yticks(range(len(order)), [expl.fields[i] for i in order], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("mean |w_i| (logit)")
        ax.set_title("Strongest first-order fields")
    fig.tight_layout()
    return _png(fig)


def drilldown_heatmap(expl: Explanation) -> bytes:
    """Mean contribution of the drilled-down pair over its most frequent values, counts in
    the cells; red pushes the probability up, blue down."""
    plt = _pyplot()
    d = expl.drilldown
    assert d is not None
    grid = d.grid_contribution
    r, c = grid.shape
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 + 0.6 * c) + 1.5, max(3.2, 1.2 + 0.36 * r)))
    finite = grid[np.isfinite(grid)]
    vmax = float(np.abs(finite).max()) if finite.size else 1.0
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#dddddd")  # grey: no row has both values
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=-vmax or -1, vmax=vmax or 1, aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="mean <v_i, v_j> (logit)")
    ax.set_xticks(range(c), [_cut(s) for s in d.grid_columns], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(r), [_cut(s) for s in d.grid_rows], fontsize=8)
    ax.set_xlabel(d.fields[1])
    ax.set_ylabel(d.fields[0])
    for i in range(r):
        for j in range(c):
            if d.grid_count[i, j]:
                dark = abs(grid[i, j]) > 0.6 * vmax
                ax.text(
                    j,
                    i,
                    str(d.grid_count[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                )
    ax.set_title(f"{d.fields[0]} x {d.fields[1]}: contribution by value (numbers: rows)")
    return _png(fig)


def _cut(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


# ---------------------------------------------------------------- training and evaluation
def learning_curves(metrics: dict[str, Any]) -> bytes:
    """Loss and AUC against epochs: train within epochs (thin line), train and valid per epoch
    (markers), the best epoch dashed."""
    plt = _pyplot()
    history = metrics.get("history") or []
    curve = metrics.get("train_curve") or []
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.0))
    epochs = [h["epoch"] for h in history]
    for ax, (within, train_key, valid_key, title) in zip(
        axes, (("loss", "train_logloss", "valid_logloss", "Log loss"), ("auc", "train_auc", "valid_auc", "AUC"))
    ):
        if curve:
            ax.plot(
                [p["epoch"] for p in curve],
                [_num(p.get(within)) for p in curve],
                color="#4c72b0",
                alpha=0.45,
                linewidth=1,
                label="train, within epochs",
            )
        ax.plot(epochs, [_num(h.get(train_key)) for h in history], "o-", color="#4c72b0", label="train, per epoch")
        if any(valid_key in h for h in history):
            ax.plot(epochs, [_num(h.get(valid_key)) for h in history], "s-", color="#c44e52", label="valid, per epoch")
        if metrics.get("best_epoch"):
            ax.axvline(
                metrics["best_epoch"],
                color="grey",
                linestyle="--",
                linewidth=1,
                label=f"best epoch ({metrics['best_epoch']})",
            )
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def reliability(cal: dict[str, Any]) -> bytes:
    """Reliability diagram (equal-count bins, rows per bin written beside each point) over a
    histogram of the predictions."""
    plt = _pyplot()
    bins = cal["bins"]
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.6, 5.8), gridspec_kw={"height_ratios": [3, 1.1]})
    pred = np.array([b["mean_prediction"] for b in bins])
    rate = np.array([b["positive_rate"] for b in bins])
    count = np.array([b["count"] for b in bins])
    err = np.sqrt(np.clip(rate * (1 - rate), 0, None) / np.maximum(count, 1))  # binomial standard error
    top = float(max(pred.max(initial=0), (rate + err).max(initial=0))) * 1.1 or 1.0
    ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    ax.errorbar(pred, rate, yerr=err, fmt="o-", color="#4c72b0", capsize=3, label="model (± 1 s.e.)")
    for x, y_, n in zip(pred, rate, count):
        ax.annotate(f"n={n:,}", (x, y_), xytext=(4, -10), textcoords="offset points", fontsize=7)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("mean predicted probability (bin)")
    ax.set_ylabel("observed positive rate")
    ax.set_title(f"Reliability: {len(bins)} equal-count bins, ECE {_num(cal.get('ece')):.4f}")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    edges = np.array(cal["histogram"]["edges"])
    counts = np.array(cal["histogram"]["counts"])
    hist.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#4c72b0", edgecolor="white")
    hist.set_yscale("log")
    hist.set_xlim(0, 1)
    hist.set_xlabel("predicted probability")
    hist.set_ylabel("rows (log)")
    fig.tight_layout()
    return _png(fig)


def roc(points: dict[str, list[float]], auc: float | None) -> bytes:
    """The ROC curve with its AUC."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="chance")
    ax.plot(points["fpr"], points["tpr"], color="#c44e52", linewidth=2, label=f"model (AUC {_num(auc):.4f})")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_title("ROC")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _png(fig)


def _num(x: Any) -> float:
    """A JSON number, NaN for null (undefined AUC is saved as null)."""
    return float("nan") if x is None else float(x)
