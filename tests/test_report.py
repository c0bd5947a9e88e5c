"""`deepfm report` and `deepfm train --report`: one self-contained HTML with every figure,
the learning curve recorded within epochs, and (when Chromium is installed) a real render."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from deepfm.cli import main

from helpers import PNG, SIZES, write_planted

pytest.importorskip("matplotlib")

FAST = ["--threads", "1", "--quiet"]
ALL_FIGURES = {"learning_curves", "reliability", "roc", "decomposition", "pairs", "drilldown"}


def figures(html: str) -> dict[str, bytes]:
    """name -> PNG bytes of every embedded figure."""
    found = re.findall(
        r"<figure data-figure='(\w+)'><img alt='\w+' src='data:image/png;base64,([A-Za-z0-9+/=]+)'>", html
    )
    return {name: base64.b64decode(data) for name, data in found}


def check_figures(html: str, expected: set[str]) -> None:
    from PIL import Image

    found = figures(html)
    assert set(found) == expected, set(found) ^ expected
    for name, png in found.items():
        assert png.startswith(PNG), name
        width, height = Image.open(io.BytesIO(png)).size
        assert width > 300 and height > 300, (name, width, height)
    # self-contained: no scripts, no links, nothing fetched
    assert not re.search(r"<script|<link|src=['\"]http|url\(", html)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """`deepfm train --report` on the planted data: (folder, model folder, unlabelled rows)."""
    tmp = tmp_path_factory.mktemp("report")
    data = write_planted(tmp / "train.tsv", 6_000, seed=11)
    fresh = write_planted(tmp / "fresh.tsv", 800, seed=12)
    unlabelled = tmp / "unlabelled.tsv"
    unlabelled.write_text("\n".join("\t".join(line.split("\t")[1:]) for line in fresh.read_text().splitlines()) + "\n")
    schema = {"label": "label", "fields": [{"name": f, "min_count": 1} for f in SIZES]}
    config = tmp / "c.yaml"
    config.write_text(json.dumps({**schema, "model": {"embedding_dim": 4, "hidden": [16], "dropout": 0.0}}))
    out = tmp / "m"
    argv = ["train", "--data", str(data), "--config", str(config), "--split", "0.8,0.1,0.1", "--out", str(out)]
    assert main([*argv, "--epochs", "3", "--lr", "0.01", "--embedding-lr", "0.01", "--report", *FAST]) == 0
    return tmp, out, fresh, unlabelled


def test_train_records_the_learning_curve_within_epochs(trained) -> None:
    _, out, _, _ = trained
    m = json.loads((out / "metrics.json").read_text())
    curve = m["train_curve"]
    for epoch, row in enumerate(m["history"], start=1):
        points = [p for p in curve if epoch - 1 < p["epoch"] <= epoch]
        assert 15 <= len(points) <= 40, len(points)  # about 20 per epoch
        assert points[-1]["epoch"] == epoch and sum(p["rows"] for p in points) == m["train_rows"]
        # the points are the epoch's batches: their row-weighted loss is the epoch's loss
        assert sum(p["loss"] * p["rows"] for p in points) / m["train_rows"] == pytest.approx(
            row["train_loss"], rel=1e-9
        )
        assert all(0 <= p["auc"] <= 1 for p in points)
    assert np.all(np.diff([p["epoch"] for p in curve]) > 0)
    # the test part's calibration and ROC are kept for `deepfm report` without data
    ev = m["evaluation"]
    assert ev["part"] == "test" and sum(b["count"] for b in ev["calibration"]["bins"]) == m["test_rows"]
    assert ev["roc"]["fpr"][0] == 0 and ev["roc"]["tpr"][-1] == 1


def test_train_report_has_every_figure(trained) -> None:
    _, out, _, _ = trained
    html = (out / "report.html").read_text()
    check_figures(html, ALL_FIGURES)
    assert "the test part" in html and "app_category × hour" in html  # the planted pair leads the table


def test_report_on_labelled_rows(trained, capsys) -> None:
    tmp, out, fresh, _ = trained
    target = tmp / "fresh.html"
    assert main(["report", str(out), "--data", str(fresh), "--out", str(target), "--pair", "age,site", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out) == {"out": str(target)}
    html = target.read_text()
    check_figures(html, ALL_FIGURES)
    assert f"On {fresh}: 800 rows" in html and "Drill-down: age × site" in html


def test_report_without_data_uses_what_training_recorded(trained) -> None:
    _, out, _, unlabelled = trained
    assert main(["report", str(out), "--out", str(out / "plain.html"), "--quiet"]) == 0
    html = (out / "plain.html").read_text()
    check_figures(html, {"learning_curves", "reliability", "roc"})
    assert "the test part recorded at training" in html and "--data rows.tsv" in html
    # unlabelled rows: explained, while calibration falls back to the recorded test part
    assert main(["report", str(out), "--data", str(unlabelled), "--out", str(out / "u.html"), "--quiet"]) == 0
    html = (out / "u.html").read_text()
    check_figures(html, ALL_FIGURES)
    assert "the test part recorded at training" in html and f"Over 800 rows of {unlabelled}" in html


def test_report_renders_in_chromium(trained, tmp_path: Path) -> None:
    """What a person sees: headless Chromium opens report.html from disk with nothing else,
    logs no console error, decodes every image, and draws each figure, with ink, under the
    section it belongs to."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's package when it runs as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the [test] extra")
    from PIL import Image

    _, out, _, _ = trained
    errors: list[str] = []
    # The flags keep Chromium off the network it has no use for here (this page needs none).
    flags = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=flags)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on(
                "console",
                lambda m: errors.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None,
            )
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url[:80]}"))
            page.goto((out / "report.html").as_uri(), wait_until="load")
            decoded = page.evaluate("[...document.images].map(i => [i.alt, i.complete && i.naturalWidth > 0])")
            # Positions in the page (not the viewport, which moves as screenshots scroll).
            top = "e => e.getBoundingClientRect().top + window.scrollY"
            sections = [(h.inner_text(), h.evaluate(top)) for h in page.locator("h2").all()]
            figures = {}
            for img in page.locator("figure img").all():
                box = img.bounding_box()
                assert box is not None and box["width"] > 100 and box["height"] > 100, img.get_attribute("alt")
                figures[img.get_attribute("alt")] = (img.evaluate(top), img.screenshot())
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)  # kept for a person to look at
        finally:
            browser.close()
    assert errors == []
    assert sorted(alt for alt, _ in decoded) == sorted(ALL_FIGURES) and all(ok for _, ok in decoded), decoded
    names = [name for name, _ in sections]
    assert names == ["Learning curves", "Calibration and ROC", "What the model learned"], names
    under = {"learning_curves": 0, "reliability": 1, "roc": 1, "decomposition": 2, "pairs": 2, "drilldown": 2}
    for alt, (y, png) in figures.items():
        section = max(i for i, (_, top) in enumerate(sections) if top < y)
        assert section == under[alt], f"figure {alt!r} is drawn under {names[section]!r}"
        pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
        assert (pixels < 128).mean() > 0.01 and pixels.std() > 20, f"figure {alt!r} is drawn blank"


def test_report_of_a_model_trained_before_the_curves_were_recorded(trained) -> None:
    """A bundle whose metrics lack the within-epoch curve and the recorded evaluation still
    gets per-epoch curves, and says what is missing instead of failing."""
    from deepfm.analysis.report import build_report
    from deepfm.bundle import Bundle

    _, out, _, _ = trained
    bundle = Bundle.load(out)
    bundle.metrics = {k: v for k, v in bundle.metrics.items() if k not in ("train_curve", "evaluation")}
    html = build_report(bundle)
    check_figures(html, {"learning_curves"})
    assert "No labelled rows" in html and "--data rows.tsv" in html
