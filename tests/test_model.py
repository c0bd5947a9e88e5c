"""DeepFM and its ablations against logits computed by hand from the state dict."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfm.config import ModelConfig
from deepfm.data.encoded import Batch, DatasetWriter, EncodedChunk
from deepfm.model.deepfm import DeepFM, InputLayout

from helpers import brute_pairwise, hand_field_vectors, random_inputs

N_ROWS, DIM = 60, 3
SCALED = [0, 2]
POOLINGS = ["mean", "sum"]
LAYOUT = InputLayout(num_embeddings=N_ROWS, n_single=4, scaled_positions=tuple(SCALED), poolings=tuple(POOLINGS))


def make_model(kind: str, hidden: tuple[int, ...] = (6, 5), seed: int = 0) -> DeepFM:
    """A float64 model with every parameter random (bias and first-order weights too, which
    start at zero) so that no term can hide behind a zero."""
    torch.manual_seed(seed)
    model = DeepFM(
        LAYOUT, ModelConfig(kind=kind, embedding_dim=DIM, hidden=hidden, dropout=0.0, cross_layers=2)
    ).double()
    with torch.no_grad():
        model.embedding.weight.copy_(torch.randn(N_ROWS, DIM + 1, dtype=torch.float64) * 0.7)
        model.bias.fill_(0.37)
        if model.cross is not None:
            for b in model.cross.b:
                b.copy_(torch.randn_like(b))
    return model.eval()


def inputs(seed: int = 1, b: int = 8):
    rng = np.random.default_rng(seed)
    ids, values, bags = random_inputs(rng, b, N_ROWS, LAYOUT.n_single, SCALED, len(POOLINGS))
    batch = Batch(
        ids=torch.from_numpy(ids),
        values=torch.from_numpy(values),
        multi_hot=[(torch.from_numpy(o), torch.from_numpy(f)) for o, f, _ in bags],
        labels=None,
    )
    return ids, values, bags, batch


def hand_parts(model: DeepFM, ids, values, bags) -> dict[str, np.ndarray]:
    """bias, first order, pairwise and MLP (on the plain or DCN input) with explicit matmuls."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    e = hand_field_vectors(sd["embedding.weight"], ids, values, bags, SCALED, POOLINGS)
    v, w = e[..., :DIM], e[..., DIM]
    flat = v.reshape(v.shape[0], -1)  # field-major: [v_1 | v_2 | ... | v_F]
    parts = {"bias": np.full(ids.shape[0], sd["bias"][0]), "first": w.sum(axis=1), "pair": brute_pairwise(v)}
    if "cross.w.0" in sd:
        x = flat
        k = 0
        while f"cross.w.{k}" in sd:
            x = flat * (x @ sd[f"cross.w.{k}"])[:, None] + sd[f"cross.b.{k}"] + x
            k += 1
        assert k == 2
        flat = np.concatenate([x, flat], axis=1)
    linears = sorted({int(k.split(".")[2]) for k in sd if k.startswith("dnn.net.") and k.endswith(".weight")})
    if linears:
        h = flat
        for i in linears[:-1]:
            h = np.maximum(h @ sd[f"dnn.net.{i}.weight"].T + sd[f"dnn.net.{i}.bias"], 0.0)  # ReLU
        last = linears[-1]
        parts["mlp"] = (h @ sd[f"dnn.net.{last}.weight"].T + sd[f"dnn.net.{last}.bias"])[:, 0]
    return parts


def test_pairwise_part_through_embedding_and_model() -> None:
    """An FM model with zero bias and zero first-order weights returns exactly the pairwise
    term: Σ_{i<j} <x_i v_i, x_j v_j>, with scaled numerics x·v and pooled multi-hot vectors."""
    model = make_model("fm")
    with torch.no_grad():
        model.bias.zero_()
        model.embedding.weight[:, DIM] = 0.0
    ids, values, bags, batch = inputs()
    w = model.embedding.weight.detach().numpy()
    # Brute force straight from the table, written out without the shared helper.
    want = np.zeros(len(ids))
    for r in range(len(ids)):
        vecs = []
        for j in range(LAYOUT.n_single):
            x = values[r, SCALED.index(j)] if j in SCALED else 1.0
            vecs.append(x * w[ids[r, j], :DIM])
        for (offsets, flat, lens), mode in zip(bags, POOLINGS):
            rows = w[flat[offsets[r] : offsets[r] + lens[r]], :DIM]
            vecs.append(rows.mean(0) if mode == "mean" else rows.sum(0))
        assert len(vecs) == LAYOUT.n_fields
        want[r] = sum(float(vecs[i] @ vecs[j]) for i in range(len(vecs)) for j in range(i + 1, len(vecs)))
    got = model(batch).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_deepfm_full_logit_by_hand() -> None:
    model = make_model("deepfm")
    ids, values, bags, batch = inputs()
    p = hand_parts(model, ids, values, bags)
    want = p["bias"] + p["first"] + p["pair"] + p["mlp"]
    got = model(batch).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # every part matters at this scale (so the check above could not pass with one missing)
    for name in ("first", "pair", "mlp"):
        assert np.abs(p[name]).max() > 1e-3, name


@pytest.mark.parametrize(
    "kind, terms",
    [
        ("lr", ("bias", "first")),
        ("fm", ("bias", "first", "pair")),
        ("dnn", ("bias", "mlp")),
        ("wide_deep", ("bias", "first", "mlp")),
        ("dcn", ("bias", "mlp")),  # mlp over [cross(x0), x0]
    ],
)
def test_ablations_by_hand(kind: str, terms: tuple[str, ...]) -> None:
    model = make_model(kind)
    ids, values, bags, batch = inputs(seed=5)
    p = hand_parts(model, ids, values, bags)
    if kind in ("lr", "fm"):
        assert model.dnn is None and "mlp" not in p
    want = sum(p[t] for t in terms)
    got = model(batch).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # the terms left out really are left out: adding any of them changes the answer
    for extra in {"first", "pair", "mlp"} - set(terms):
        if extra in p:
            assert not np.allclose(got, want + p[extra]), extra


def test_dcn_uses_cross_network() -> None:
    model = make_model("dcn")
    assert model.cross is not None
    assert model.dnn is not None and model.dnn.net[0].in_features == 2 * LAYOUT.n_fields * DIM


def test_shapes_and_dtypes() -> None:
    torch.manual_seed(0)
    model = DeepFM(LAYOUT, ModelConfig(embedding_dim=4, hidden=(8,), dropout=0.0)).eval()
    _, _, _, batch = inputs(b=11)
    batch = Batch(batch.ids, batch.values.float(), batch.multi_hot, None)
    out = model(batch)
    assert out.shape == (11,)
    assert out.dtype == torch.float32
    assert batch.ids.dtype == torch.int64
    e = model.embedding(batch.ids, batch.values, batch.multi_hot)
    assert e.shape == (11, LAYOUT.n_fields, 5)
    assert torch.equal(model.head(e), out)  # the same batch through the same layers: bit for bit


def test_ids_stay_int64_through_dataset(tmp_path) -> None:
    """Ids beyond 2^24 (where float32 loses integers) survive the dataset files and batches."""
    n = 5
    big = (1 << 24) + np.arange(n * 2, dtype=np.int64).reshape(n, 2) * 3 + 1
    big[:, 1] += 1 << 40
    mh_offsets = np.array([0, 1, 3, 4, 6, 7], dtype=np.int64)
    mh_ids = (1 << 33) + np.arange(7, dtype=np.int64)
    chunk = EncodedChunk(
        ids=big,
        values=np.zeros((n, 0), dtype=np.float32),
        multi_hot=[(mh_offsets, mh_ids)],
        labels=np.array([0, 1, 0, 1, 1], dtype=np.float32),
    )
    w = DatasetWriter(tmp_path / "d", n_single=2, n_values=0, n_multi_hot=1)
    w.append(chunk)
    ds = w.close()
    for index in (slice(0, n), np.array([0, 2, 3])):
        b = ds.batch(index)
        assert b.ids.dtype == torch.int64
        assert np.array_equal(b.ids.numpy(), big[index])
        offsets, ids = b.multi_hot[0]
        assert offsets.dtype == torch.int64 and ids.dtype == torch.int64
    b = ds.batch(np.array([1, 4]))
    offsets, ids = b.multi_hot[0]
    assert offsets.tolist() == [0, 2]
    assert ids.tolist() == [int(mh_ids[1]), int(mh_ids[2]), int(mh_ids[6])]


@pytest.mark.parametrize("kind", ["lr", "fm", "dnn", "wide_deep", "dcn", "deepfm"])
def test_parts_are_the_terms_by_hand_and_add_up_to_the_logit(kind: str) -> None:
    """model.parts (what `deepfm explain` splits the logit into) holds each term of the
    formula, named, and nothing else; together they are the model's logit."""
    model = make_model(kind)
    ids, values, bags, batch = inputs(seed=9)
    hand = hand_parts(model, ids, values, bags)
    names = {"bias": "bias", "first_order": "first", "fm_pairs": "pair", "dnn": "mlp"}
    with torch.no_grad():
        parts = model.parts(model.embedding(batch.ids, batch.values, batch.multi_hot))
        logit = model(batch)
    cfg = model.config
    expected = (
        ["bias"] + ["first_order"] * cfg.uses_first_order + ["fm_pairs"] * cfg.uses_pairwise + ["dnn"] * cfg.uses_dnn
    )
    assert list(parts) == expected
    for name, part in parts.items():
        np.testing.assert_allclose(part.detach().numpy(), hand[names[name]], rtol=1e-10, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(sum(p.detach().numpy() for p in parts.values()), logit.numpy(), rtol=1e-12, atol=1e-12)
