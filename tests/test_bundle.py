"""Bundle: train a tiny model, save, reload in a fresh process, predict bit-identically;
refuse incomplete or tampered folders; never pickle."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pytest
import torch
from safetensors.torch import load_file

from deepfm.bundle import Bundle
from deepfm.cli import main
from deepfm.errors import BundleError
from deepfm.training import train

from helpers import (
    SIMPLE_FIELDS,
    assert_identical_scores,
    assert_scores_close,
    assert_scores_differ,
    encoded_rows,
    simple_records,
    simple_schema,
    small_config,
    write_records_csv,
)

N = 3000
EXPECTED_FILES = {
    "config.json",
    "pipeline.json",
    "vocab.arrow",
    "model.safetensors",
    "metrics.json",
    "calibration.json",
    "profile.json",
    "manifest.json",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("bundle")
    records = simple_records(N, seed=11)
    data = write_records_csv(tmp / "train.csv", records)
    bundle = train(small_config(simple_schema()), data, tmp / "model", split="0.8,0.1,0.1")
    return tmp, records, bundle


def score_rows(records: list[dict]) -> list[dict]:
    return [{k: r[k] for k in SIMPLE_FIELDS} for r in records]


def test_training_learned_the_signal(trained) -> None:
    _, _, bundle = trained
    m = bundle.metrics
    assert m["test_rows"] == 300 and m["valid_rows"] == 300 and m["train_rows"] == 2400
    assert m["epochs"] == 2
    assert m["test_auc"] > 0.65, m["test_auc"]


def test_folder_contents_no_pickle(trained) -> None:
    tmp, _, _ = trained
    folder = tmp / "model"
    names = {p.name for p in folder.iterdir()}
    assert names == EXPECTED_FILES  # no .pt/.pkl, no leftover encoded data
    for p in folder.iterdir():
        head = p.read_bytes()[:16]
        assert not head.startswith(b"\x80"), p.name  # pickle protocol 2+ header
        assert not head.startswith(b"PK"), p.name  # torch.save zip archive
    for name in ("config.json", "pipeline.json", "metrics.json", "calibration.json", "manifest.json"):
        json.loads((folder / name).read_text())
    raw = (folder / "model.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    assert "embedding.weight" in header
    assert (folder / "vocab.arrow").read_bytes()[:6] == b"ARROW1"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["sha256"]) == EXPECTED_FILES - {"manifest.json"}


def test_reload_has_identical_weights(trained) -> None:
    tmp, _, bundle = trained
    loaded = Bundle.load(tmp / "model")
    saved = load_file(str(tmp / "model" / "model.safetensors"))
    live = bundle.model.state_dict()
    assert set(saved) == set(live)
    for k in saved:  # copies, no arithmetic: bit for bit
        assert torch.equal(saved[k], live[k]), k
        assert torch.equal(loaded.model.state_dict()[k], live[k]), k
    assert loaded.metrics["test_auc"] == bundle.metrics["test_auc"]


def test_fresh_process_and_cli_predictions_bit_identical(trained, tmp_path: Path) -> None:
    tmp, records, bundle = trained
    rows = score_rows(records[-300:])
    here = bundle.predict(rows)
    assert here.shape == (300,) and here.dtype == np.float64
    assert np.all((here > 0) & (here < 1))
    assert np.unique(here).size > 10

    # the same rows, loaded and scored in a fresh Python process
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    code = (
        "import json, sys\n"
        "import numpy as np\n"
        "from deepfm.bundle import Bundle\n"
        "rows = json.load(open(sys.argv[1]))\n"
        "np.save(sys.argv[3], Bundle.load(sys.argv[2]).predict(rows))\n"
    )
    # Bit for bit, on any CPU: the child scores the same 300 rows in one batch of the same
    # shape, with as many threads as this process, so the same kernels sum in the same order.
    same_threads = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "rows.json"), str(tmp / "model"), str(tmp_path / "p.npy")],
        check=True,
        capture_output=True,
        timeout=120,
        env=same_threads,
    )
    fresh = np.load(tmp_path / "p.npy")
    assert_identical_scores(fresh, here, "a fresh process, the same batch and thread count")

    # and through `deepfm predict` on a file holding the same rows
    csv = write_records_csv(tmp_path / "score.csv", records[-300:])
    out = tmp_path / "scores.csv"
    script = Path(sys.executable).parent / "deepfm"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "deepfm"]
    subprocess.run(
        [*command, "predict", str(tmp / "model"), "--data", str(csv), "--out", str(out), "--quiet"],
        check=True,
        capture_output=True,
        timeout=120,
        env=same_threads,
    )
    table = pacsv.read_csv(out)
    assert table.column_names == ["probability"]
    from_cli = table.column("probability").to_numpy()
    assert_identical_scores(from_cli, here, "the file's 300 rows are read into one batch of the same shape")
    # the in-process CLI writes the same file
    assert (
        main(["predict", str(tmp / "model"), "--data", str(csv), "--out", str(tmp_path / "again.csv"), "--quiet"]) == 0
    )
    assert (tmp_path / "again.csv").read_bytes() == out.read_bytes()

    # evaluate on the test rows agrees with what training measured on them
    result = __import__("deepfm").evaluate(Bundle.load(tmp / "model"), csv)
    assert result["rows"] == 300
    assert result["auc"] == pytest.approx(bundle.metrics["test_auc"], abs=1e-6)
    assert result["logloss"] == pytest.approx(bundle.metrics["test_logloss"], abs=1e-6)


def test_predict_missing_field_and_unseen_value(trained) -> None:
    tmp, records, _ = trained
    bundle = Bundle.load(tmp / "model")
    base = {"user": "u1", "item": "item3", "price": 10.0, "tags": "red|big"}
    cases = [
        base,
        {k: v for k, v in base.items() if k != "item"},  # field absent
        {**base, "item": None},  # explicitly missing
        {**base, "item": "item-never-seen"},
        {**base, "item": "another-unseen"},
        {**base, "tags": ["red", "big"]},  # a list for a multi-hot field
        {**base, "tags": "unseen|tokens"},
        {"price": 3.0},  # almost everything missing
        {},
    ]
    p = bundle.predict(cases)
    assert p.shape == (len(cases),)
    assert np.all(np.isfinite(p)) and np.all((p > 0) & (p < 1))
    # The model's inputs, exactly; the scores at float32 tolerance (other batch positions).
    enc = encoded_rows(bundle.predictor(), cases)
    assert enc[1] == enc[2]  # an absent field is a missing value
    assert enc[3] == enc[4]  # every unseen value shares the OOV row
    assert enc[3] != enc[0] and enc[1] != enc[3]  # OOV and missing are different rows from a known value and each other
    assert enc[5] == enc[0]  # ["red", "big"] == "red|big"
    assert_scores_close(p[[2, 4, 5]], p[[1, 3, 0]], "absent and None, two unseen values, a list and joined text")
    assert_scores_differ(p[3], p[0], "an unseen item against a known one")
    assert_scores_differ(p[1], p[3], "a missing item against an unseen one")
    assert_scores_close(bundle.predict(base), p[:1], "a single dict: a batch of one")


def test_predict_dataframe(trained) -> None:
    import pandas as pd

    tmp, records, bundle = trained
    rows = score_rows(records[:50])
    df = pd.DataFrame(rows)
    assert_identical_scores(bundle.predict(df), bundle.predict(rows), "the same 50 rows in one batch either way")


@pytest.mark.parametrize("missing", ["model.safetensors", "pipeline.json"])
def test_load_refuses_missing_files(trained, tmp_path: Path, missing: str) -> None:
    tmp, _, _ = trained
    folder = tmp_path / "m"
    shutil.copytree(tmp / "model", folder)
    (folder / missing).unlink()
    with pytest.raises(BundleError, match=missing.replace(".", r"\.")):
        Bundle.load(folder)


@pytest.mark.parametrize("victim", ["model.safetensors", "vocab.arrow", "pipeline.json", "config.json"])
def test_load_refuses_tampered_files(trained, tmp_path: Path, victim: str) -> None:
    tmp, _, _ = trained
    folder = tmp_path / "m"
    shutil.copytree(tmp / "model", folder)
    Bundle.load(folder)  # intact copy loads
    raw = bytearray((folder / victim).read_bytes())
    i = len(raw) - 5 if victim.endswith(".json") else len(raw) // 2
    raw[i] ^= 0x01  # one flipped bit, same length
    (folder / victim).write_bytes(bytes(raw))
    with pytest.raises(BundleError) as info:
        Bundle.load(folder)
    assert victim in str(info.value) and "sha256" in str(info.value)


def test_predict_no_records(trained) -> None:
    """Scoring an empty list (an empty request, an empty DataFrame) gives an empty result."""
    tmp, records, _ = trained
    bundle = Bundle.load(tmp / "model")
    out = bundle.predict([])
    assert isinstance(out, np.ndarray) and out.shape == (0,)


def _copy(trained, tmp_path: Path) -> Path:
    tmp, _, _ = trained
    folder = tmp_path / "m"
    shutil.copytree(tmp / "model", folder)
    return folder


def _resign(folder: Path) -> None:
    """What someone who edits a bundle and rewrites its manifest would do."""
    import hashlib

    names = sorted(p.name for p in folder.iterdir() if p.name != "manifest.json")
    digests = {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}
    (folder / "manifest.json").write_text(json.dumps({"format_version": 1, "sha256": digests}))


def test_manifest_records_the_deepfm_version_and_older_folders_still_load(trained, tmp_path: Path) -> None:
    from deepfm import __version__

    folder = _copy(trained, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["deepfm_version"] == __version__ and trained[2].written_by == __version__
    assert Bundle.load(folder).written_by == __version__
    del manifest["deepfm_version"]  # as deepfm 0.1 wrote it: the version is not part of the format
    (folder / "manifest.json").write_text(json.dumps(manifest))
    old = Bundle.load(folder)
    assert old.written_by is None
    np.testing.assert_array_equal(
        old.predict(score_rows(trained[1][:50])), trained[2].predict(score_rows(trained[1][:50]))
    )


def test_model_id_is_the_manifest_the_load_checked(trained, tmp_path: Path) -> None:
    """A server names the model that scored a request: a folder replaced after the load (a
    daily job's new model) must not rename the model already loaded."""
    folder = _copy(trained, tmp_path)
    loaded = Bundle.load(folder)
    assert (
        loaded.model_id
        == trained[2].model_id
        == hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()[:16]
    )
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps(manifest | {"deepfm_version": "9.9"}))
    again = Bundle.load(folder)
    assert again.model_id != loaded.model_id == trained[2].model_id


def test_load_refuses_a_truncated_file(trained, tmp_path: Path) -> None:
    folder = _copy(trained, tmp_path)
    blob = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(blob[: len(blob) - 100])  # a copy cut short
    with pytest.raises(BundleError, match=r"model\.safetensors does not match its sha256 .*truncated"):
        Bundle.load(folder)


def test_load_refuses_a_folder_without_or_outside_its_manifest(trained, tmp_path: Path) -> None:
    folder = _copy(trained, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["sha256"]["vocab.arrow"]  # a file the manifest does not vouch for
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"no sha256 for \['vocab\.arrow'\]"):
        Bundle.load(folder)
    manifest["sha256"]["../config.json"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="not a file name of this folder|no sha256"):
        Bundle.load(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"missing \['manifest\.json'\]"):
        Bundle.load(folder)


def test_load_refuses_weights_of_another_model_even_when_resigned(trained, tmp_path: Path) -> None:
    """A manifest only proves the files are as written; the weights must still fit config.json."""
    folder = _copy(trained, tmp_path)
    state = load_file(folder / "model.safetensors")
    name = next(k for k in state if k.startswith("embedding"))
    state[name] = torch.zeros(state[name].shape[0] + 3, state[name].shape[1])  # a bigger table
    from safetensors.torch import save_file

    save_file(state, str(folder / "model.safetensors"))
    _resign(folder)
    with pytest.raises(BundleError, match=r"model\.safetensors: weights do not fit the model in config\.json"):
        Bundle.load(folder)
