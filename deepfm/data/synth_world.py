"""The synthetic click generator's world: everything fixed by the seed, the day and the setting
(vocabularies, Zipf frequencies, the teacher that gives each row its true click probability),
and the row blocks it draws. :mod:`deepfm.data.synth` describes the generator and writes files.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from deepfm.data.schema import CRITEO_COLUMNS as SCHEMA_COLUMNS
from deepfm.data.synth_settings import SETTINGS, SynthSetting
from deepfm.util.maths import sigmoid

logger = logging.getLogger(__name__)

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

SCHEMA = pa.schema(
    [pa.field("label", pa.int64())]
    + [pa.field(s.name, pa.int64()) for s in NUMERIC_SPECS]
    + [pa.field(s.name, pa.string()) for s in CATEGORICAL_SPECS]
)


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


class World:
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
            seed,
            time.perf_counter() - t0,
            self.scale,
            self.bias,
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
        vals[:, i2] = np.where(neg_u < 0.001, -3, np.where(neg_u < 0.004, -2, np.where(neg_u < 0.044, -1, vals[:, i2])))

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
            scale[o : o + c] = _rank_scale(np.arange(c, dtype=np.float64)) * cat_importance[f]
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
    def day(self, k: int) -> World:
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
        return pa.Table.from_arrays(cols, schema=SCHEMA), p


@functools.lru_cache(maxsize=2)
def _base_world(seed: int, setting: SynthSetting = SETTINGS["criteo"]) -> World:
    return World(seed, setting)


@functools.lru_cache(maxsize=2)
def world_for(seed: int, day: int = 1, setting: SynthSetting = SETTINGS["criteo"]) -> World:
    return _base_world(seed, setting).day(day)
