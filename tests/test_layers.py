"""layers.py against the formulas: brute-force pairwise FM, hand-built field vectors, DCN cross."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfm.model.layers import MLP, CrossNetwork, FieldEmbedding, fm_pairwise

from helpers import brute_pairwise, hand_field_vectors, random_inputs


@pytest.mark.parametrize("shape", [(7, 5, 3), (4, 2, 8), (3, 13, 1), (1, 40, 4)])
def test_fm_pairwise_equals_brute_force(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    v = rng.normal(size=shape)
    got = fm_pairwise(torch.from_numpy(v))
    assert got.shape == (shape[0],)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), brute_pairwise(v), rtol=1e-10, atol=1e-12)


def test_fm_pairwise_single_field_is_zero() -> None:
    v = torch.randn(5, 1, 4, dtype=torch.float64)
    assert torch.all(fm_pairwise(v) == 0)


def test_field_embedding_matches_hand_computation() -> None:
    rng = np.random.default_rng(0)
    n_rows, dim, s, scaled, poolings = 50, 3, 4, [1, 3], ["mean", "sum"]
    emb = FieldEmbedding(n_rows, dim, scaled, poolings, init_std=0.5).double()
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(rng.normal(size=(n_rows, dim + 1))))
    ids, values, bags = random_inputs(rng, 6, n_rows, s, scaled, 2)
    e = emb(
        torch.from_numpy(ids),
        torch.from_numpy(values),
        [(torch.from_numpy(o), torch.from_numpy(f)) for o, f, _ in bags],
    )
    assert e.shape == (6, s + 2, dim + 1)
    want = hand_field_vectors(emb.weight.detach().numpy(), ids, values, bags, scaled, poolings)
    np.testing.assert_allclose(e.detach().numpy(), want, rtol=1e-12, atol=1e-12)
    # And the pairwise term over those vectors is the brute-force one.
    np.testing.assert_allclose(fm_pairwise(e[..., :dim]).detach().numpy(), brute_pairwise(want[..., :dim]), rtol=1e-10)


def test_field_embedding_init_first_order_zero() -> None:
    emb = FieldEmbedding(20, 4, [], [], init_std=0.01)
    w = emb.weight.detach()
    assert torch.all(w[:, 4] == 0)
    assert w[:, :4].std() > 0


def test_cross_network_formula() -> None:
    torch.manual_seed(0)
    d, layers = 6, 3
    net = CrossNetwork(d, layers).double()
    with torch.no_grad():
        for b in net.b:
            b.copy_(torch.randn(d, dtype=torch.float64))
    x0 = np.random.default_rng(1).normal(size=(5, d))
    x = x0.copy()
    for w, b in zip(net.w, net.b):
        w_np, b_np = w.detach().numpy(), b.detach().numpy()
        x = x0 * (x @ w_np)[:, None] + b_np + x  # x_{l+1} = x0 * (x_l . w) + b + x_l
    got = net(torch.from_numpy(x0)).detach().numpy()
    np.testing.assert_allclose(got, x, rtol=1e-12, atol=1e-12)


def test_mlp_matches_matrix_multiplies() -> None:
    torch.manual_seed(3)
    mlp = MLP(7, [5, 4], activation="tanh", dropout=0.0).double().eval()
    x = np.random.default_rng(2).normal(size=(3, 7))
    linears = [m for m in mlp.net if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3
    h = x
    for lin in linears[:-1]:
        h = np.tanh(h @ lin.weight.detach().numpy().T + lin.bias.detach().numpy())
    h = h @ linears[-1].weight.detach().numpy().T + linears[-1].bias.detach().numpy()
    got = mlp(torch.from_numpy(x))
    assert got.shape == (3,)
    np.testing.assert_allclose(got.detach().numpy(), h[:, 0], rtol=1e-12)
