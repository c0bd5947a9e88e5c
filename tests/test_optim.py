"""RowAdam against torch's own Adam: same maths on the rows a batch touched, nothing else moves."""

import pytest
import torch

from deepfm.model.optim import RowAdam, deterministic


def test_row_adam_equals_dense_adam_when_every_row_is_touched() -> None:
    torch.manual_seed(0)
    w_row = torch.randn(6, 3)
    w_dense = torch.nn.Parameter(w_row.clone())
    dense = torch.optim.Adam([w_dense], lr=0.01)
    opt = RowAdam(w_row, lr=0.01)
    for _ in range(5):
        # Every row appears, some twice: occurrences of a row must be summed.
        ids = torch.tensor([0, 1, 2, 3, 4, 5, 2, 4])
        grads = torch.randn(len(ids), 3)
        opt.step(ids, grads)
        dense_grad = torch.zeros(6, 3).index_add_(0, ids, grads)
        w_dense.grad = dense_grad
        dense.step()
    torch.testing.assert_close(w_row, w_dense.detach(), rtol=1e-6, atol=1e-7)


def test_row_adam_leaves_untouched_rows_and_their_moments_alone() -> None:
    torch.manual_seed(1)
    w = torch.randn(10, 4)
    before = w.clone()
    opt = RowAdam(w, lr=0.1)
    ids = torch.tensor([1, 3, 3, 7])
    opt.step(ids, torch.randn(4, 4))
    touched = torch.zeros(10, dtype=torch.bool)
    touched[ids] = True
    assert torch.equal(w[~touched], before[~touched])
    assert not torch.equal(w[touched], before[touched])
    assert torch.all(opt.exp_avg[~touched] == 0) and torch.all(opt.exp_avg_sq[~touched] == 0)


def test_row_adam_l2_is_the_gradient_of_the_penalty() -> None:
    """With zero loss gradient, L2 alone shrinks the rows used, as l2 * sum(rows^2) / B would."""
    w = torch.ones(3, 2)
    ref = torch.nn.Parameter(torch.ones(3, 2))
    opt = RowAdam(w, lr=0.05, l2=0.5)
    dense = torch.optim.Adam([ref], lr=0.05)
    ids = torch.tensor([0, 0, 2])
    opt.step(ids, torch.zeros(3, 2), rows=w[ids].clone(), batch_size=4)
    penalty = 0.5 * ref[ids].square().sum() / 4
    penalty.backward()
    dense.step()
    torch.testing.assert_close(w, ref.detach())
    assert torch.equal(w[1], torch.ones(2))


def test_distinct_ids_by_marking_equal_torch_unique() -> None:
    """Small tables find distinct ids by mark-and-scan instead of sorting: same answer, and
    the marks are cleared for the next step."""
    torch.manual_seed(2)
    opt = RowAdam(torch.randn(20, 3))
    for _ in range(5):
        ids = torch.randint(0, 20, (16,))  # 20 rows <= 16 x 16 ids: the marking path
        expected = torch.unique(ids, return_inverse=True)
        got = opt._unique(ids)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
        assert opt._seen is not None and not opt._seen.any()


@pytest.mark.parametrize("on, warn_only", [(False, False), (True, True), (True, False)])
def test_deterministic_block_puts_the_callers_settings_back(on: bool, warn_only: bool) -> None:
    """RowAdam's CUDA sum runs inside this block; the settings must survive it, also when
    the block raises."""
    saved = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        torch.use_deterministic_algorithms(on, warn_only=warn_only)
        with deterministic():
            assert (
                torch.are_deterministic_algorithms_enabled()
                and not torch.is_deterministic_algorithms_warn_only_enabled()
            )
        assert (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        ) == (on, warn_only)
        with pytest.raises(RuntimeError, match="inside"), deterministic():
            raise RuntimeError("inside")
        assert (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        ) == (on, warn_only)
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
