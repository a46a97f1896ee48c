"""jepa.ops.sigreg: the torch reference against the formula written out by hand, its gradients, the
statistic's behaviour on Gaussian and collapsed samples, dtypes, dispatch and bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

import jepa.ops as ops
from jepa.ops import BackendUnavailableError, use_backend
from jepa.ops.sigreg import sigreg_weights


def _hand(z, a, t_max, knots):
    """SIGReg from the issue's formula with Python loops and the math module (float64, tiny sizes)."""
    z, a = z.tolist(), a.tolist()
    n, d, m_count = len(z), len(a), len(a[0])
    dt = t_max / (knots - 1)
    total = 0.0
    for m in range(m_count):
        x = [sum(z[i][j] * a[j][m] for j in range(d)) for i in range(n)]
        ep = 0.0
        for k in range(knots):
            t = k * dt
            phi = math.exp(-t * t / 2)
            w = phi * (dt if k in (0, knots - 1) else 2 * dt)
            mean_cos = sum(math.cos(t * xi) for xi in x) / n
            mean_sin = sum(math.sin(t * xi) for xi in x) / n
            ep += w * ((mean_cos - phi) ** 2 + mean_sin**2)
        total += n * ep
    return total / m_count


def _unit_columns(d, m, gen, dtype=torch.float64):
    a = torch.randn(d, m, generator=gen, dtype=torch.float64)
    return (a / a.norm(dim=0)).to(dtype)


def _rel(out, ref):
    out, ref = out.double(), ref.double()
    assert not torch.isnan(out).any(), "NaN in the output"
    return ((out - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("n, d, m, t_max, knots", [(5, 3, 4, 3.0, 17), (7, 5, 3, 2.0, 5), (1, 2, 1, 3.0, 2), (9, 1, 6, 4.5, 9)])
def test_reference_matches_the_formula_by_hand(n, d, m, t_max, knots):
    gen = torch.Generator().manual_seed(n * 100 + d * 10 + m)
    z = torch.randn(n, d, generator=gen, dtype=torch.float64) * 1.4 + 0.3
    a = _unit_columns(d, m, gen)
    expected = _hand(z, a, t_max, knots)
    assert ops.sigreg_reference(z, a, t_max, knots).item() == pytest.approx(expected, rel=1e-12, abs=1e-14)
    assert ops.sigreg(z, a, t_max=t_max, knots=knots).item() == pytest.approx(expected, rel=1e-12, abs=1e-14)


def test_weights_are_phi_times_the_doubled_trapezoid_rule():
    t, phi, w = sigreg_weights(2.0, 3, dtype=torch.float64)
    assert t.tolist() == [0.0, 1.0, 2.0]
    assert phi.tolist() == pytest.approx([1.0, math.exp(-0.5), math.exp(-2.0)], rel=1e-15)
    assert w.tolist() == pytest.approx([1.0, 2.0 * math.exp(-0.5), math.exp(-2.0)], rel=1e-15)


def test_more_knots_converge_to_the_same_integral():
    """The weights are a quadrature of N * int |ecf(t) - phi(t)|^2 phi(t) dt over the real line: refining
    the grid changes the value only by the quadrature error."""
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(300, 8, generator=gen, dtype=torch.float64) * 1.3
    a = _unit_columns(8, 16, gen)
    coarse, fine = ops.sigreg(z, a, knots=17), ops.sigreg(z, a, knots=401)
    assert coarse.item() == pytest.approx(fine.item(), rel=1e-4)


def test_gaussian_samples_score_near_the_null_expectation_and_collapse_scores_high():
    """Under the null, E[N |ecf(t) - phi(t)|^2] = Var cos(tX) + Var sin(tX) = 1 - phi(t)^2 for every N,
    so E[EP] = sum_k w_k (1 - phi_k^2) (about 1.05); departures grow with N."""
    _, phi, w = sigreg_weights(3.0, 17, dtype=torch.float64)
    null = float((w * (1 - phi**2)).sum())
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(1000, 16, generator=gen, dtype=torch.float64)
    a = _unit_columns(16, 256, gen)
    assert 0.5 * null < ops.sigreg(z, a).item() < 2.0 * null
    assert ops.sigreg(z[:1].expand(1000, 16), a).item() > 500 * null  # collapsed to one point
    assert ops.sigreg(2.0 * z, a).item() > 100 * null  # wrong scale
    assert ops.sigreg(z * (torch.arange(16) < 2), a).item() > 100 * null  # rank 2 of 16
    assert ops.sigreg(z + 1.0, a).item() > 100 * null  # shifted mean


def test_sigreg_is_the_statistic_of_its_ecf_and_permutation_invariant():
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(13, 6, generator=gen, dtype=torch.float64)
    a = _unit_columns(6, 5, gen)
    ecf = ops.sigreg_ecf(z, a, t_max=2.5, knots=7)
    assert ecf.shape == (2, 5, 7)
    x = z @ a
    t = torch.linspace(0, 2.5, 7, dtype=torch.float64)
    assert torch.allclose(ecf[0], torch.cos(x[:, :, None] * t).mean(0), rtol=0, atol=1e-15)
    assert torch.allclose(ecf[1], torch.sin(x[:, :, None] * t).mean(0), rtol=0, atol=1e-15)
    value = ops.sigreg(z, a, t_max=2.5, knots=7)
    assert ops.sigreg_from_ecf(ecf, 13, t_max=2.5).item() == pytest.approx(value.item(), rel=1e-14)
    assert ops.sigreg_from_ecf(ecf, torch.tensor(13.0, dtype=torch.float64), t_max=2.5).item() == pytest.approx(
        value.item(), rel=1e-14
    )
    perm = torch.randperm(13, generator=gen)
    assert ops.sigreg(z[perm], a, t_max=2.5, knots=7).item() == pytest.approx(value.item(), rel=1e-13)


def test_gradcheck_float64_public_op_and_custom_op_analytic_backward():
    gen = torch.Generator().manual_seed(7)
    z = (torch.randn(7, 5, generator=gen, dtype=torch.float64) * 1.2).requires_grad_(True)
    a = _unit_columns(5, 3, gen).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, y: ops.sigreg(x, y, t_max=3.0, knots=9), (z, a))
    # the custom op's torch backward is the analytic formula (what the Triton backward computes)
    op = torch.ops.jepa.sigreg_ecf
    assert torch.autograd.gradcheck(lambda x, y: op(x, y, 3.0, 9, "torch"), (z, a))
    assert torch.autograd.gradgradcheck(lambda x: ops.sigreg(x, a.detach(), knots=5), (z,))


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2), (torch.float16, 1e-2)], ids=str)
def test_torch_path_dtypes_against_float64(dtype, tol):
    gen = torch.Generator().manual_seed(11)
    z = (torch.randn(45, 21, generator=gen) * 1.5 + 0.2).to(dtype).requires_grad_(True)
    a = _unit_columns(21, 13, gen, torch.float32)
    out = ops.sigreg(z, a)
    assert out.dtype == torch.float32 and out.dim() == 0
    out.backward()
    assert z.grad.dtype == dtype
    z64 = z.detach().double().requires_grad_(True)
    ref = ops.sigreg_reference(z64, a.double())
    ref.backward()
    assert _rel(out, ref) <= tol
    assert _rel(z.grad, z64.grad) <= tol


def test_float64_input_gives_float64():
    z = torch.randn(4, 3, dtype=torch.float64)
    a = torch.randn(3, 2)
    assert ops.sigreg(z, a).dtype == torch.float64
    assert ops.sigreg_ecf(z, a).dtype == torch.float64


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: (torch.randn(4, 3).tolist(), torch.randn(3, 2), {}), TypeError, "z must be a tensor"),
        (lambda: (torch.randn(4, 3), "dirs", {}), TypeError, "directions must be a tensor"),
        (lambda: (torch.ones(4, 3, dtype=torch.long), torch.randn(3, 2), {}), TypeError, "z must be a floating-point"),
        (lambda: (torch.randn(4, 3), torch.ones(3, 2, dtype=torch.long), {}), TypeError, "directions must be a floating"),
        (lambda: (torch.randn(4, 3, 2), torch.randn(3, 2), {}), ValueError, r"z must be \(N, D\).*\(4, 3, 2\)"),
        (lambda: (torch.randn(0, 3), torch.randn(3, 2), {}), ValueError, r"N >= 1.*\(0, 3\)"),
        (lambda: (torch.randn(4, 3), torch.randn(5, 2), {}), ValueError,
         r"directions must be \(D, M\).*D = z.shape\[1\] = 3.*\(5, 2\)"),
        (lambda: (torch.randn(4, 3), torch.randn(3, 0), {}), ValueError, r"M >= 1.*\(3, 0\)"),
        (lambda: (torch.randn(4, 3), torch.randn(3), {}), ValueError, r"directions must be \(D, M\)"),
        (lambda: (torch.randn(4, 3), torch.randn(3, 2), {"t_max": 0.0}), ValueError,
         "t_max must be a finite number > 0, got 0.0"),
        (lambda: (torch.randn(4, 3), torch.randn(3, 2), {"t_max": float("inf")}), ValueError, "t_max .* got inf"),
        (lambda: (torch.randn(4, 3), torch.randn(3, 2), {"t_max": True}), ValueError, "t_max"),
        (lambda: (torch.randn(4, 3), torch.randn(3, 2), {"knots": 1}), ValueError, "knots must be an int >= 2, got 1"),
        (lambda: (torch.randn(4, 3), torch.randn(3, 2), {"knots": 17.0}), ValueError, "knots must be an int >= 2, got 17.0"),
    ],
)
def test_bad_inputs_name_the_argument(make, exc, match):
    z, a, kwargs = make()
    with pytest.raises(exc, match=match):
        ops.sigreg(z, a, **kwargs)
    with pytest.raises(exc, match=match):
        ops.sigreg_ecf(z, a, **kwargs)


@pytest.mark.parametrize(
    "ecf, n, match",
    [
        (torch.zeros(3, 4, 5), 2, r"ecf must be \(2, M, knots\).*\(3, 4, 5\)"),
        (torch.zeros(2, 4), 2, r"ecf must be \(2, M, knots\)"),
        (torch.zeros(2, 4, 1), 2, "knots must be an int >= 2, got 1"),
        (torch.zeros(2, 4, 5), 0, "num_samples must be an int >= 1 or a tensor, got 0"),
        (torch.zeros(2, 4, 5), torch.ones(2), r"num_samples must be a single number.*\(2,\)"),
    ],
)
def test_sigreg_from_ecf_bad_inputs(ecf, n, match):
    with pytest.raises(ValueError, match=match):
        ops.sigreg_from_ecf(ecf, n)
    with pytest.raises(TypeError, match="ecf must be a floating-point tensor"):
        ops.sigreg_from_ecf(torch.zeros(2, 4, 5, dtype=torch.long), 3)


def test_mixed_devices_refused():
    if not torch.cuda.is_available():
        meta = torch.empty(3, 2, device="meta")
        with pytest.raises(ValueError, match="z is on cpu but directions is on meta"):
            ops.sigreg(torch.randn(4, 3), meta)
    else:
        with pytest.raises(ValueError, match="expected one device"):
            ops.sigreg(torch.randn(4, 3), torch.randn(3, 2, device="cuda"))


@pytest.mark.parametrize("backend", ["cuda", "cpp"])
def test_per_op_unimplemented_backends_raise(backend):
    with use_backend(sigreg=backend), pytest.raises(BackendUnavailableError, match=f"backend '{backend}' does not implement sigreg"):
        ops.sigreg(torch.randn(4, 3), torch.randn(3, 2))


@pytest.mark.parametrize("backend", ["cuda", "cpp"])
def test_global_backend_sigreg_lacks_leaves_it_on_auto(backend):
    # The chooser's rule: a global backend applies only to the ops that implement it.
    gen = torch.Generator().manual_seed(5)
    z, a = torch.randn(7, 3, generator=gen), torch.randn(3, 2, generator=gen)
    with use_backend(backend):
        assert torch.equal(ops.sigreg(z, a), ops.sigreg_reference(z, a))


def test_forced_triton_on_cpu_without_the_interpreter_raises(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with use_backend("triton"), pytest.raises(BackendUnavailableError, match="triton"):
        ops.sigreg(torch.randn(4, 3), torch.randn(3, 2))


def test_auto_on_cpu_runs_the_reference():
    gen = torch.Generator().manual_seed(2)
    z, a = torch.randn(9, 4, generator=gen), torch.randn(4, 3, generator=gen)
    with use_backend("auto"):
        assert torch.equal(ops.sigreg(z, a), ops.sigreg_reference(z, a))


def test_torch_compile_fullgraph_matches_eager_on_the_torch_backend():
    gen = torch.Generator().manual_seed(4)
    z0 = torch.randn(17, 9, generator=gen)
    a = _unit_columns(9, 5, gen, torch.float32)

    def model(z):
        return ops.sigreg(z * 1.5, a, knots=9) * 2.0

    results = []
    with use_backend("torch"):
        for compiled in (False, True):
            z = z0.clone().requires_grad_(True)
            torch._dynamo.reset()
            fn = torch.compile(model, fullgraph=True, backend="aot_eager") if compiled else model
            out = fn(z)
            out.backward()
            results.append((out.detach(), z.grad))
    for eager, comp in zip(*results):
        assert torch.allclose(comp, eager, rtol=1e-5, atol=1e-6)


def test_autocast_does_not_lower_the_precision():
    """Under autocast the projection would otherwise run as a bfloat16 matmul (about 1e-2 off)."""
    gen = torch.Generator().manual_seed(15)
    z0 = torch.randn(40, 24, generator=gen)
    a = _unit_columns(24, 16, gen, torch.float32)
    grads = []
    for autocast in (False, True):
        z = z0.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = ops.sigreg(z, a)
        out.backward()
        assert out.dtype == torch.float32
        grads.append((out.detach(), z.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
