"""The logistic function and its inverse on NumPy arrays, in float64."""

from __future__ import annotations

import numpy as np

LOGIT_EPS = 1e-12  # logit clips probabilities to [LOGIT_EPS, 1 - LOGIT_EPS]


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    """1 / (1 + e^-x) as exp(-log(1 + e^-x)): accurate for very negative x, never overflows.
    (...) -> (...) float64"""
    return np.exp(-np.logaddexp(0.0, -np.asarray(x, dtype=np.float64)))


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), with p clipped away from 0 and 1. (...) -> (...) float64"""
    p = np.clip(np.asarray(p, dtype=np.float64), LOGIT_EPS, 1.0 - LOGIT_EPS)
    return np.log(p) - np.log1p(-p)
