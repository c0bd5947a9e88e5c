"""Synthetic click logs in Criteo's raw layout, with a known true click probability.

The generator writes what Criteo's DAC ``train.txt`` looks like -- ``label \\t I1..I13 \\t
C1..C26``, no header, empty fields for missing values -- so the rest of the package can be
exercised end to end without the real 45M-row file, and, unlike the real file, every row comes
with the probability that produced its label. That makes model quality measurable against a
ceiling: the Bayes-optimal AUC (AUC of the labels against ``p_true``) and log loss.

How rows are made
-----------------
* Numeric fields I1..I13 are count-like integers drawn from per-field log-normal shapes
  (some zero-inflated; I2 is sometimes -1..-3 as in the real data), each with its own missing
  rate. Some fields share one missing draw, because in the real logs they go missing together.
* Categorical fields C1..C26 draw a frequency rank from a Zipf law (exponent 1.05-1.2) over a
  per-field vocabulary of 3 to 1,000,000 values (about 3M values in all). Each rank maps to
  a distinct 8-character lowercase hex string through a keyed 32-bit bijection, so strings
  depend only on (seed, field, rank).
* A hidden teacher gives the true logit: bias + first-order weights + a factorization-machine
  pairwise term over per-value vectors (k = 6) + a small tanh MLP (24 units) over the
  concatenated vectors. Each value's parameters are scaled by ``(1 + rank / 25) ** -0.9``, so
  the signal lives in frequent values and rare ones carry almost nothing, as in real logs.
  Missing values have their own (full-scale) parameters. The three parts are normalised on a
  fixed calibration sample, then a global scale and the bias are solved for so the expected
  click rate is 0.23 and the expected Bayes AUC is 0.80. Labels are Bernoulli(p_true).

Settings (``setting=``, ``deepfm synth --setting NAME``)
------------------------------------------------------
The knobs above -- the FM and MLP parts' weights, the vocabulary sizes, the Zipf exponents,
the numeric fields' share of the signal and the target Bayes AUC -- come from a
``SynthSetting`` (``deepfm/data/synth_settings.py``), so that no default gets fitted to one
generator. ``criteo`` (the default) is the generator described above, byte for byte.
Measured on 1,000,000 rows of seed 0:

==============  =====  =====  ==========  ====  ==============  =========  =====  ==========
setting         FM     MLP    card scale  Zipf  numeric share   Bayes AUC  CTR    Bayes LL
==============  =====  =====  ==========  ====  ==============  =========  =====  ==========
criteo          0.7    0.5    1 (3.0M)    +0    drawn (0.23)    0.8002     0.230  0.4283
interactions    1.4    1.0    0.3 (0.9M)  +0    0.5             0.8200     0.231  0.4088
tail            0.7    0.6    3 (9.1M)    -0.1  0.15            0.7799     0.230  0.4449
noisy           1.0    0.7    0.6 (1.8M)  +0    0.4             0.7012     0.230  0.4922
==============  =====  =====  ==========  ====  ==============  =========  =====  ==========

(card scale: in brackets the values of all 26 fields together.) ``header=True``
(``--header``) starts the file with the line ``label I1 .. C26``.

Days (``day=K``, ``deepfm synth --day K``)
------------------------------------------
Day 1 is the data above, byte for byte. Each later day simulates a day of a live system:

* New ids appear and old ones fade: on each day d = 2..K, a seeded ``DAY_CHURN`` share (10%)
  of the frequency-rank slots of every categorical field with at least ``CHURN_MIN_CARD`` (100)
  values gets a new value -- a string never seen before -- with freshly drawn hidden
  parameters of the slot's scale; the value it replaces is never drawn again. By day 5 about
  34% of slots hold a value that day 1 did not have, head slots included.
* The base CTR moves: the true logit's bias shifts by ``DAY_BIAS_SHIFT`` (-0.08) per day; with
  the new values' own effects the click rate falls from 0.231 on day 1 to 0.210, 0.181 and
  0.156 on days 2, 3 and 5 (65,536 rows of seed 0). The Bayes AUC stays at 0.80-0.805.
* Rows of day K are drawn from their own seeded stream, so the days are disjoint samples.

Determinism
-----------
Rows are produced in fixed internal blocks of ``BLOCK_ROWS`` rows; block ``b`` draws all its
randomness from ``default_rng([seed, _BLOCK_TAG, b])`` and is always generated whole, then
sliced. The teacher, vocabularies and calibration use their own seeded streams and never see
``rows`` or ``chunk_rows``. Hence the first n rows of any larger run equal a run of n rows,
and output is byte-identical for the same (rows, seed) on a given platform and NumPy/BLAS
build (the MLP goes through BLAS, whose rounding may differ between machines; 1 and 2
OpenBLAS threads were checked to give identical bytes).

Measured (seed 0, 1,000,000 rows, this 2-core machine)
------------------------------------------------------
* Bayes-optimal AUC (labels vs p_true): 0.8002
* positive rate: 0.2297
* ``write_synth`` time: about 7.2 s per 1M rows (3M rows in 22 s), plus ~2.3 s one-off setup
  per seed for vocabularies, teacher and calibration. Peak RSS with ``chunk_rows=1_000_000``
  is about 1.25 GB and does not grow with ``rows``.
* For scale: a one-hot logistic regression (values seen >= 10 times) trained on 500k rows
  reaches test AUC 0.744 against the 0.80 ceiling, so the data are learnable but leave room
  for models that capture interactions.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from deepfm.data.schema import CRITEO_COLUMNS as SCHEMA_COLUMNS
from deepfm.data.synth_settings import SETTINGS, SynthSetting, get_setting
from deepfm.util.maths import sigmoid

logger = logging.getLogger(__name__)

__all__ = ["CRITEO_COLUMNS", "SETTINGS", "SynthResult", "SynthSetting", "generate_table", "truth_path_for", "write_synth"]

NUM_NUMERIC = 13
NUM_CATEGORICAL = 26
# The column names are the schema's (one definition), as a list for Arrow table building.
CRITEO_COLUMNS: list[str] = list(SCHEMA_COLUMNS)

# Fixed internal block size: per-row randomness is keyed by block index, never by the caller's
# chunking, which is what makes prefixes and chunk sizes irrelevant to the output.
BLOCK_ROWS = 65_536

# Stream tags keep the teacher, vocabularies, calibration and row blocks on disjoint seeds.
# Every seed list has the same length (3) so no two streams can alias by padding.
_BLOCK_TAG = 0xB10C
_TEACHER_TAG = 0x7EAC
_VOCAB_TAG = 0x70CA
_CALIB_TAG = 0xCA1B
_DAY_TAG = 0xDA7
# Day K >= 2 draws its rows from blocks tagged _BLOCK_TAG + (K - 1) * _DAY_STRIDE, which can
# never equal another tag (all are below 2^16).
_DAY_STRIDE = 1 << 20

DAY_CHURN = 0.10  # share of a field's rank slots that get a new value each day
CHURN_MIN_CARD = 100  # fields with fewer values (device types, say) keep theirs
DAY_BIAS_SHIFT = -0.08  # change of the true logit's bias per day

TARGET_CTR = 0.23
EMBED_DIM = 6
MLP_HIDDEN = 24
# Parameter scale of the value at frequency rank r is (1 + r / RANK_R0) ** -RANK_POWER.
RANK_R0 = 25.0
RANK_POWER = 0.9
# The first-order part's weight; the FM and MLP parts' come from the setting (criteo: 0.7, 0.5),
# each part normalised to unit std first.
_FIRST_ORDER_WEIGHT = 1.0
_CALIB_ROWS = 2 * BLOCK_ROWS


@dataclass(frozen=True)
class _NumSpec:
    name: str
    missing: float  # probability the field is empty
    median: float  # median of the present, non-zero-inflated values
    sigma: float  # log-normal spread
    zero_prob: float  # extra point mass at 0
    group: str  # fields sharing a group share one missing draw


@dataclass(frozen=True)
class _CatSpec:
    name: str
    cardinality: int
    missing: float
    zipf: float  # Zipf exponent over frequency ranks
    group: str


# Shapes loosely follow the public statistics of Criteo's DAC train set.
NUMERIC_SPECS: tuple[_NumSpec, ...] = (
    _NumSpec("I1", 0.454, 1, 1.2, 0.30, "i1"),
    _NumSpec("I2", 0.000, 3, 2.0, 0.10, "I2"),
    _NumSpec("I3", 0.215, 7, 1.5, 0.05, "i3"),
    _NumSpec("I4", 0.220, 4, 1.0, 0.05, "i3"),
    _NumSpec("I5", 0.026, 2700, 2.0, 0.02, "I5"),
    _NumSpec("I6", 0.220, 34, 1.6, 0.10, "i3"),
    _NumSpec("I7", 0.043, 3, 1.6, 0.15, "i7"),
    _NumSpec("I8", 0.0005, 8, 1.0, 0.03, "I8"),
    _NumSpec("I9", 0.043, 40, 1.5, 0.02, "i7"),
    _NumSpec("I10", 0.454, 1, 0.6, 0.35, "i1"),
    _NumSpec("I11", 0.043, 1, 1.0, 0.25, "i7"),
    _NumSpec("I12", 0.766, 0, 1.2, 0.40, "I12"),
    _NumSpec("I13", 0.220, 5, 1.2, 0.05, "i3"),
)

CATEGORICAL_SPECS: tuple[_CatSpec, ...] = (
    _CatSpec("C1", 1_460, 0.0, 1.10, "C1"),
    _CatSpec("C2", 583, 0.0, 1.05, "C2"),
    _CatSpec("C3", 1_000_000, 0.034, 1.05, "c3"),
    _CatSpec("C4", 400_000, 0.034, 1.10, "c3"),
    _CatSpec("C5", 305, 0.0, 1.20, "C5"),
    _CatSpec("C6", 24, 0.121, 1.20, "C6"),
    _CatSpec("C7", 12_517, 0.0, 1.10, "C7"),
    _CatSpec("C8", 633, 0.0, 1.10, "C8"),
    _CatSpec("C9", 3, 0.0, 1.20, "C9"),
    _CatSpec("C10", 93_145, 0.0, 1.05, "C10"),
    _CatSpec("C11", 5_683, 0.0, 1.10, "C11"),
    _CatSpec("C12", 800_000, 0.034, 1.05, "c3"),
    _CatSpec("C13", 3_194, 0.0, 1.10, "C13"),
    _CatSpec("C14", 27, 0.0, 1.20, "C14"),
    _CatSpec("C15", 14_992, 0.0, 1.10, "C15"),
    _CatSpec("C16", 300_000, 0.034, 1.05, "c3"),
    _CatSpec("C17", 10, 0.0, 1.20, "C17"),
    _CatSpec("C18", 5_652, 0.0, 1.10, "C18"),
    _CatSpec("C19", 2_173, 0.44, 1.10, "c19"),
    _CatSpec("C20", 4, 0.44, 1.20, "c19"),
    _CatSpec("C21", 200_000, 0.034, 1.05, "c3"),
    _CatSpec("C22", 18, 0.76, 1.20, "C22"),
    _CatSpec("C23", 15, 0.0, 1.20, "C23"),
    _CatSpec("C24", 120_000, 0.034, 1.10, "c3"),
    _CatSpec("C25", 105, 0.44, 1.20, "c19"),
    _CatSpec("C26", 60_000, 0.44, 1.10, "c19"),
)

_SCHEMA = pa.schema(
    [pa.field("label", pa.int64())]
    + [pa.field(s.name, pa.int64()) for s in NUMERIC_SPECS]
    + [pa.field(s.name, pa.string()) for s in CATEGORICAL_SPECS]
)


@dataclass(frozen=True)
class SynthResult:
    """What ``write_synth`` produced."""

    path: Path  # the TSV written
    truth_path: Path  # the true click probabilities
    rows: int
    positive_rate: float  # observed mean label
    setting: SynthSetting = SETTINGS["criteo"]


def _missing_leaders() -> np.ndarray:
    """For each of the 39 feature fields, the column whose missing draw it uses (group leader)."""
    groups = [s.group for s in NUMERIC_SPECS] + [s.group for s in CATEGORICAL_SPECS]
    first: dict[str, int] = {}
    return np.array([first.setdefault(g, i) for i, g in enumerate(groups)], dtype=np.int64)


def _mix32(x: np.ndarray) -> np.ndarray:
    """lowbias32 integer hash: a bijection on uint32, so distinct inputs stay distinct."""
    x = x.astype(np.uint32, copy=True)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_NIBBLE_SHIFTS = np.arange(28, -1, -4, dtype=np.uint32)


def _hex_vocab(seed: int, field: int, size: int, generation: np.ndarray | None = None) -> pa.StringArray:
    """Distinct 8-hex-char strings for ranks 0..size-1, built without per-value Python work.
    ``generation`` (size,): how many times each rank slot got a new value (days); 0 everywhere
    gives day 1's strings."""
    key = np.random.default_rng([seed, _VOCAB_TAG, field]).integers(0, 2**32, dtype=np.uint64)
    slot = np.arange(size, dtype=np.uint64)
    if generation is not None:  # generation g of slot r is number g * size + r: all distinct
        slot = slot + generation.astype(np.uint64) * np.uint64(size)
    # (number + key) mod 2^32 followed by a bijective mix: distinct per number, unordered in rank.
    codes = _mix32((slot + key) & np.uint64(0xFFFFFFFF))
    nibbles = (codes[:, None] >> _NIBBLE_SHIFTS[None, :]) & np.uint32(0xF)
    data = _HEX[nibbles].tobytes()
    offsets = np.arange(0, 8 * (size + 1), 8, dtype=np.int32)
    return pa.StringArray.from_buffers(size, pa.py_buffer(offsets), pa.py_buffer(data))


def _rank_scale(ranks: np.ndarray) -> np.ndarray:
    """Parameter scale by frequency rank: ~1 for the head, ~0 for the long tail."""
    return (1.0 + ranks / RANK_R0) ** -RANK_POWER


@dataclass
class _Features:
    num_vals: np.ndarray  # (n, 13) int64, arbitrary where missing
    num_missing: np.ndarray  # (n, 13) bool
    cat_idx: np.ndarray  # (n, 26) int64 frequency ranks, arbitrary where missing
    cat_missing: np.ndarray  # (n, 26) bool
    label_u: np.ndarray  # (n,) uniforms for the Bernoulli draw


def _cardinality(spec: _CatSpec, scale: float) -> int:
    """A field's vocabulary size under a setting's card_scale (criteo's 1.0: the spec's own)."""
    return spec.cardinality if scale == 1.0 else max(2, int(round(spec.cardinality * scale)))


class _World:
    """Everything fixed by the seed and the setting: vocabularies, Zipf CDFs and the teacher."""

    def __init__(self, seed: int, setting: SynthSetting = SETTINGS["criteo"]) -> None:
        t0 = time.perf_counter()
        self.seed = seed
        self.setting = setting
        self.leaders = _missing_leaders()
        self.num_missing_rate = np.array([s.missing for s in NUMERIC_SPECS])
        self.cat_missing_rate = np.array([s.missing for s in CATEGORICAL_SPECS])
        self.cards = np.array([_cardinality(s, setting.card_scale) for s in CATEGORICAL_SPECS], dtype=np.int64)
        self.cdfs: list[np.ndarray] = []
        for spec, card in zip(CATEGORICAL_SPECS, self.cards):
            w = np.arange(1, card + 1, dtype=np.float64) ** -(spec.zipf + setting.zipf_shift)
            cdf = np.cumsum(w)
            cdf /= cdf[-1]
            self.cdfs.append(cdf)
        self.vocabs = [_hex_vocab(seed, f, int(c)) for f, c in enumerate(self.cards)]
        self._init_teacher()
        self._calibrate()
        logger.info(
            "synth world for seed %d ready in %.2fs (scale %.3f, bias %.3f)",
            seed, time.perf_counter() - t0, self.scale, self.bias,
        )

    # ---- row sampling -------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, n: int) -> _Features:
        """Draw n rows' raw features; the draw order is fixed so a block is reproducible."""
        nf = NUM_NUMERIC + NUM_CATEGORICAL
        miss_u = rng.random((n, nf))[:, self.leaders]  # grouped fields share a column
        normals = rng.standard_normal((n, NUM_NUMERIC))
        zero_u = rng.random((n, NUM_NUMERIC))
        neg_u = rng.random(n)
        cat_u = rng.random((n, NUM_CATEGORICAL))
        label_u = rng.random(n)

        num_missing = miss_u[:, :NUM_NUMERIC] < self.num_missing_rate
        cat_missing = miss_u[:, NUM_NUMERIC:] < self.cat_missing_rate

        mu = np.log1p(np.array([s.median for s in NUMERIC_SPECS], dtype=np.float64))
        sigma = np.array([s.sigma for s in NUMERIC_SPECS])
        zero_p = np.array([s.zero_prob for s in NUMERIC_SPECS])
        vals = np.floor(np.expm1(np.minimum(mu + sigma * normals, 21.0)))  # cap ~1.3e9
        vals = np.where(zero_u < zero_p, 0.0, np.maximum(vals, 0.0)).astype(np.int64)
        # Real Criteo's I2 has small negative values (-1 mostly, -2/-3 rarely).
        i2 = 1
        vals[:, i2] = np.where(neg_u < 0.001, -3, np.where(neg_u < 0.004, -2,
                               np.where(neg_u < 0.044, -1, vals[:, i2])))

        cat_idx = np.empty((n, NUM_CATEGORICAL), dtype=np.int64)
        for f, cdf in enumerate(self.cdfs):  # loop over 26 fields, not rows
            idx = np.searchsorted(cdf, cat_u[:, f], side="right")
            cat_idx[:, f] = np.minimum(idx, cdf.size - 1)
        return _Features(vals, num_missing, cat_idx, cat_missing, label_u)

    # ---- teacher ------------------------------------------------------------------------
    def _init_teacher(self) -> None:
        rng = np.random.default_rng([self.seed, _TEACHER_TAG, 0])
        k = EMBED_DIM
        # Per-field importance: log-normal, with some fields nearly useless as in real logs.
        nf = NUM_NUMERIC + NUM_CATEGORICAL
        importance = np.exp(rng.normal(0.0, 0.6, nf)) * np.where(rng.random(nf) < 0.2, 0.15, 1.0)
        share = self.setting.numeric_share
        if share is not None:  # rescale I1..I13 after the draw, so every later draw is unchanged
            num_sq, cat_sq = (importance[:NUM_NUMERIC] ** 2).sum(), (importance[NUM_NUMERIC:] ** 2).sum()
            importance[:NUM_NUMERIC] *= np.sqrt(share / (1.0 - share) * cat_sq / num_sq)
        self.num_importance = importance[:NUM_NUMERIC]
        cat_importance = importance[NUM_NUMERIC:]

        # One table for all categorical fields; field f owns rows offsets[f] .. +card[f], the
        # last of which is its "missing" slot.
        sizes = self.cards + 1
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        total = int(sizes.sum())
        scale = np.empty(total, dtype=np.float32)
        for f in range(NUM_CATEGORICAL):
            o, c = self.offsets[f], self.cards[f]
            scale[o:o + c] = _rank_scale(np.arange(c, dtype=np.float64)) * cat_importance[f]
            scale[o + c] = cat_importance[f]  # missing is frequent, so it keeps full scale
        self._slot_scale = scale  # day k's new values are drawn at their slot's scale
        self.cat_w = rng.standard_normal(total, dtype=np.float32) * scale
        self.cat_v = rng.standard_normal((total, k), dtype=np.float32)
        self.cat_v *= (scale / np.sqrt(k))[:, None]

        imp = self.num_importance
        self.num_w = rng.standard_normal(NUM_NUMERIC) * imp
        self.num_v = rng.standard_normal((NUM_NUMERIC, k)) * (imp / np.sqrt(k))[:, None]
        self.num_miss_w = rng.standard_normal(NUM_NUMERIC) * imp
        self.num_miss_v = rng.standard_normal((NUM_NUMERIC, k)) * (imp / np.sqrt(k))[:, None]

        d = (NUM_NUMERIC + NUM_CATEGORICAL) * k
        self.mlp_w1 = (rng.standard_normal((d, MLP_HIDDEN)) * (2.0 / np.sqrt(d))).astype(np.float32)
        self.mlp_b1 = (rng.standard_normal(MLP_HIDDEN) * 0.5).astype(np.float32)
        self.mlp_w2 = (rng.standard_normal(MLP_HIDDEN) / np.sqrt(MLP_HIDDEN)).astype(np.float32)
        # float32 copies and the field-summing matrix used on the hot path.
        self.num_v32 = self.num_v.astype(np.float32)
        self.num_miss_v32 = self.num_miss_v.astype(np.float32)
        self.field_sum = np.tile(np.eye(k, dtype=np.float32), (NUM_NUMERIC + NUM_CATEGORICAL, 1))

    def _parts(self, x: _Features) -> np.ndarray:
        """Un-normalised (first-order, FM, MLP) parts of the logit, shape (n, 3), float64."""
        n = x.cat_idx.shape[0]
        k = EMBED_DIM
        emb = np.empty((n, NUM_NUMERIC + NUM_CATEGORICAL, k), dtype=np.float32)
        # Numeric: standardised log1p(count); missing uses its own weight and vector.
        xs = (np.log1p(np.maximum(x.num_vals, 0)) - self.num_mean) / self.num_std
        xs = np.where(x.num_missing, 0.0, xs)
        first = np.where(x.num_missing, self.num_miss_w, xs * self.num_w).sum(axis=1)
        emb[:, :NUM_NUMERIC] = xs.astype(np.float32)[:, :, None] * self.num_v32
        miss_r, miss_c = np.nonzero(x.num_missing)
        emb[miss_r, miss_c] = self.num_miss_v32[miss_c]

        rows = self.offsets + np.where(x.cat_missing, self.cards, x.cat_idx)
        first = first + self.cat_w[rows].sum(axis=1, dtype=np.float64)
        emb[:, NUM_NUMERIC:] = np.take(self.cat_v, rows, axis=0)

        flat = emb.reshape(n, -1)
        # FM in O(F*k): 0.5 * (|sum_f e_f|^2 - sum_f |e_f|^2). The field sum is a matmul with
        # a 0/1 matrix, which is much faster than a strided reduction over the middle axis.
        s = flat @ self.field_sum
        fm = 0.5 * (np.einsum("ij,ij->i", s, s) - np.einsum("ij,ij->i", flat, flat))
        hidden = np.tanh(flat @ self.mlp_w1 + self.mlp_b1)
        mlp = hidden @ self.mlp_w2
        return np.stack([first, fm.astype(np.float64), mlp.astype(np.float64)], axis=1)

    def _mix(self, parts: np.ndarray) -> np.ndarray:
        """Normalised mix of the three parts; the logit is bias + scale * mix."""
        weights = (_FIRST_ORDER_WEIGHT, self.setting.fm_weight, self.setting.mlp_weight)
        return (parts - self.part_mean) / self.part_std @ np.asarray(weights)

    def _calibrate(self) -> None:
        """Fix numeric normalisers, part scales, global scale and bias on a seeded sample."""
        x = self.sample(np.random.default_rng([self.seed, _CALIB_TAG, 0]), _CALIB_ROWS)
        logs = np.log1p(np.maximum(x.num_vals, 0)).astype(np.float64)
        logs = np.where(x.num_missing, np.nan, logs)
        self.num_mean = np.nanmean(logs, axis=0)
        self.num_std = np.maximum(np.nanstd(logs, axis=0), 1e-6)
        parts = self._parts(x)
        self.part_mean = parts.mean(axis=0)
        self.part_std = np.maximum(parts.std(axis=0), 1e-12)
        z = np.sort(self._mix(parts))  # AUC only needs the order, which scale/bias keep

        def bias_for(c: float) -> float:
            # Safeguarded Newton: mean sigmoid is increasing in the bias.
            lo, hi, b = -40.0, 40.0, float(np.log(TARGET_CTR / (1 - TARGET_CTR)))
            for _ in range(100):
                p = sigmoid(b + c * z)
                err = p.mean() - TARGET_CTR
                if abs(err) < 1e-12:
                    break
                lo, hi = (lo, b) if err > 0 else (b, hi)
                step = b - err / max(float((p * (1 - p)).mean()), 1e-300)
                b = step if lo < step < hi else 0.5 * (lo + hi)
            return b

        def auc_for(c: float) -> float:
            p = sigmoid(bias_for(c) + c * z)
            neg = 1.0 - p
            below = np.cumsum(neg) - neg  # expected negatives ranked below each row
            return float((p * below).sum() / (p.sum() * neg.sum()))

        lo, hi = np.log(1e-3), np.log(50.0)
        for _ in range(40):  # AUC rises with the scale, so bisect on log-scale
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if auc_for(float(np.exp(mid))) < self.setting.bayes_auc else (lo, mid)
        self.scale = float(np.exp(0.5 * (lo + hi)))
        self.bias = bias_for(self.scale)

    def p_true(self, x: _Features) -> np.ndarray:
        return sigmoid(self.bias + self.scale * self._mix(self._parts(x)))

    # ---- days ---------------------------------------------------------------------------
    def day(self, k: int) -> _World:
        """This world as it is on day k (1: itself): churned values and parameters, shifted
        bias. The teacher's normalisers stay those of day 1, so only the listed things move."""
        if k == 1:
            return self
        world = copy.copy(self)  # shares the unchanged arrays; the churned ones are replaced
        world.cat_w, world.cat_v = self.cat_w.copy(), self.cat_v.copy()
        world.vocabs = list(self.vocabs)
        world.bias = self.bias + DAY_BIAS_SHIFT * (k - 1)
        world.block_tag = _BLOCK_TAG + (k - 1) * _DAY_STRIDE
        for f in range(NUM_CATEGORICAL):
            o, c = int(self.offsets[f]), int(self.cards[f])
            if c < CHURN_MIN_CARD:
                continue
            generation = np.zeros(c, dtype=np.int64)
            for d in range(2, k + 1):
                rng = np.random.default_rng([self.seed, _DAY_TAG + d, f])
                slots = np.flatnonzero(rng.random(c) < DAY_CHURN)
                generation[slots] = d - 1
                # A new value keeps its slot's scale (how much the teacher listens to that
                # frequency rank) but gets its own direction: what it does is new.
                w_new = rng.standard_normal(slots.size).astype(np.float32)
                v_new = rng.standard_normal((slots.size, EMBED_DIM)).astype(np.float32)
                world.cat_w[o + slots] = w_new * self._slot_scale[o + slots]
                world.cat_v[o + slots] = v_new * (self._slot_scale[o + slots] / np.sqrt(EMBED_DIM))[:, None]
            world.vocabs[f] = _hex_vocab(self.seed, f, c, generation)
        return world

    # ---- blocks -------------------------------------------------------------------------
    block_tag = _BLOCK_TAG

    def block(self, b: int) -> tuple[pa.Table, np.ndarray]:
        """Block b, always generated whole (BLOCK_ROWS rows) so it never depends on rows."""
        x = self.sample(np.random.default_rng([self.seed, self.block_tag, b]), BLOCK_ROWS)
        p = self.p_true(x)
        label = (x.label_u < p).astype(np.int64)
        cols: list[pa.Array] = [pa.array(label, type=pa.int64())]
        for j in range(NUM_NUMERIC):
            cols.append(pa.array(x.num_vals[:, j], type=pa.int64(), mask=x.num_missing[:, j]))
        for f in range(NUM_CATEGORICAL):
            # Null indices make `take` emit nulls, which the CSV writer prints as empty fields.
            idx = pa.array(x.cat_idx[:, f].astype(np.int32), mask=x.cat_missing[:, f])
            cols.append(self.vocabs[f].take(idx))
        return pa.Table.from_arrays(cols, schema=_SCHEMA), p


@functools.lru_cache(maxsize=2)
def _base_world(seed: int, setting: SynthSetting = SETTINGS["criteo"]) -> _World:
    return _World(seed, setting)


@functools.lru_cache(maxsize=2)
def _world(seed: int, day: int = 1, setting: SynthSetting = SETTINGS["criteo"]) -> _World:
    return _base_world(seed, setting).day(day)


def _resolve(setting: SynthSetting | str) -> SynthSetting:
    return get_setting(setting) if isinstance(setting, str) else setting


def _check_args(rows: int, seed: int, day: int = 1) -> None:
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not isinstance(day, int) or day < 1:
        raise ValueError(f"day must be an integer >= 1, got {day!r}")


def _iter_chunks(
    rows: int, seed: int, chunk_rows: int, day: int = 1, setting: SynthSetting = SETTINGS["criteo"]
) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """Yield (table, p_true) for consecutive row ranges of at most chunk_rows rows."""
    world = _world(seed, day, setting)
    cached_b, cached = -1, None
    for start in range(0, rows, chunk_rows):
        stop = min(rows, start + chunk_rows)
        tables, probs = [], []
        for b in range(start // BLOCK_ROWS, (stop - 1) // BLOCK_ROWS + 1):
            if b != cached_b:  # keep one block so small chunks don't regenerate it
                cached_b, cached = b, world.block(b)
            lo = max(start, b * BLOCK_ROWS) - b * BLOCK_ROWS
            hi = min(stop, (b + 1) * BLOCK_ROWS) - b * BLOCK_ROWS
            tables.append(cached[0].slice(lo, hi - lo))
            probs.append(cached[1][lo:hi])
        chunk = (pa.concat_tables(tables), np.concatenate(probs))
        del tables, probs
        yield chunk
        # Release our reference before building the next chunk, so at most one is alive.
        chunk = None


def generate_table(
    rows: int, seed: int = 0, day: int = 1, setting: SynthSetting | str = "criteo"
) -> tuple[pa.Table, np.ndarray]:
    """Return (table with the 40 Criteo columns, p_true float64 array of shape (rows,)) of
    simulated day ``day`` under a generator setting (see the module docstring)."""
    _check_args(rows, seed, day)
    setting = _resolve(setting)
    if rows == 0:
        return _SCHEMA.empty_table(), np.empty(0, dtype=np.float64)
    parts = list(_iter_chunks(rows, seed, BLOCK_ROWS, day, setting))
    table = pa.concat_tables([t for t, _ in parts]).combine_chunks()
    return table, np.concatenate([p for _, p in parts])


def truth_path_for(out: str | Path) -> Path:
    """``data/train.txt`` -> ``data/train.truth.csv``."""
    return Path(out).with_suffix(".truth.csv")


def write_synth(
    rows: int, out: str | Path, seed: int = 0, chunk_rows: int = 1_000_000, day: int = 1,
    setting: SynthSetting | str = "criteo", header: bool = False,
) -> SynthResult:
    """Write a tab-separated file in Criteo's raw layout plus `<out minus suffix>.truth.csv`
    (one column with header `p_true`, one line per row, same order). Generates in chunks of
    chunk_rows so 45M rows fit in bounded memory; the result must not depend on chunk_rows.
    ``day``: the simulated day (1 = no drift; see the module docstring). ``setting``: the
    generator's knobs (a name from SETTINGS or a SynthSetting). ``header``: start with the
    line ``label I1 .. C26`` (tab-separated), so the file can be read without a schema;
    without it the file is headerless, like Criteo's train.txt."""
    _check_args(rows, seed, day)
    setting = _resolve(setting)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    path = Path(out)
    truth = truth_path_for(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write to temporaries and rename at the end so a crash never leaves a plausible-looking
    # truncated data set behind.
    tmp_path = path.with_name(path.name + ".partial")
    tmp_truth = truth.with_name(truth.name + ".partial")
    data_opts = pacsv.WriteOptions(include_header=header, delimiter="\t", quoting_style="none",
                                   quoting_header="none", batch_size=BLOCK_ROWS)
    truth_opts = pacsv.WriteOptions(include_header=True, quoting_style="none",
                                    quoting_header="none", batch_size=BLOCK_ROWS)
    truth_schema = pa.schema([pa.field("p_true", pa.float64())])
    t0 = time.perf_counter()
    positives = 0
    written = 0
    try:
        with pacsv.CSVWriter(str(tmp_path), _SCHEMA, write_options=data_opts) as data_w, \
                pacsv.CSVWriter(str(tmp_truth), truth_schema, write_options=truth_opts) as truth_w:
            for table, p in _iter_chunks(rows, seed, chunk_rows, day, setting):
                data_w.write_table(table)
                truth_w.write_table(pa.table({"p_true": p}, schema=truth_schema))
                positives += int(pc.sum(table.column("label")).as_py() or 0)
                written += table.num_rows
                del table, p  # free this chunk before the next one is generated
                logger.info("synth: %d/%d rows written (%.1fs)", written, rows,
                            time.perf_counter() - t0)
        os.replace(tmp_path, path)
        os.replace(tmp_truth, truth)
    finally:
        for leftover in (tmp_path, tmp_truth):
            if leftover.exists():
                leftover.unlink()
    rate = positives / rows if rows else 0.0
    logger.info("synth: wrote %d rows to %s (positive rate %.4f) in %.1fs", rows, path, rate,
                time.perf_counter() - t0)
    return SynthResult(path=path, truth_path=truth, rows=rows, positive_rate=rate, setting=setting)


def _teacher_value_norms(field: str, seed: int = 0, setting: SynthSetting | str = "criteo") -> np.ndarray:
    """Norm of each value's hidden parameters (weight and vector) of categorical ``field``,
    indexed by frequency rank. Internal: lets tests check the signal sits in frequent values."""
    f = [s.name for s in CATEGORICAL_SPECS].index(field)
    world = _world(seed, 1, _resolve(setting))
    o, c = int(world.offsets[f]), int(world.cards[f])
    w = world.cat_w[o:o + c].astype(np.float64)
    v = world.cat_v[o:o + c].astype(np.float64)
    return np.sqrt(w * w + (v * v).sum(axis=1))

