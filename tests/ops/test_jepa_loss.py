"""jepa.ops.jepa_loss against a float64 hand implementation, forward and backward."""

from __future__ import annotations

import pytest
import torch

from jepa.ops import BackendUnavailableError, jepa_loss, use_backend
from oracles import jepa_loss_hand64 as _hand


@pytest.mark.parametrize("loss", ["smooth_l1", "mse", "l1"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("use_mask", [False, True])
def test_forward_matches_float64_hand_reference(loss, reduction, use_mask):
    pred = torch.randn(3, 7, 13)
    target = torch.randn(3, 7, 13) * 3 + 1
    mask = torch.rand(3, 7) > 0.4 if use_mask else None
    out = jepa_loss(pred, target, loss=loss, beta=0.7, mask=mask, reduction=reduction)
    ref = _hand(pred, target, loss, True, 0.7, mask, reduction)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    rel = (out.double() - ref).norm() / ref.norm()
    assert rel <= 1e-5


def test_masked_mean_is_mean_over_selected_tokens_and_features():
    pred, target = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    mask = torch.tensor([[True, False, False, True, False], [False, False, True, False, False]])
    out = jepa_loss(pred, target, loss="mse", normalize_target=False, mask=mask)
    expected = ((pred[mask] - target[mask]) ** 2).mean()
    assert out.item() == pytest.approx(expected.item(), rel=1e-6)
    # no token selected: 0, not NaN
    empty = jepa_loss(pred, target, mask=torch.zeros(2, 5, dtype=torch.bool))
    assert empty.item() == 0.0


@pytest.mark.parametrize("loss", ["smooth_l1", "mse", "l1"])
@pytest.mark.parametrize("use_mask", [False, True])
def test_gradcheck_float64(loss, use_mask):
    pred = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, False, True], [True, True, False]]) if use_mask else None
    assert torch.autograd.gradcheck(lambda p, t: jepa_loss(p, t, loss=loss, beta=0.5, mask=mask), (pred, target))


def test_backward_matches_hand_reference():
    pred = torch.randn(4, 9, 11, requires_grad=True)
    target = torch.randn(4, 9, 11)
    jepa_loss(pred, target).backward()
    p64 = pred.detach().double().requires_grad_()
    _hand(p64, target, "smooth_l1", True, 1.0, None, "mean").backward()
    assert ((pred.grad.double() - p64.grad).norm() / p64.grad.norm()) <= 1e-5


def test_input_validation_names_argument():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="target shape"):
        jepa_loss(x, torch.randn(2, 4))
    with pytest.raises(TypeError, match="pred must be a floating-point"):
        jepa_loss(torch.ones(2, 3, dtype=torch.long), x)
    with pytest.raises(ValueError, match="loss must be one of .* got 'huber'"):
        jepa_loss(x, x, loss="huber")
    with pytest.raises(ValueError, match="reduction must be one of"):
        jepa_loss(x, x, reduction="avg")
    with pytest.raises(ValueError, match="beta must be > 0"):
        jepa_loss(x, x, beta=0.0)
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        jepa_loss(x, x, mask=torch.ones(2))
    with pytest.raises(ValueError, match=r"mask must have shape pred.shape\[:-1\]=\(2,\)"):
        jepa_loss(x, x, mask=torch.ones(3, dtype=torch.bool))


@pytest.mark.parametrize("backend", ["cuda", "cpp"])
def test_backend_without_jepa_loss_raises_per_op_and_is_skipped_globally(backend):
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    with use_backend(jepa_loss=backend), pytest.raises(BackendUnavailableError, match=f"'{backend}' does not implement jepa_loss"):
        jepa_loss(x, y)
    with use_backend(backend):  # a global setting applies to the ops that have the backend: here auto runs
        assert torch.allclose(jepa_loss(x, y), _hand(x, y, "smooth_l1", True, 1.0, None, "mean").float())
    with use_backend("torch"):
        assert torch.isfinite(jepa_loss(x, x))
