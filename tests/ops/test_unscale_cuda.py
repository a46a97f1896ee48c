"""jepa.ops.unscale_ / update_scale_ on CUDA tensors: jepa._C's CUDA kernels against torch's references.

Runs only where torch sees a GPU and jepa._C was built with CUDA (skipped on CPU-only machines and CI).
"""

from __future__ import annotations

import math

import pytest
import torch

import jepa.ops as ops

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _assert_same(got, want):
    for a, b in zip(got, want):
        nan_a, nan_b = torch.isnan(a), torch.isnan(b)
        assert torch.equal(nan_a, nan_b)
        assert torch.equal(a[~nan_a], b[~nan_b])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("inv", [2.0**-16, 0.37, 1.0])
@pytest.mark.parametrize("bad", [None, math.inf, -math.inf, math.nan])
def test_cuda_matches_torch_reference(cuda_native, dtype, inv, bad):
    gen = torch.Generator().manual_seed(4)
    sizes = [0, 1, 7, 33, 8191, 8193, 100_003, 1 << 20 | 3, 0, 5] + torch.randint(0, 70, (100,), generator=gen).tolist()
    grads = [(torch.randn(n, generator=gen) * 1000).to(dtype).cuda() for n in sizes]
    if bad is not None:
        grads[4][-1] = bad
    expect = [g.clone() for g in grads]
    inv_t = torch.tensor(inv, device="cuda")
    found, found_ref = torch.zeros((), device="cuda"), torch.zeros((), device="cuda")
    ops.unscale_reference(expect, inv_t, found_ref)
    with ops.use_backend("cuda"):
        ops.unscale_(grads, inv_t, found)
    _assert_same(grads, expect)
    assert found.item() == found_ref.item() == (0.0 if bad is None else 1.0)


def test_cuda_more_tensors_than_one_launch_takes(cuda_native):
    # the table travels as the kernel argument, 1344 tensors per launch: 4100 tensors need 4 launches
    gen = torch.Generator().manual_seed(8)
    grads = [torch.randn(int(n), generator=gen).cuda() for n in torch.randint(0, 40, (4100,), generator=gen)]
    grads[3000] = torch.tensor([1.0, math.nan, 2.0], device="cuda")  # in the second launch
    grads.append(torch.full((5,), math.inf, device="cuda"))  # in the third
    expect = [g.clone() for g in grads]
    inv = torch.tensor(0.25, device="cuda")
    found, found_ref = torch.zeros((), device="cuda"), torch.zeros((), device="cuda")
    ops.unscale_reference(expect, inv, found_ref)
    with ops.use_backend("cuda"):
        ops.unscale_(grads, inv, found)
    _assert_same(grads, expect)
    assert found.item() == found_ref.item() == 1.0


def test_cuda_found_inf_stays_one_and_mixed_dtypes(cuda_native):
    grads = [torch.randn(10, device="cuda"), None, torch.randn(7, device="cuda").half(), torch.randn(4, 6, device="cuda").t()]
    expect = [g.clone() if g is not None else None for g in grads]
    inv = torch.tensor(0.5, device="cuda")
    found, found_ref = torch.ones((), device="cuda"), torch.ones((), device="cuda")
    ops.unscale_reference(expect, inv, found_ref)
    ops.unscale_(grads, inv, found)
    assert found.item() == 1.0
    _assert_same([g for g in grads if g is not None], [e for e in expect if e is not None])


@pytest.mark.parametrize("interval", [1, 3])
def test_cuda_update_scale_matches_torch(cuda_native, interval):
    gen = torch.Generator().manual_seed(interval)
    s = torch.tensor(2.0**16, device="cuda")
    t = torch.zeros((), dtype=torch.int32, device="cuda")
    s_ref, t_ref = s.clone(), t.clone()
    for f in (torch.rand(100, generator=gen) < 0.2).float().tolist():
        found = torch.tensor(f, device="cuda")
        with ops.use_backend("cuda"):
            ops.update_scale_(s, t, found, 2.0, 0.5, interval)
        ops.update_scale_reference(s_ref, t_ref, found, 2.0, 0.5, interval)
        assert s.item() == s_ref.item() and t.item() == t_ref.item()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("offset", [0, 1])
def test_cuda_vector_and_scalar_paths_match_torch(cuda_native, dtype, offset):
    """offset 0: 16-byte aligned gradients (vector loads, chunk and vector tails at odd sizes); offset 1:
    views off a 16-byte boundary (element-wise kernel). A non-finite value in a vector part and one in a
    tail are both found."""
    gen = torch.Generator().manual_seed(11 + offset)
    chunk = 32768 // torch.tensor([], dtype=dtype).element_size()
    sizes = [1, 7, 8, 9, chunk - 1, chunk, chunk + 1, 3 * chunk + 5, 0, 100_003]
    base = [(torch.randn(n + offset, generator=gen) * 100).to(dtype).cuda() for n in sizes]
    grads = [b[offset:] for b in base]
    for bad_at in (None, (5, 8), (7, -1)):  # (tensor, element): inside a vector, in the last (tail) element
        work = [g.clone() for g in grads] if offset == 0 else [b.clone()[offset:] for b in base]
        if bad_at is not None:
            work[bad_at[0]][bad_at[1]] = math.inf
        expect = [g.clone() for g in work]
        inv = torch.tensor(0.125, device="cuda")
        found, found_ref = torch.zeros((), device="cuda"), torch.zeros((), device="cuda")
        ops.unscale_reference(expect, inv, found_ref)
        with ops.use_backend("cuda"):
            ops.unscale_(work, inv, found)
        _assert_same(work, expect)
        assert found.item() == found_ref.item() == (0.0 if bad_at is None else 1.0)
