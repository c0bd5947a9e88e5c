"""Named settings of the synthetic click generator (``deepfm synth --setting NAME``).

One generator with one teacher would invite fitting deepfm's defaults to it. A setting moves
the generator's knobs together, so that a benchmark can ask whether a default holds on data
that differ in how strong the interactions are, how long the vocabularies' tails are, how much
the numeric fields matter and how noisy the labels are:

* ``fm_weight``, ``mlp_weight``: weight of the teacher's FM (pairwise) part and of its tanh
  MLP (higher-order) part, each normalised to unit std first; the first-order part weighs 1.
* ``card_scale``: every categorical field's vocabulary size times this (at least 2 values).
* ``zipf_shift``: added to every field's Zipf exponent (1.05-1.2): below 0, flatter
  frequencies, so more rows hold rare values that carry little signal.
* ``numeric_share``: share of the 39 fields' squared importances held by I1..I13; None keeps
  the seed's draw (0.23 for seed 0; 13 / 39 = 0.33 would be equal fields).
* ``bayes_auc``: the expected AUC of the true probabilities (the noise level); the click rate
  stays 0.23.

``criteo`` is the generator as it always was: its output is byte-identical to the output from
before settings existed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = ["SETTINGS", "SynthSetting", "get_setting"]

# Smallest Zipf exponent among the fields (see synth.CATEGORICAL_SPECS): a shift must keep
# every exponent positive.
_MIN_ZIPF = 1.05


@dataclass(frozen=True)
class SynthSetting:
    """The generator's knobs; the defaults are the ``criteo`` setting."""

    name: str = "criteo"
    fm_weight: float = 0.7
    mlp_weight: float = 0.5
    card_scale: float = 1.0
    zipf_shift: float = 0.0
    numeric_share: float | None = None
    bayes_auc: float = 0.80

    def __post_init__(self) -> None:
        for key in ("fm_weight", "mlp_weight", "card_scale", "zipf_shift", "bayes_auc"):
            if not math.isfinite(float(getattr(self, key))):
                raise ValueError(f"synth setting {key} must be a finite number, got {getattr(self, key)!r}")
        if self.fm_weight < 0 or self.mlp_weight < 0:
            raise ValueError(f"fm_weight and mlp_weight must be >= 0, got {self.fm_weight}, {self.mlp_weight}")
        if not 0.001 <= self.card_scale <= 100:
            raise ValueError(f"card_scale must be in [0.001, 100], got {self.card_scale}")
        if not _MIN_ZIPF + self.zipf_shift >= 0.1:
            raise ValueError(
                f"zipf_shift must keep every Zipf exponent >= 0.1 (>= {0.1 - _MIN_ZIPF:.2f}), got {self.zipf_shift}"
            )
        if self.numeric_share is not None and not 0.01 <= self.numeric_share <= 0.99:
            raise ValueError(f"numeric_share must be in [0.01, 0.99], got {self.numeric_share}")
        # Above ~0.95 the calibration's scale search (up to 50) cannot reach the target.
        if not 0.55 <= self.bayes_auc <= 0.95:
            raise ValueError(f"bayes_auc must be in [0.55, 0.95], got {self.bayes_auc}")

    def knobs(self) -> dict[str, Any]:
        """The setting as a plain dict (for JSON next to the data it made)."""
        return asdict(self)


# Values chosen so that each setting moves several knobs away from criteo, and every one
# keeps real pairwise (FM) and higher-order (MLP) parts in its teacher.
SETTINGS: dict[str, SynthSetting] = {
    s.name: s
    for s in (
        # The generator as it always was (Criteo-like vocabularies, first order dominant).
        SynthSetting("criteo"),
        # Interactions outweigh first order; smaller vocabularies, so the pairs are learnable
        # from fewer rows; numeric fields carry half the signal; less label noise.
        SynthSetting("interactions", fm_weight=1.4, mlp_weight=1.0, card_scale=0.3, numeric_share=0.5, bayes_auc=0.82),
        # Long tails: three times the vocabularies, flatter frequencies (more rows on rare
        # values), little numeric signal, a little more noise.
        SynthSetting("tail", mlp_weight=0.6, card_scale=3.0, zipf_shift=-0.1, numeric_share=0.15, bayes_auc=0.78),
        # Noisy labels: a low ceiling, where over-fitting and calibration show; interactions
        # a bit stronger than criteo's so there is still something beyond first order to find.
        SynthSetting("noisy", fm_weight=1.0, mlp_weight=0.7, card_scale=0.6, numeric_share=0.4, bayes_auc=0.70),
    )
}


def get_setting(name: str, **overrides: Any) -> SynthSetting:
    """The named setting with some knobs replaced (None values are ignored)."""
    if name not in SETTINGS:
        raise ValueError(f"unknown synth setting {name!r}; choose one of {', '.join(SETTINGS)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(SETTINGS[name], **given) if given else SETTINGS[name]
