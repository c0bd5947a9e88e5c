"""From the model's probability to the probability users get: one function, one small state.

Two things can stand between them, applied in this order by :func:`postprocess`:

1. Negative downsampling. A model trained on all positives and a share ``w`` of the negatives
   sees odds ``1/w`` times too high; the true probability is ``q / (q + (1 - q) / w)`` for a
   model output ``q`` (equivalently: logit + log w).
2. A fitted calibration: Platt scaling ``sigmoid(a * logit(p) + b)``, which training fits on
   the validation rows by default (``train.calibrate``), or, by ``deepfm calibrate``, Platt or
   isotonic regression (a non-decreasing step function, applied by linear interpolation
   between its points and clipped at the ends, as scikit-learn's IsotonicRegression does).

The state is stored in a bundle as ``calibration.json`` (signed by its manifest) and every
prediction path (Bundle.predict_encoded and what calls it) goes through :func:`postprocess`.
Platt's two parameters are fitted with PyTorch's L-BFGS; isotonic regression uses
scikit-learn (the ``sklearn`` extra); applying needs NumPy only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepfm.errors import BundleError, ConfigError
from deepfm.util.maths import logit, sigmoid

FILE = "calibration.json"
METHODS = ("none", "platt", "isotonic")


@dataclass(frozen=True)
class Calibration:
    """Everything :func:`postprocess` needs. The default changes nothing."""

    neg_sample_rate: float = 1.0  # share of negatives kept for training (1: all)
    method: str = "none"  # none | platt | isotonic
    platt: tuple[float, float] = (1.0, 0.0)  # (a, b) of sigmoid(a * logit(p) + b)
    x: tuple[float, ...] = ()  # isotonic: input probabilities, increasing
    y: tuple[float, ...] = ()  # isotonic: output probabilities, non-decreasing

    def __post_init__(self) -> None:
        if not (isinstance(self.neg_sample_rate, (int, float)) and 0 < self.neg_sample_rate <= 1):
            raise ConfigError(f"neg_sample_rate must be in (0, 1], got {self.neg_sample_rate!r}")
        if self.method not in METHODS:
            raise ConfigError(f"calibration method must be one of {list(METHODS)}, got {self.method!r}")
        if self.method == "isotonic" and (len(self.x) != len(self.y) or not self.x):
            raise ConfigError("isotonic calibration needs as many x as y points, at least one")

    def to_json(self) -> str:
        return json.dumps(
            {
                "neg_sample_rate": self.neg_sample_rate,
                "method": self.method,
                "platt": list(self.platt),
                "x": list(self.x),
                "y": list(self.y),
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str | bytes, where: str = FILE) -> Calibration:
        try:
            raw = json.loads(text)
            return cls(
                neg_sample_rate=float(raw["neg_sample_rate"]),
                method=str(raw["method"]),
                platt=(float(raw["platt"][0]), float(raw["platt"][1])),
                x=tuple(float(v) for v in raw["x"]),
                y=tuple(float(v) for v in raw["y"]),
            )
        except (ValueError, KeyError, TypeError, IndexError, ConfigError) as exc:
            raise BundleError(f"{where}: not a calibration this deepfm wrote ({exc})") from None

    def with_fit(
        self, method: str, platt: tuple[float, float] = (1.0, 0.0), x: tuple[float, ...] = (), y: tuple[float, ...] = ()
    ) -> Calibration:
        """The same downsampling correction with another fitted part."""
        return Calibration(self.neg_sample_rate, method, platt, x, y)


def postprocess(p: np.ndarray, state: Calibration) -> np.ndarray:
    """Model probabilities -> what users get: downsampling correction, then the fitted
    calibration. (N,) float -> (N,) float64"""
    p = np.asarray(p, dtype=np.float64)
    w = state.neg_sample_rate
    if w != 1.0:
        p = p * w / (p * w + (1.0 - p))
    if state.method == "platt":
        a, b = state.platt
        p = sigmoid(a * logit(p) + b)
    elif state.method == "isotonic":
        p = np.interp(p, state.x, state.y)  # clips to the end values outside [x0, xn]
    return p


def fit(probs: np.ndarray, labels: np.ndarray, method: str, base: Calibration = Calibration()) -> Calibration:
    """Fit ``method`` (platt or isotonic) mapping ``probs`` -- already through ``base``'s
    downsampling correction -- to ``labels``. Returns ``base`` with that fit. (N,), (N,)"""
    p = np.asarray(probs, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if method not in ("platt", "isotonic"):
        raise ConfigError(f"--method must be platt or isotonic, got {method!r}")
    if p.size == 0 or y.min() == y.max():
        raise ConfigError(
            f"calibration needs rows of both classes; got {p.size} rows with labels {sorted(set(y.tolist()))}"
        )
    if method == "platt":
        return base.with_fit("platt", platt=fit_platt(logit(p), y))
    try:
        from sklearn.isotonic import IsotonicRegression
    except ImportError:  # pragma: no cover - the extra is installed in the test environment
        raise ConfigError("isotonic calibration needs scikit-learn: pip install 'deepfm[sklearn]'") from None
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
    return base.with_fit("isotonic", x=tuple(map(float, iso.X_thresholds_)), y=tuple(map(float, iso.y_thresholds_)))


def fit_platt(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) minimizing the log loss of sigmoid(a * z + b) against labels ``y``: an
    unregularized two-parameter logistic regression, by L-BFGS in float64. (N,), (N,)"""
    import torch
    import torch.nn.functional as F

    x, t = torch.from_numpy(np.asarray(z, dtype=np.float64)), torch.from_numpy(np.asarray(y, dtype=np.float64))
    ab = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [ab], lr=1.0, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-15, line_search_fn="strong_wolfe"
    )

    def loss() -> torch.Tensor:
        opt.zero_grad()
        value = F.binary_cross_entropy_with_logits(ab[0] * x + ab[1], t)
        value.backward()
        return value

    opt.step(loss)
    a, b = (float(v) for v in ab.detach())
    return a, b


def describe(state: Calibration) -> dict[str, Any]:
    """A short JSON-able summary for logs and metrics.json."""
    out: dict[str, Any] = {"neg_sample_rate": state.neg_sample_rate, "method": state.method}
    if state.method == "platt":
        out["platt"] = list(state.platt)
    elif state.method == "isotonic":
        out["points"] = len(state.x)
    return out
