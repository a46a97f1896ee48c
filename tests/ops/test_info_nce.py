"""jepa.ops.info_nce against a float64 hand implementation, forward and backward."""

from __future__ import annotations

import math

import pytest
import torch

from jepa.ops import BackendUnavailableError, info_nce, info_nce_reference, use_backend


def _hand(a, b, temperature, symmetric):
    """Float64 InfoNCE written from the definition, with Python loops over rows."""
    a, b = a.double(), b.double()
    a = a / a.norm(dim=1, keepdim=True)
    b = b / b.norm(dim=1, keepdim=True)
    s = a @ b.T / temperature
    n = s.shape[0]

    def ce(m):
        total = 0.0
        for i in range(n):
            total = total + (torch.log(torch.exp(m[i]).sum()) - m[i, i])
        return total / n

    return 0.5 * (ce(s) + ce(s.T)) if symmetric else ce(s)


@pytest.mark.parametrize("n,d", [(1, 3), (5, 7), (13, 33)])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("temperature", [0.07, 1.0])
def test_forward_matches_float64_hand_reference(n, d, symmetric, temperature):
    a, b = torch.randn(n, d) * 2, torch.randn(n, d) + 0.5
    out = info_nce(a, b, temperature=temperature, symmetric=symmetric)
    ref = _hand(a, b, temperature, symmetric)
    assert out.dtype == torch.float32 and out.dim() == 0
    assert abs(out.double().item() - ref.item()) <= 1e-5 * max(1.0, abs(ref.item()))


def test_tiny_example_by_hand():
    # orthonormal rows: s = I / t, each row's loss = log(e^{1/t} + (n-1)) - 1/t
    a = torch.eye(3)
    t = 0.5
    expected = math.log(math.exp(2.0) + 2.0) - 2.0
    assert info_nce(a, a.clone(), temperature=t).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("symmetric", [False, True])
def test_gradcheck_float64(symmetric):
    a = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: info_nce(x, y, temperature=0.3, symmetric=symmetric), (a, b))


def test_backward_matches_hand_reference():
    a = torch.randn(7, 11, requires_grad=True)
    b = torch.randn(7, 11, requires_grad=True)
    info_nce(a, b, temperature=0.2, symmetric=True).backward()
    a64 = a.detach().double().requires_grad_()
    b64 = b.detach().double().requires_grad_()
    _hand(a64, b64, 0.2, True).backward()
    for g, g64 in ((a.grad, a64.grad), (b.grad, b64.grad)):
        assert ((g.double() - g64).norm() / g64.norm()) <= 1e-5


def test_input_validation_names_argument():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"a must be \(N, D\)"):
        info_nce(torch.randn(4), torch.randn(4))
    with pytest.raises(ValueError, match="b must have the shape of a"):
        info_nce(x, torch.randn(5, 3))
    with pytest.raises(TypeError, match="share a dtype"):
        info_nce(x, x.double())
    with pytest.raises(TypeError, match="a must be a floating-point"):
        info_nce(x.long(), x)
    with pytest.raises(ValueError, match="temperature must be a number > 0, got 0"):
        info_nce(x, x, temperature=0)


@pytest.mark.parametrize("backend", ["cuda", "cpp"])
def test_backend_without_info_nce_raises_per_op_and_is_skipped_globally(backend):
    x = torch.randn(3, 2)
    with use_backend(info_nce=backend), pytest.raises(BackendUnavailableError, match=f"'{backend}' does not implement info_nce"):
        info_nce(x, x)
    with use_backend(backend):  # a global setting applies to the ops that have the backend: here auto runs
        assert torch.allclose(info_nce(x, x), info_nce_reference(x, x))
