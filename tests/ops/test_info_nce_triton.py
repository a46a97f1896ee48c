"""jepa.ops.info_nce: the Triton kernels (under TRITON_INTERPRET=1 on CPU) against a float64 reference,
forward and backward for both inputs; the custom op under torch.compile; dispatch and errors.

bfloat16 is not tested under the interpreter: its tl.dot mishandles bf16 (it runs on GPUs)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

import jepa.ops as ops  # noqa: E402
from jepa.ops import BackendUnavailableError, _backend, use_backend  # noqa: E402
from oracles import PoisonedTorch

if not _backend.triton_can_run(torch.empty(1, device="cuda" if torch.cuda.is_available() else "cpu")):
    pytest.skip("Triton cannot run here (no GPU and TRITON_INTERPRET is not set)", allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# float32: tl.dot runs tf32x3 on GPUs (about float32 accuracy); docs/guides/kernels.md ("How to add an op")
# allows 5e-4 where tf32 is used.
TOL = {torch.float32: 1e-5 if DEVICE == "cpu" else 5e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEVICE == "cuda" else [])


@pytest.fixture
def poisoned(monkeypatch):
    from jepa.kernels.triton import info_nce as kernels  # noqa: PLC0415

    monkeypatch.setattr(kernels, "torch", PoisonedTorch())


def _hand64(a, b, temperature, symmetric):
    """Float64 InfoNCE from the definition (explicit log-sum-exp, no F.cross_entropy)."""
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)
    s = a @ b.T / temperature
    rows = torch.logsumexp(s, dim=1) - s.diagonal()
    loss = rows.mean()
    if symmetric:
        loss = 0.5 * (loss + (torch.logsumexp(s, dim=0) - s.diagonal()).mean())
    return loss


def _check(out, ref, tol, *, scale=0.0):
    """||out - ref|| <= tol * max(||ref||, scale). ``scale`` is the size of the terms that cancel
    into ``ref`` (the logits are ~1/T): for N=1 the loss and the gradients are 0 in theory and only
    roundoff of those terms remains, which a pure relative error would not allow."""
    out, ref = out.double(), ref.double()
    assert not torch.isnan(out).any(), "NaN in the output"
    num, den = (out - ref).norm().item(), max(ref.norm().item(), scale)
    assert num <= tol * den, f"error {num:.3e} > {tol} x {den:.3e}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", [1, 17, 129])
@pytest.mark.parametrize("d", [33, 7])
@pytest.mark.parametrize("symmetric", [False, True], ids=["oneway", "symmetric"])
@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_triton_forward_and_backward_match_float64(poisoned, dtype, n, d, symmetric, temperature):
    gen = torch.Generator().manual_seed(n * 1000 + d * 10 + int(symmetric))
    a = (torch.randn(n, d, generator=gen) * 2).to(dtype).to(DEVICE).requires_grad_(True)
    b = (torch.randn(n, d, generator=gen) + 0.3).to(dtype).to(DEVICE).requires_grad_(True)
    with use_backend("triton"):
        out = ops.info_nce(a, b, temperature=temperature, symmetric=symmetric)
    a64 = a.detach().double().requires_grad_(True)
    b64 = b.detach().double().requires_grad_(True)
    ref = _hand64(a64, b64, temperature, symmetric)
    assert out.dtype == dtype and out.dim() == 0
    _check(out, ref, TOL[dtype], scale=1.0 / temperature)
    upstream = 1.7
    out.backward(torch.tensor(upstream, dtype=dtype, device=DEVICE))
    (ref * upstream).backward()
    # gradient terms: upstream / (T * N) * (unit rows) / ||row||
    gscale = upstream / (temperature * n ** 0.5) / min(a64.detach().norm(dim=1).min().item(), b64.detach().norm(dim=1).min().item())
    _check(a.grad, a64.grad, TOL[dtype], scale=gscale)
    _check(b.grad, b64.grad, TOL[dtype], scale=gscale)


def test_triton_many_column_tiles_and_zero_rows(poisoned):
    """N well past one tile (online log-sum-exp over several tiles); a zero row exercises the eps clamp."""
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(200, 16, generator=gen).to(DEVICE)
    b = torch.randn(200, 16, generator=gen).to(DEVICE)
    a[7] = 0.0
    a.requires_grad_(True)
    b.requires_grad_(True)
    with use_backend("triton"):
        out = ops.info_nce(a, b, temperature=0.05, symmetric=True)
    out.backward()
    a64 = a.detach().double().requires_grad_(True)
    b64 = b.detach().double().requires_grad_(True)
    ref = ops.info_nce_reference(a64, b64, temperature=0.05, symmetric=True)
    ref.backward()
    _check(out, ref, 1e-5 if DEVICE == "cpu" else 5e-4)
    _check(b.grad, b64.grad, 1e-5 if DEVICE == "cpu" else 5e-4)
    # the zero row's gradient is huge (1/eps scale); compare it relatively on its own
    _check(a.grad[7], a64.grad[7], 1e-5 if DEVICE == "cpu" else 5e-4)
    _check(torch.cat([a.grad[:7], a.grad[8:]]), torch.cat([a64.grad[:7], a64.grad[8:]]), 1e-5 if DEVICE == "cpu" else 5e-4)


@pytest.mark.parametrize("symmetric", [False, True])
def test_triton_wide_rows_span_several_feature_chunks_and_blocks(poisoned, symmetric):
    """D=300: the logit tiles sum over 5 feature chunks, the backward's feature axis has 2 blocks."""
    from jepa.kernels.triton.info_nce import _blocks  # noqa: PLC0415

    n, d = 17, 300
    cfg = _blocks(n, d, torch.float32)
    block_k, block_do = cfg.block_k, cfg.block_do
    assert d > 4 * block_k and d > block_do
    gen = torch.Generator().manual_seed(6)
    a = torch.randn(n, d, generator=gen).to(DEVICE).requires_grad_(True)
    b = torch.randn(n, d, generator=gen).to(DEVICE).requires_grad_(True)
    with use_backend("triton"):
        out = ops.info_nce(a, b, temperature=0.07, symmetric=symmetric)
    out.backward()
    a64 = a.detach().double().requires_grad_(True)
    b64 = b.detach().double().requires_grad_(True)
    ref = _hand64(a64, b64, 0.07, symmetric)
    ref.backward()
    tol = TOL[torch.float32]
    _check(out, ref, tol)
    _check(a.grad, a64.grad, tol)
    _check(b.grad, b64.grad, tol)


def test_triton_matches_the_tiny_example_by_hand():
    import math  # noqa: PLC0415

    a = torch.eye(3, device=DEVICE)
    with use_backend("triton"):
        out = ops.info_nce(a, a.clone(), temperature=0.5)
    assert out.item() == pytest.approx(math.log(math.exp(2.0) + 2.0) - 2.0, rel=1e-6)


# ----------------------------------------------------------------------------- dispatch and errors


def test_forced_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x = torch.randn(4, 3)
    with use_backend("triton"), pytest.raises(BackendUnavailableError, match="triton.*CPU"):
        ops.info_nce(x, x)


def test_forced_triton_refuses_float64_and_too_wide_rows():
    from jepa.kernels.triton.info_nce import MAX_D  # noqa: PLC0415

    x = torch.randn(4, 3, device=DEVICE, dtype=torch.float64)
    with use_backend("triton"), pytest.raises(BackendUnavailableError, match="float64"):
        ops.info_nce(x, x)
    y = torch.randn(2, MAX_D + 1, device=DEVICE)
    with use_backend("triton"), pytest.raises(BackendUnavailableError, match=f"D={MAX_D + 1}"):
        ops.info_nce(y, y)


# ----------------------------------------------------------------------------- custom op / torch.compile


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_torch_compile_fullgraph_matches_eager(backend, symmetric):
    gen = torch.Generator().manual_seed(4)
    a0 = torch.randn(17, 33, generator=gen).to(DEVICE)
    b0 = torch.randn(17, 33, generator=gen).to(DEVICE)

    def model(a, b):
        return ops.info_nce(a * 2.0, b.sin(), temperature=0.2, symmetric=symmetric) * 3.0

    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm.code)
        return gm.forward

    with use_backend(backend):
        torch._dynamo.reset()
        torch.compile(model, fullgraph=True, backend=record)(a0, b0)
        assert any("torch.ops.jepa.info_nce" in g for g in graphs)
        results = []
        for compiled in (False, True):
            a, b = a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
            torch._dynamo.reset()
            fn = torch.compile(model, fullgraph=True, backend="aot_eager") if compiled else model
            out = fn(a, b)
            out.backward()
            results.append((out.detach(), a.grad, b.grad))
    for x, y in zip(*results):
        _check(y, x, 1e-6)


@pytest.mark.parametrize("symmetric", [False, True])
def test_custom_op_torch_backward_gradcheck_float64(symmetric):
    gen = torch.Generator().manual_seed(8)
    a = torch.randn(5, 4, dtype=torch.float64, generator=gen).requires_grad_(True)
    b = torch.randn(5, 4, dtype=torch.float64, generator=gen).requires_grad_(True)
    op = torch.ops.jepa.info_nce
    assert torch.autograd.gradcheck(lambda x, y: op(x, y, 0.3, symmetric, "torch")[0], (a, b))


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_custom_op_opcheck(impl):
    gen = torch.Generator().manual_seed(9)
    a = torch.randn(9, 5, generator=gen).to(DEVICE).requires_grad_(True)
    b = torch.randn(9, 5, generator=gen).to(DEVICE).requires_grad_(True)
    torch.library.opcheck(
        torch.ops.jepa.info_nce.default,
        (a, b, 0.5, True, impl),
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
    )


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_custom_op_opcheck_with_permuted_inputs(impl):
    # The backward kernels return contiguous gradients; the fake and the torch path must too.
    gen = torch.Generator().manual_seed(10)
    a = torch.randn(5, 9, generator=gen).to(DEVICE).T.requires_grad_(True)
    b = torch.randn(5, 9, generator=gen).to(DEVICE).T.requires_grad_(True)
    assert not a.is_contiguous()
    torch.library.opcheck(
        torch.ops.jepa.info_nce.default,
        (a, b, 0.5, False, impl),
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
    )
    loss, stats = torch.ops.jepa.info_nce(a, b, 0.5, False, impl)
    torch.library.opcheck(  # the backward op on its own: opcheck above does not compare its fake
        torch.ops.jepa.info_nce_backward.default,
        (torch.ones_like(loss), a.detach(), b.detach(), stats, 0.5, False, impl),
        test_utils=("test_schema", "test_faketensor"),
    )


# ----------------------------------------------------------------------------- float16 range of the backward


@pytest.mark.parametrize("case", ["collapsed", "large_norm_ratio"])
def test_float16_backward_neither_overflows_nor_underflows(poisoned, case):
    """collapsed: rows of norm ~1e-4 (collapsing embeddings): 1 / (||y|| T) ~ 1e5 exceeds float16's 65504,
    so a backward that folds it into the softmax tile before the float16 dot returns inf/NaN.
    large_norm_ratio: ||a|| ~ 8, ||b|| ~ 1e5, 256 columns: P / ||b|| ~ 1e-7 lies deep in float16's
    subnormals (spacing 6e-8), so folding it there loses ~10% of d a (d b is itself below float16's
    resolution: checked to that resolution). Against float64, forward and backward."""
    gen = torch.Generator().manual_seed(31)
    if case == "collapsed":
        n, d, temperature = 17, 33, 0.1
        a = torch.randn(n, d, generator=gen) * 2e-5
        b = torch.randn(n, d, generator=gen) * 2e-5
    else:
        n, d, temperature = 256, 64, 1.0
        direction = torch.randn(1, d, generator=gen)
        a = direction + torch.randn(n, d, generator=gen)
        b = (direction + torch.randn(n, d, generator=gen)) * 1e4
        assert b.abs().max() < 65504
    a = a.half().to(DEVICE).requires_grad_(True)
    b = b.half().to(DEVICE).requires_grad_(True)
    with use_backend(info_nce="triton"):
        out = ops.info_nce(a, b, temperature=temperature, symmetric=True)
    out.backward()
    a64 = a.detach().double().requires_grad_(True)
    b64 = b.detach().double().requires_grad_(True)
    ref = _hand64(a64, b64, temperature, True)
    ref.backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    _check(out, ref, 1e-2, scale=1.0 / temperature)
    _check(a.grad, a64.grad, 1e-2)
    if case == "collapsed":
        _check(b.grad, b64.grad, 1e-2)
    else:
        assert torch.allclose(b.grad.double(), b64.grad, rtol=1e-2, atol=2.0**-24)
