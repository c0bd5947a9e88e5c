"""What the analysis writes: the explanation's folder (explain.json and its figures) and one
self-contained HTML report of a trained model: learning curves, calibration (reliability
diagram with counts), ROC and the field-interaction explanation. Images are embedded as
base64 PNG and the style is inline, so the file can be mailed or archived on its own.

Calibration and ROC need labelled rows. They come from the rows given (``data``) when those
have labels, otherwise from what training recorded for its test part (its valid part when it
had none) in ``metrics.json``; the report says which. The explanation needs rows too: without
``data`` the report leaves it out and says how to add it.
"""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path
from typing import Any

from deepfm.analysis import plots
from deepfm.analysis.explain import Combination, Explanation, explain
from deepfm.bundle import Bundle
from deepfm.data.encoded import EncodedDataset
from deepfm.data.source import ReadOptions
from deepfm.util.metrics import calibration, roc_curve, summary

STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 1.5em auto; max-width: 1340px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
.meta { color: #666; } .note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5em 1em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } td.text { text-align: left; font-family: ui-monospace, monospace; }
figure { margin: 1em 0; display: table; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; display: table-caption; caption-side: bottom; } .cols { display: flex; gap: 2em; flex-wrap: wrap; align-items: flex-start; }
"""


def build_report(
    bundle: Bundle,
    data: str | Path | EncodedDataset | None = None,
    rows: int | None = None,
    pair: tuple[str, str] | None = None,
    options: ReadOptions | None = None,
    min_count: int = 5,
) -> str:
    """The report as an HTML string; see the module docstring for where each part comes from."""
    expl = (
        explain(bundle, data, rows=rows, pair=pair, options=options, min_count=min_count) if data is not None else None
    )
    m = bundle.metrics
    evaluation = _evaluation(m, expl)
    name = html.escape(str(bundle.path or "model"))
    body = [
        f"<h1>deepfm report: {name}</h1>",
        f"<p class='meta'>{html.escape(bundle.config.model.kind)} model, {len(bundle.config.schema.fields)} fields, "
        f"embedding size {bundle.config.model.embedding_dim}; written {time.strftime('%Y-%m-%d %H:%M')}</p>",
        _summary(m),
        "<h2>Learning curves</h2>",
        *_learning_curves(m),
        "<h2>Calibration and ROC</h2>",
        *_calibration_and_roc(evaluation),
    ]
    if m.get("calibration_fit"):
        body.extend(_calibration_fit(m["calibration_fit"]))
    drift_file = Path(bundle.path) / "drift.json" if bundle.path is not None else None
    if drift_file is not None and drift_file.is_file():
        body.extend(_drift(json.loads(drift_file.read_text())))
    body.append("<h2>What the model learned</h2>")
    if expl is None:
        body.append(
            "<p class='note'>The explanation needs rows to explain: <code>deepfm report MODEL --data rows.tsv</code>.</p>"
        )
    else:
        body.extend(_explanation(expl))
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>deepfm report: {name}</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _learning_curves(m: dict[str, Any]) -> list[str]:
    """The learning curves' figure and the epochs' table, from metrics.json's history."""
    body: list[str] = []
    if m.get("history"):
        body.append(
            _figure(
                "learning_curves",
                plots.learning_curves(m),
                "Log loss and AUC by epoch. Thin line: the training batches since the point before (about 20 points an epoch); markers: each epoch's training and validation figures; dashed: the epoch whose weights were kept.",
            )
        )
        body.append(_epochs_table(m["history"]))
    else:
        body.append("<p class='note'>This model folder has no training history.</p>")
    return body


def _calibration_and_roc(evaluation: dict[str, Any] | None) -> list[str]:
    """The reliability diagram, the ROC curve and the calibration bins, when rows were scored."""
    body: list[str] = []
    if evaluation is None:
        body.append(
            "<p class='note'>No labelled rows: give labelled rows with <code>--data</code> to draw the reliability diagram and the ROC curve.</p>"
        )
    else:
        body.append(
            f"<p>On {html.escape(evaluation['source'])}: {evaluation['rows']:,} rows, AUC {_f(evaluation.get('auc'))}, log loss {_f(evaluation.get('logloss'))}.</p>"
        )
        cal = evaluation["calibration"]
        body.append("<div class='cols'>")
        body.append(
            _figure(
                "reliability",
                plots.reliability(cal),
                "Observed positive rate against mean prediction in equal-count bins (n: rows in the bin), over a histogram of all predictions. On the dashed line the model is calibrated.",
            )
        )
        body.append(
            "<div>"
            + _figure(
                "roc",
                plots.roc(evaluation["roc"], evaluation.get("auc")),
                "True against false positive rate as the threshold falls.",
            )
        )
        body.append(
            _table(
                ["bin", "predictions from", "to", "rows", "mean prediction", "positive rate"],
                [
                    [
                        k + 1,
                        _f(b["lo"]),
                        _f(b["hi"]),
                        f"{b['count']:,}",
                        _f(b["mean_prediction"]),
                        _f(b["positive_rate"]),
                    ]
                    for k, b in enumerate(cal["bins"])
                ],
            )
            + "</div></div>"
        )
    return body


def write_report(bundle: Bundle, out: str | Path, **kwargs: Any) -> Path:
    """Write :func:`build_report` to ``out`` (an .html file). Returns the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_report(bundle, **kwargs), encoding="utf-8")
    return out


def write_explanation(explanation: Explanation, out: str | Path, top_k: int = 10) -> list[Path]:
    """``explain.json`` and the figures (pairs.png, decomposition.png, drilldown.png where
    the model has FM pairs) in ``out``. Returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "explain.json"]
    written[0].write_text(json.dumps(explanation.to_json(top_k), indent=1))
    for name, png in plots.explanation_figures(explanation).items():
        (out / f"{name}.png").write_bytes(png)
        written.append(out / f"{name}.png")
    return written


# ---------------------------------------------------------------- sections
def _evaluation(m: dict[str, Any], expl: Explanation | None) -> dict[str, Any] | None:
    """Calibration, ROC and summary from the explained rows when labelled, else as recorded."""
    if expl is not None and expl.labels is not None:
        return {
            "source": expl.source,
            **summary(expl.labels, expl.probabilities),
            "calibration": calibration(expl.labels, expl.probabilities),
            "roc": roc_curve(expl.labels, expl.probabilities),
        }
    recorded = m.get("evaluation")
    if not recorded:
        return None
    part = recorded["part"]
    return {
        "source": f"the {part} part recorded at training",
        "rows": m.get(f"{part}_rows", 0),
        "auc": m.get(f"{part}_auc"),
        "logloss": m.get(f"{part}_logloss"),
        "calibration": recorded["calibration"],
        "roc": recorded["roc"],
    }


def _drift(d: dict[str, Any]) -> list[str]:
    """The last ``deepfm drift`` check (drift.json in the model folder)."""
    rows = sorted(d["fields"].items(), key=lambda kv: -kv[1]["psi"])
    out = [
        "<h2>Drift</h2>",
        f"<p><code>deepfm drift</code> on {d['rows']:,} rows of <code>{html.escape(d['data'])}</code> against the "
        f"{d['training_rows']:,} rows of the model's {html.escape(d.get('reference_part', 'training'))} part. PSI over the model's own buckets (top values, other, OOV, missing): "
        "below 0.1 stable, 0.1-0.25 moderate, above 0.25 a shift worth acting on.</p>",
    ]
    if d.get("labels"):
        lab = d["labels"]
        out.append(
            f"<p>Mean prediction {_f(d['mean_prediction'])} against an observed click rate of {_f(lab['ctr'])}; AUC {_f(lab['auc'])}, log loss {_f(lab['logloss'])}.</p>"
        )
    if d.get("failed"):
        out.append("<p class='note'>Thresholds crossed: " + "; ".join(html.escape(x) for x in d["failed"]) + "</p>")
    out.append(
        _table(
            ["field", "PSI", "OOV train", "OOV new", "missing train", "missing new"],
            [
                [_Text(name), _f(f["psi"]), _f(f["oov_train"]), _f(f["oov"]), _f(f["missing_train"]), _f(f["missing"])]
                for name, f in rows
            ],
        )
    )
    return out


def _calibration_fit(fit: dict[str, Any]) -> list[str]:
    """Reliability before and after ``deepfm calibrate``, on the rows it was fitted on."""
    before, after = fit["before"], fit["after"]
    out = [
        "<h2>Fitted calibration</h2>",
        f"<p>{html.escape(fit['method'])} calibration fitted by <code>deepfm calibrate</code> on {before['rows']:,} rows of "
        f"<code>{html.escape(fit['data'])}</code>"
        + (
            f" (negative downsampling at {fit['neg_sample_rate']:g} corrected first)"
            if fit.get("neg_sample_rate", 1.0) != 1.0
            else ""
        )
        + ". Every prediction applies it. Figures on those rows; a held-out file given to <code>deepfm report --data</code> "
        "shows the calibrated model above.</p>",
        _table(
            ["", "log loss", "ECE", "mean prediction", "positive rate"],
            [
                [name, _f(r["logloss"]), _f(r["ece"]), _f(r["mean_prediction"]), _f(r["ctr"])]
                for name, r in (("before", before), ("after", after))
            ],
        ),
        "<div class='cols'>",
        _figure(
            "reliability_before",
            plots.reliability(before["calibration"]),
            "Before: the model's probabilities (downsampling corrected).",
        ),
        _figure("reliability_after", plots.reliability(after["calibration"]), "After: through the fitted calibration."),
        "</div>",
    ]
    return out


def _summary(m: dict[str, Any]) -> str:
    rows = []
    for key, label in (
        ("auc", "AUC"),
        ("logloss", "log loss"),
        ("rows", "rows"),
        ("ctr", "positive rate"),
        ("mean_prediction", "mean prediction"),
        ("ece", "ECE"),
    ):
        cells = [m.get(f"{part}_{key}") for part in ("valid", "test")]
        if any(c is not None for c in cells):
            rows.append([label, *(_f(c) for c in cells)])
    facts = f"<p>Trained on {m.get('train_rows', 0):,} rows for {m.get('epochs', '?')} epoch(s), weights of epoch {m.get('best_epoch', '?')} kept.</p>"
    return facts + (_table(["", "valid", "test"], rows) if rows else "")


def _epochs_table(history: list[dict[str, Any]]) -> str:
    keys = ("epoch", "train_loss", "train_auc", "valid_logloss", "valid_auc", "lr", "seconds")
    return _table(list(keys), [[_f(h.get(k)) if k != "epoch" else h["epoch"] for k in keys] for h in history])


def _explanation(expl: Explanation) -> list[str]:
    out = [
        f"<p>Over {expl.rows:,} rows of {html.escape(expl.source)}. For fields i and j, FM adds &lt;v<sub>i</sub>, v<sub>j</sub>&gt; "
        "to the logit (v<sub>i</sub> carries the field's value), so each pair's part of the logit is exact.</p>",
        "<h3>How the logit splits</h3><div class='cols'>",
        _table(
            ["part", "mean", "mean |part|", "std over rows"],
            [[_Text(k), _f(p.mean), _f(p.mean_abs), _f(p.std)] for k, p in expl.parts.items()],
        ),
    ]
    figures = plots.explanation_figures(expl)
    out.append(
        _figure(
            "decomposition",
            figures["decomposition"],
            "Left: each additive part of the logit, its mean size and spread over the rows. Right: the fields with the largest first-order weights.",
        )
        + "</div>"
    )
    if "pairs" not in figures:
        out.append(f"<p class='note'>A {html.escape(expl.kind)} model has no FM pairwise term: no pair to show.</p>")
        return out
    out.append("<h3>Field pairs</h3><div class='cols'>")
    out.append(
        _figure(
            "pairs",
            figures["pairs"],
            "Mean |&lt;v<sub>i</sub>, v<sub>j</sub>&gt;| of every field pair: how far the pair moves the logit, either way, on an average row.",
        )
    )
    out.append(
        _table(
            ["rank", "pair", "mean |contribution|", "mean contribution"],
            [
                [k + 1, _Text(" × ".join(t["fields"])), _f(t["mean_abs"]), _f(t["mean"])]
                for k, t in enumerate(expl.top_pairs(15))
            ],
        )
        + "</div>"
    )
    d = expl.drilldown
    assert d is not None
    a, b = (html.escape(f) for f in d.fields)
    out.append(f"<h3>Drill-down: {a} × {b}</h3>")
    out.append(
        _figure(
            "drilldown",
            figures["drilldown"],
            f"Mean contribution of the pair for the most frequent values of {a} (rows) and {b} (columns); numbers are rows. Red raises the probability, blue lowers it.",
        )
    )
    out.append(
        f"<p>{d.combinations:,} value combinations seen; those with at least {d.min_count} rows, by their mean effect on the probability "
        "(the probability minus what it would be without this pair's term):</p>"
    )
    out.append("<div class='cols'>")
    for title, combos in (("pushes the probability up most", d.up), ("pushes it down most", d.down)):
        out.append(f"<div><h4>{title}</h4>" + _combo_table(d.fields, combos) + "</div>")
    out.append("</div>")
    return out


def _combo_table(fields: tuple[str, str], combos: list[Combination]) -> str:
    if not combos:
        return "<p class='note'>none with enough rows</p>"
    return _table(
        [fields[0], fields[1], "rows", "mean contribution", "mean effect on p"],
        [
            [_Text(c.values[0]), _Text(c.values[1]), f"{c.count:,}", _f(c.mean_contribution), f"{c.mean_effect:+.4f}"]
            for c in combos
        ],
    )


# ---------------------------------------------------------------- HTML pieces
def _figure(name: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f"<figure data-figure='{name}'><img alt='{name}' src='data:image/png;base64,{data}'><figcaption>{caption}</figcaption></figure>"


class _Text(str):
    """A table cell of text (names, raw values): left-aligned, monospace."""


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    """An HTML table; every cell is escaped, numbers right-aligned, _Text cells left."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = []
    for row in rows:
        cells = [f"<td{' class=text' if isinstance(c, _Text) else ''}>{html.escape(str(c))}</td>" for c in row]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _f(x: Any) -> str:
    """A number for a table: 4 significant digits; '–' for missing."""
    if x is None:
        return "–"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.3e}"
