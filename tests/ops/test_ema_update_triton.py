"""jepa.ops.ema_update, Triton backend (under TRITON_INTERPRET=1 on CPU) against a float64 reference;
tensor momentum (all backends), mixed dtypes in one call, launch-table caching, dispatch and errors."""

from __future__ import annotations


import pytest
import torch

pytest.importorskip("triton")

import importlib  # noqa: E402

import jepa.ops as ops  # noqa: E402
from jepa.ops import BackendUnavailableError, _backend  # noqa: E402
from oracles import multi_rel_err

ema_mod = importlib.import_module("jepa.ops.ema_update")  # the module (jepa.ops.ema_update is also the function)

if not _backend.triton_can_run(torch.empty(1, device="cuda" if torch.cuda.is_available() else "cpu")):
    pytest.skip("Triton cannot run here (no GPU and TRITON_INTERPRET is not set)", allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def _sizes(gen):
    from jepa.kernels.triton.ema_update import CHUNK  # noqa: PLC0415

    # empty, single elements, primes, exactly one chunk, one past it, several chunks, many small ones
    return [0, 1, 3, 31, 1000, CHUNK, CHUNK + 1, 2 * CHUNK + 17, 0] + torch.randint(0, 70, (40,), generator=gen).tolist()


def _make(sizes, dtype, gen):
    t = [torch.randn(n, generator=gen, dtype=torch.float64).to(dtype).to(DEVICE) for n in sizes]
    o = [torch.randn(n, generator=gen, dtype=torch.float64).to(dtype).to(DEVICE) for n in sizes]
    return t, o


def _ref64(targets, onlines, m):
    return [t.double() * m + o.double() * (1.0 - m) for t, o in zip(targets, onlines)]


@torch.no_grad()
def _rel_err(outs, refs):
    for o in outs:
        assert not torch.isnan(o).any(), "NaN in the output"
    return multi_rel_err(outs, refs)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("momentum", [0.0, 1.0, 0.5, 0.996, 0.3])
@pytest.mark.parametrize("as_tensor", [False, True], ids=["float", "tensor"])
def test_triton_matches_float64_reference(dtype, momentum, as_tensor):
    gen = torch.Generator().manual_seed(int(momentum * 1000) + DTYPES.index(dtype))
    targets, onlines = _make(_sizes(gen), dtype, gen)
    before = [t.clone() for t in targets]
    refs = _ref64(targets, onlines, momentum)
    m = torch.tensor(momentum, device=DEVICE) if as_tensor else momentum
    with ops.use_backend("triton"):
        ops.ema_update(targets, onlines, m)
    assert _rel_err(targets, refs) <= TOL[dtype]
    if momentum == 1.0:  # bit for bit: every element kept
        assert all(torch.equal(a, b) for a, b in zip(targets, before))
    if momentum == 0.0:  # bit for bit: every element written
        assert all(torch.equal(a, b) for a, b in zip(targets, onlines))


def test_triton_matches_torch_reference_to_the_ulp():
    gen = torch.Generator().manual_seed(1)
    targets, onlines = _make(_sizes(gen), torch.float32, gen)
    expected = [t.clone() for t in targets]
    ops.ema_update_reference(expected, onlines, 0.9)
    with ops.use_backend("triton"):
        ops.ema_update(targets, onlines, 0.9)
    for a, b in zip(targets, expected):
        torch.testing.assert_close(a, b, rtol=2e-7, atol=1e-7)


def test_triton_mixed_dtypes_in_one_call():
    gen = torch.Generator().manual_seed(2)
    sizes = [5, 1000, 33, 0, 17]
    dtypes = [torch.float32, torch.bfloat16, torch.float16, torch.float32, torch.bfloat16]
    targets = [torch.randn(n, generator=gen).to(dt).to(DEVICE) for n, dt in zip(sizes, dtypes)]
    onlines = [torch.randn(n, generator=gen).to(dt).to(DEVICE) for n, dt in zip(sizes, dtypes)]
    refs = _ref64(targets, onlines, 0.75)
    with ops.use_backend("triton"):
        ops.ema_update(targets, onlines, 0.75)
    for t, r, dt in zip(targets, refs, dtypes):
        assert t.dtype == dt
        assert _rel_err([t], [r]) <= TOL[dt]


def test_triton_multidim_parameters_and_version_counter():
    gen = torch.Generator().manual_seed(3)
    shapes = [(3, 5, 7), (1,), (768, 3), (2, 0, 4)]
    online = [torch.nn.Parameter(torch.randn(s, generator=gen).to(DEVICE)) for s in shapes]
    target = [torch.nn.Parameter(torch.randn(s, generator=gen).to(DEVICE)) for s in shapes]
    refs = _ref64(target, online, 0.6)
    versions = [t._version for t in target]
    with ops.use_backend("triton"):
        ops.ema_update(target, online, 0.6)
    assert _rel_err(target, refs) <= 1e-5
    assert all(t._version > v for t, v in zip(target, versions))


def test_triton_launch_table_is_cached_and_rebuilt_when_a_tensor_moves():
    gen = torch.Generator().manual_seed(4)
    targets, onlines = _make([10, 20, 30], torch.float32, gen)
    with ops.use_backend("triton"):
        ops.ema_update(targets, onlines, 0.5)
        assert len(ema_mod._TRITON_TABLES) == 1
        groups = next(iter(ema_mod._TRITON_TABLES.values()))
        ops.ema_update(targets, onlines, 0.5)
        assert next(iter(ema_mod._TRITON_TABLES.values())) is groups  # reused, not rebuilt
        targets[1] = targets[1].clone()  # a new tensor object at a new address
        refs = _ref64(targets, onlines, 0.5)
        ops.ema_update(targets, onlines, 0.5)
    assert _rel_err(targets, refs) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_torch_backend_accepts_a_tensor_momentum(dtype):
    gen = torch.Generator().manual_seed(5)
    targets = [torch.randn(n, generator=gen).to(dtype).to(DEVICE) for n in (3, 0, 40)]
    onlines = [torch.randn(n, generator=gen).to(dtype).to(DEVICE) for n in (3, 0, 40)]
    refs = _ref64(targets, onlines, 0.8)
    with ops.use_backend("torch"):
        ops.ema_update(targets, onlines, torch.tensor(0.8, dtype=torch.float64, device=DEVICE))
    assert _rel_err(targets, refs) <= TOL.get(dtype, 1e-12)  # float64 targets get a float64 weight


def test_cpp_backend_accepts_a_tensor_momentum(native):
    t, o = [torch.zeros(5)], [torch.ones(5)]
    with ops.use_backend("cpp"):
        ops.ema_update(t, o, torch.tensor(0.25))
    assert torch.allclose(t[0], torch.full((5,), 0.75))


def test_device_momentum_is_not_read_by_the_host(monkeypatch):
    """A momentum on a non-CPU device goes to the kernels as a tensor: the host never calls float() on it."""
    m = torch.tensor(0.5, device=DEVICE)
    checked = ema_mod._check_momentum(m)
    if DEVICE == "cpu":
        assert checked == 0.5  # a CPU tensor is read once, cheaply
    else:
        assert isinstance(checked, torch.Tensor) and checked.device == m.device
    seen = []
    real = ema_mod._run_triton

    def spy(plan, targets, onlines, mom):
        seen.append(mom)
        real(plan, targets, onlines, mom)

    monkeypatch.setattr(ema_mod, "_run_triton", spy)
    t, o = [torch.zeros(4, device=DEVICE)], [torch.ones(4, device=DEVICE)]
    with ops.use_backend("triton"):
        ops.ema_update(t, o, torch.tensor(0.25, device=DEVICE))
    assert len(seen) == 1
    assert torch.allclose(t[0], torch.full((4,), 0.75, device=DEVICE))


# ----------------------------------------------------------------------------- dispatch and errors


@pytest.mark.parametrize("case, match", [
    ("float64", "float64"), ("non_contiguous", "not contiguous"), ("subclass", "Tensor"),
])
def test_forced_triton_on_inapplicable_tensors_raises(case, match):
    t, o = [torch.randn(6, device=DEVICE), torch.randn(3, device=DEVICE)], [torch.randn(6, device=DEVICE), torch.randn(3, device=DEVICE)]
    if case == "float64":
        t[1], o[1] = t[1].double(), o[1].double()
    elif case == "non_contiguous":
        t[0], o[0] = torch.randn(12, device=DEVICE)[::2], torch.randn(12, device=DEVICE)[::2]
    else:

        class MyTensor(torch.Tensor):
            pass

        t[0] = t[0].as_subclass(MyTensor)
    before = [x.clone() for x in t]
    with ops.use_backend("triton"), pytest.raises(BackendUnavailableError, match=match):
        ops.ema_update(t, o, 0.5)
    assert all(torch.equal(a, b) for a, b in zip(t, before)), "a refused call must not touch the targets"


def test_forced_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    t, o = [torch.randn(3)], [torch.randn(3)]
    with ops.use_backend("triton"), pytest.raises(BackendUnavailableError, match="triton.*CPU"):
        ops.ema_update(t, o, 0.5)


def test_forced_triton_without_triton_installed_raises(monkeypatch):
    monkeypatch.setattr(_backend, "triton_available", lambda: False)
    with ops.use_backend("triton"), pytest.raises(BackendUnavailableError, match="triton is not installed"):
        ops.ema_update([torch.zeros(2)], [torch.zeros(2)], 0.5)


@pytest.mark.parametrize(
    "native_ok, triton_ok, tensor_momentum, expected",
    [
        (True, True, False, "cuda"),  # jepa._C's CUDA kernel first (the auto order of jepa/ops/ema_update.py's docstring)
        (True, True, True, "triton"),  # ... unless the momentum lives on the device: no host sync
        (False, True, False, "triton"),
        (True, False, True, "cuda"),
        (False, False, False, "torch"),
        (False, False, True, "torch"),
    ],
)
def test_auto_choice_on_cuda_tensors(monkeypatch, native_ok, triton_ok, tensor_momentum, expected):
    """The chooser with the op's registration and auto orders, for CUDA tensors (no GPU needed: only the
    device is looked at)."""
    monkeypatch.setattr(_backend, "cuda_unavailable_reason", lambda: "" if native_ok else "no CUDA build")
    monkeypatch.setattr(_backend, "triton_available", lambda: triton_ok)
    order = ema_mod._AUTO_DEVICE_MOMENTUM if tensor_momentum else None
    got = _backend.choose(ema_mod.EMA_UPDATE, device=torch.device("cuda", 0), dtypes=(torch.float32,), auto=order)
    assert got == expected


def test_auto_on_cpu_still_prefers_cpp(native, monkeypatch):
    calls = []
    monkeypatch.setattr(ema_mod, "_run_triton", lambda *a: calls.append("triton"))
    real_cpp = ema_mod._run_cpp
    monkeypatch.setattr(ema_mod, "_run_cpp", lambda plan, m: (calls.append("cpp"), real_cpp(plan, m)))
    ops.ema_update([torch.zeros(3)], [torch.ones(3)], torch.tensor(0.5))
    assert calls == ["cpp"]
