"""A trained model folder: everything needed to use the model, and nothing executable.

    config.json       schema, model, training and reading settings, input layout
    pipeline.json     fitted preprocessing (offsets, numeric statistics, bin edges)
    vocab.arrow       vocabularies (Arrow IPC)
    model.safetensors weights
    metrics.json      what training measured
    calibration.json  downsampling correction and fitted calibration (deepfm.model.calibration)
    manifest.json     sha256 of every file above, checked on load, and the deepfm version
                      that wrote the folder (``deepfm_version``; folders from before 0.2 have none)

Loading never unpickles anything: JSON, Arrow and safetensors only.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from deepfm._version import __version__
from deepfm.config import RunConfig
from deepfm.data.encoded import EncodedChunk
from deepfm.data.storage import download_folder, is_uri
from deepfm.errors import BundleError
from deepfm.features.pipeline import FeaturePipeline
from deepfm.model.calibration import FILE as CALIBRATION_FILE
from deepfm.model.calibration import Calibration
from deepfm.model.deepfm import DeepFM, InputLayout
from deepfm.scoring import Scorer
from deepfm.util.files import sha256_file, write_atomic

FORMAT_VERSION = 1
REQUIRED = ("config.json", "pipeline.json", "vocab.arrow", "model.safetensors", "manifest.json")
SIGNED = REQUIRED[:-1]  # files the manifest must hold a sha256 for (the OPTIONAL ones too when present)
OPTIONAL = ("metrics.json", CALIBRATION_FILE)  # bundles written before calibration existed have none


class Bundle:
    """A fitted FeaturePipeline + a DeepFM model + the config and metrics that go with them."""

    def __init__(
        self,
        config: RunConfig,
        pipeline: FeaturePipeline,
        model: DeepFM,
        metrics: dict[str, Any] | None = None,
        path: Path | None = None,
        calibration: Calibration | None = None,
        extra: dict[str, bytes] | None = None,
    ) -> None:
        self.config, self.pipeline, self.model = config, pipeline, model
        self.metrics = metrics or {}
        self.path = path
        self.download: tempfile.TemporaryDirectory[str] | None = None  # the local copy of a remote bundle
        self._scorer: Scorer | None = None
        self.calibration = calibration or Calibration()
        # Files saved beside the bundle's own (the estimator's classes): kept when it is saved again.
        self.extra = dict(extra or {})
        # The deepfm version that wrote the folder: None before save, and for folders written
        # before versions were recorded. Reading does not depend on it (format_version does).
        self.written_by: str | None = None
        self._id: str | None = None  # model_id: of the manifest this bundle last wrote or checked

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------ save / load
    def save(self, folder: str | Path, extra: dict[str, bytes] | None = None) -> Path:
        """Write the bundle to ``folder``. ``extra`` files (name -> content) are written beside
        the others and checked by the manifest like them (the scikit-learn estimator keeps its
        classes there)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        extra = {**self.extra, **(extra or {})}
        for name, content in extra.items():
            if Path(name).name != name or name in (*REQUIRED, *OPTIONAL):
                raise ValueError(f"extra bundle file {name!r} must be a plain file name not used by the bundle")
            write_atomic(folder / name, content)
        config = {
            "format_version": FORMAT_VERSION,
            **self.config.to_dict(),
            "layout": self.model.layout.to_dict(),
        }
        write_atomic(folder / "config.json", json.dumps(config, indent=1).encode())
        files = list(self.pipeline.save(folder))
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(
            state, str(folder / "model.safetensors"), metadata={"format": "deepfm", "version": str(FORMAT_VERSION)}
        )
        self.metrics = _jsonable(self.metrics)  # what a reload gives back (JSON has no inf or NaN: null)
        write_atomic(folder / "metrics.json", json.dumps(self.metrics, indent=1).encode())
        write_atomic(folder / CALIBRATION_FILE, self.calibration.to_json().encode())
        files += ["config.json", "model.safetensors", *OPTIONAL, *extra]
        manifest = {
            "format_version": FORMAT_VERSION,
            "deepfm_version": __version__,
            "sha256": {f: sha256_file(folder / f) for f in sorted(files)},
        }
        manifest_bytes = json.dumps(manifest, indent=1).encode()
        write_atomic(folder / "manifest.json", manifest_bytes)
        self.path, self.extra, self.written_by = folder, extra, __version__
        self._id = _manifest_id(manifest_bytes)
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> Bundle:
        """The bundle in ``folder``, its manifest checked. A URI (``s3://bucket/model``) is
        downloaded to a temporary folder first, which lives as long as the bundle."""
        if is_uri(folder):
            local = tempfile.TemporaryDirectory(prefix="deepfm-model-")
            download_folder(str(folder), Path(local.name))
            bundle = cls.load(local.name, device)
            bundle.download = local
            return bundle
        folder = Path(folder)
        if not folder.is_dir():
            raise BundleError(f"{folder}: not a model folder (it does not exist or is not a directory)")
        manifest, manifest_bytes = _checked_manifest(folder)
        raw = _read_json(folder / "config.json")
        if raw.get("format_version") != FORMAT_VERSION or "layout" not in raw:
            raise BundleError(
                f"{folder}: bundle format {raw.get('format_version')!r}, this deepfm reads {FORMAT_VERSION}"
            )
        layout = InputLayout.from_dict(raw.pop("layout"))
        raw.pop("format_version")
        config = RunConfig.from_dict(raw, where=f"{folder}/config.json")
        pipeline = FeaturePipeline.load(folder)
        model = DeepFM(layout, config.model)
        try:
            state = load_file(str(folder / "model.safetensors"))
            model.load_state_dict(state, strict=True)
        except (RuntimeError, OSError) as exc:
            raise BundleError(
                f"{folder}/model.safetensors: weights do not fit the model in config.json ({exc})"
            ) from None
        model.to(device).eval()
        metrics_path = folder / "metrics.json"
        metrics = _read_json(metrics_path) if metrics_path.is_file() else {}
        cal_path = folder / CALIBRATION_FILE
        calibration = Calibration.from_json(cal_path.read_bytes(), where=str(cal_path)) if cal_path.is_file() else None
        own = {*REQUIRED, *OPTIONAL}
        extra = {name: (folder / name).read_bytes() for name in manifest["sha256"] if name not in own}
        bundle = cls(config, pipeline, model, metrics, folder, calibration, extra)
        written_by = manifest.get("deepfm_version")
        bundle.written_by = written_by if isinstance(written_by, str) else None
        bundle._id = _manifest_id(manifest_bytes)
        return bundle

    @property
    def model_id(self) -> str:
        """Names this exact model: the start of the sha256 of its manifest (every file's
        digest), so two folders with the same id hold the same model. "unsaved" before save. It
        is the manifest this bundle wrote or its load checked, whatever the folder holds since
        (a daily job may replace it while a server runs)."""
        return self._id or "unsaved"

    # ------------------------------------------------------------ predict
    def predictor(self) -> Scorer:
        """The scoring path of this bundle (PyTorch engine), built once: a
        :class:`~deepfm.scoring.Scorer`, as :class:`deepfm.Predictor` is one."""
        if self._scorer is None:
            self._scorer = Scorer(self)
        return self._scorer

    def predict(self, data: object, batch_size: int = 65536) -> np.ndarray:
        """Click probabilities for records (list of dicts), a pandas/polars DataFrame or an
        Arrow table, through the Predictor. Missing fields count as missing values, unseen
        values as OOV; an unknown field in a record is an error. -> (N,) float64"""
        return self.predictor().predict(data, batch_size)

    def predict_encoded(self, chunk: EncodedChunk, calibrated: bool = True) -> np.ndarray:
        """Probabilities for an EncodedChunk, through :func:`deepfm.model.calibration.postprocess`
        (``calibrated=False``: the model's own, uncorrected). -> (N,) float64"""
        return self.predictor().predict_encoded(chunk, calibrated=calibrated)


def _checked_manifest(folder: Path) -> tuple[dict[str, Any], bytes]:
    """The folder's manifest (parsed, and its bytes, read once) after checking that every file
    it lists is there with its sha256 and every file deepfm reads is listed."""
    missing = [f for f in REQUIRED if not (folder / f).is_file()]
    if missing:
        raise BundleError(f"{folder}: not a complete model folder; missing {missing} (expected {list(REQUIRED)})")
    manifest_bytes = (folder / "manifest.json").read_bytes()  # read once: checked and named alike
    manifest = _parse_json(manifest_bytes, folder / "manifest.json")
    digests = manifest.get("sha256")
    if not isinstance(digests, dict):
        raise BundleError(f"{folder}/manifest.json: no sha256 table")
    unsigned = [f for f in (*SIGNED, *OPTIONAL) if (folder / f).is_file() and f not in digests]
    if unsigned:
        raise BundleError(
            f"{folder}: manifest.json holds no sha256 for {unsigned}; the folder was changed after it was saved"
        )
    for name, digest in digests.items():
        if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
            raise BundleError(f"{folder}/manifest.json: {name!r} is not a file name of this folder")
        if not (folder / name).is_file():
            raise BundleError(f"{folder}: {name} is listed in manifest.json but missing")
        if sha256_file(folder / name) != digest:
            raise BundleError(f"{folder}: {name} does not match its sha256 in manifest.json (changed or truncated)")
    return manifest, manifest_bytes


def _manifest_id(manifest: bytes) -> str:
    return hashlib.sha256(manifest).hexdigest()[:16]


def _read_json(path: Path) -> dict[str, Any]:
    return _parse_json(path.read_bytes(), path)


def _parse_json(raw: bytes, path: Path) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object")
    return data


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
