"""jepa.ops.ema_update on CUDA tensors: the CUDA kernel of jepa._C against a float64 reference.

Runs only where torch sees a GPU and jepa._C was built with CUDA (skipped on CPU-only machines and CI).
"""

from __future__ import annotations


import importlib

import pytest
import torch

import jepa.ops as ops
from jepa.ops import BackendUnavailableError

ema_mod = importlib.import_module("jepa.ops.ema_update")  # the module (jepa.ops.ema_update is also the function)
from oracles import multi_rel_err as _rel_err

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def _make(sizes, dtype, gen):
    t = [torch.randn(n, generator=gen, dtype=torch.float64).to(dtype).cuda() for n in sizes]
    o = [torch.randn(n, generator=gen, dtype=torch.float64).to(dtype).cuda() for n in sizes]
    return t, o


@torch.no_grad()
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("momentum", [0.0, 1.0, 0.9, 0.5, 0.996])
def test_cuda_matches_float64_reference(cuda_native, dtype, momentum):
    gen = torch.Generator().manual_seed(99)
    sizes = [0, 1, 3, 255, 256, 257, 8191, 8193, 1_000_003, 0] + torch.randint(0, 700, (500,), generator=gen).tolist()
    targets, onlines = _make(sizes, dtype, gen)
    before = [t.clone() for t in targets]
    refs = [t.double() * momentum + o.double() * (1 - momentum) for t, o in zip(targets, onlines)]
    with ops.use_backend("cuda"):
        ops.ema_update(targets, onlines, momentum)
    torch.cuda.synchronize()
    assert _rel_err(targets, refs) <= TOL[dtype]
    if momentum == 1.0:
        assert all(torch.equal(a, b) for a, b in zip(targets, before))
    if momentum == 0.0:
        assert all(torch.equal(a, b) for a, b in zip(targets, onlines))


def test_cuda_matches_cpu_kernel(cuda_native):
    gen = torch.Generator().manual_seed(5)
    sizes = [17, 100_000, 0, 4096]
    cpu_t = [torch.randn(n, generator=gen) for n in sizes]
    cpu_o = [torch.randn(n, generator=gen) for n in sizes]
    gpu_t, gpu_o = [t.cuda() for t in cpu_t], [o.cuda() for o in cpu_o]
    with ops.use_backend("cpp"):
        ops.ema_update(cpu_t, cpu_o, 0.8)
    with ops.use_backend("cuda"):
        ops.ema_update(gpu_t, gpu_o, 0.8)
    assert _rel_err([g.cpu() for g in gpu_t], [c.double() for c in cpu_t]) <= 1e-6


def test_auto_uses_cuda_kernel_and_respects_stream(cuda_native, monkeypatch):
    calls = []
    real = ema_mod._run_cuda
    monkeypatch.setattr(ema_mod, "_run_cuda", lambda plan, m: (calls.append("cuda"), real(plan, m)))
    t = [torch.zeros(1 << 20, device="cuda")]
    o = [torch.ones(1 << 20, device="cuda")]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            ops.ema_update(t, o, 0.5)
    stream.synchronize()
    assert calls == ["cuda"] * 3
    assert torch.allclose(t[0], torch.full_like(t[0], 0.875))


def test_forcing_cpp_on_cuda_tensors_raises(cuda_native):
    t, o = [torch.zeros(4, device="cuda")], [torch.ones(4, device="cuda")]
    with ops.use_backend("cpp"), pytest.raises(BackendUnavailableError, match="cuda"):
        ops.ema_update(t, o, 0.5)


def test_mixed_devices_fall_back_to_torch(cuda_native):
    t = [torch.zeros(4, device="cuda"), torch.zeros(4)]
    o = [torch.ones(4, device="cuda"), torch.ones(4)]
    ops.ema_update(t, o, 0.5)
    assert float(t[0].sum().cpu()) == 2.0 and float(t[1].sum()) == 2.0
    with ops.use_backend("cuda"), pytest.raises(BackendUnavailableError, match="mixed devices"):
        ops.ema_update(t, o, 0.5)


@torch.no_grad()
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("offset", [0, 1, 3])
def test_cuda_vector_and_scalar_paths_match_float64(cuda_native, dtype, offset):
    """offset 0: 16-byte aligned buffers, the vectorized kernel (chunk and vector tails at odd sizes);
    offset 1 or 3: views starting off a 16-byte boundary, the element-wise kernel."""
    gen = torch.Generator().manual_seed(7 + offset)
    chunk = 32768 // torch.tensor([], dtype=dtype).element_size()
    sizes = [1, 7, 8, 9, chunk - 1, chunk, chunk + 1, 3 * chunk + 5, 0, 100_003]
    base_t = [torch.randn(n + offset, generator=gen, dtype=torch.float64).to(dtype).cuda() for n in sizes]
    base_o = [torch.randn(n + offset, generator=gen, dtype=torch.float64).to(dtype).cuda() for n in sizes]
    targets, onlines = [t[offset:] for t in base_t], [o[offset:] for o in base_o]
    heads = [t[:offset].clone() for t in base_t]
    refs = [t.double() * 0.7 + o.double() * 0.3 for t, o in zip(targets, onlines)]
    plan = ops._native.get_plan("ema_update", (targets, onlines), ema_mod._validate)
    assert plan.table().aligned16 is (offset == 0)
    with ops.use_backend("cuda"):
        ops.ema_update(targets, onlines, 0.7)
    assert _rel_err(targets, refs) <= TOL[dtype]
    assert all(torch.equal(t[:offset], h) for t, h in zip(base_t, heads)), "wrote before a view's start"


def test_cuda_device_table_is_built_once_per_plan(cuda_native, monkeypatch):
    t = [torch.zeros(1000, device="cuda"), torch.zeros(3, device="cuda")]
    o = [torch.ones(1000, device="cuda"), torch.ones(3, device="cuda")]
    with ops.use_backend("cuda"):
        ops.ema_update(t, o, 0.5)
        plan = ops._native.get_plan("ema_update", (t, o), ema_mod._validate)
        table = plan.device_table()
        ops.ema_update(t, o, 0.5)
        assert plan.device_table() is table and table.device == t[0].device
    torch.testing.assert_close(t[0], torch.full_like(t[0], 0.75))
