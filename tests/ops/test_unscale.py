"""jepa.ops.unscale_ / update_scale_: the C++ kernels against torch's references and a float64 expectation,
backend dispatch, mixed and unusual inputs, input errors."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import jepa.ops as ops
from jepa.ops import BackendUnavailableError, _native
from oracles import multi_rel_err as _rel_err

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}
INV_SCALES = [2.0**-16, 0.37, 1.0, 1.0 / 3.0]


def _sizes(native, gen):
    """Odd sizes: empty, one element, primes, a tensor spanning several chunks (the call runs on several
    threads), many small ones."""
    cfg = native.unscale_config()
    big = 2 * cfg["min_elements_per_thread"] + 13
    assert big > 4 * cfg["min_chunk_elements"]
    sizes = [0, 1, 2, 3, 7, 31, 33, 1000, 4097, big, 0, 1, cfg["min_chunk_elements"] + 5]
    return sizes + torch.randint(0, 70, (200,), generator=gen).tolist()


def _make(sizes, dtype, gen, scale=1000.0):
    # nonzero values (|x| >= 1e-3 * scale) so that every element changes when inv_scale != 1
    out = []
    for n in sizes:
        x = torch.randn(n, generator=gen, dtype=torch.float64)
        x = torch.where(x.abs() < 1e-3, torch.full_like(x, 0.5), x) * scale
        out.append(x.to(dtype))
    return out


def _assert_same(got, want):
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.dtype == b.dtype and a.shape == b.shape
        nan_a, nan_b = torch.isnan(a), torch.isnan(b)
        assert torch.equal(nan_a, nan_b), f"tensor {i}: NaN positions differ"
        assert torch.equal(a[~nan_a], b[~nan_b]), f"tensor {i}: values differ from the torch reference"


@torch.no_grad()
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("inv", INV_SCALES)
def test_cpp_matches_torch_reference_bit_for_bit(native, dtype, inv):
    gen = torch.Generator().manual_seed(11 + DTYPES.index(dtype) * 31 + int(inv * 1000))
    sizes = _sizes(native, gen)
    grads = _make(sizes, dtype, gen)
    before = [g.clone() for g in grads]
    expect = [g.clone() for g in grads]
    inv_t = torch.tensor(inv, dtype=torch.float32)
    found, found_ref = torch.zeros(()), torch.zeros(())
    ops.unscale_reference(expect, inv_t, found_ref)
    with ops.use_backend("cpp"):
        ops.unscale_(grads, inv_t, found)
    _assert_same(grads, expect)
    assert found.item() == 0.0 == found_ref.item()
    # against float64 (the tolerances of docs/guides/kernels.md, "How to add an op"): inv * x rounded once to the storage dtype
    refs = [b.double() * float(inv_t) for b in before]
    err = _rel_err(grads, refs)
    assert err <= TOL[dtype], f"relative error {err} > {TOL[dtype]}"
    if inv == 1.0:
        assert all(torch.equal(a, b) for a, b in zip(grads, before))
    else:  # every element was written (none kept its old value: all inputs are nonzero)
        for a, b in zip(grads, before):
            if b.numel():
                assert bool((a != b).all()), "some elements were not unscaled"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("where", ["first", "last"])
def test_nonfinite_in_a_middle_tensor_sets_found_inf(native, dtype, value, where):
    gen = torch.Generator().manual_seed(5)
    sizes = [5, 3000, 1, 0, 777, 2 * native.unscale_config()["min_elements_per_thread"] + 3, 9]
    grads = _make(sizes, dtype, gen, scale=3.0)
    middle = 4  # a 777-element tensor between others
    grads[middle][0 if where == "first" else -1] = value
    expect = [g.clone() for g in grads]
    inv = torch.tensor(2.0**-10)
    found, found_ref = torch.zeros(()), torch.zeros(())
    ops.unscale_reference(expect, inv, found_ref)
    with ops.use_backend("cpp"):
        ops.unscale_(grads, inv, found)
    assert found_ref.item() == 1.0
    assert found.item() == 1.0
    _assert_same(grads, expect)  # the other elements are unscaled all the same, as torch does


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nonfinite_at_the_end_of_a_multithreaded_call(native, dtype):
    # the last chunk is likely taken by a pool worker: its flag must reach found_inf
    n = 4 * native.unscale_config()["min_elements_per_thread"] + 7
    g = torch.ones(n, dtype=dtype)
    g[-1] = math.inf
    found = torch.zeros(())
    torch.set_num_threads(2)
    with ops.use_backend("cpp"):
        ops.unscale_([g], torch.tensor(0.5), found)
    assert found.item() == 1.0
    assert bool((g[:-1] == 0.5).all()) and g[-1].item() == math.inf


@pytest.mark.parametrize("inv", [0.25, 1.0])
def test_found_inf_is_never_cleared(native, inv):
    grads = [torch.randn(100), torch.randn(3)]
    expect = [g * inv for g in grads]
    found = torch.ones(1)  # 1-element (not 0-d) is accepted too
    with ops.use_backend("cpp"):
        ops.unscale_(grads, torch.tensor(inv), found)
    assert found.item() == 1.0
    _assert_same(grads, expect)
    found0 = torch.zeros(())
    with ops.use_backend("cpp"):
        ops.unscale_(grads, torch.tensor(inv), found0)
    assert found0.item() == 0.0


def test_check_only_at_inv_scale_one_finds_inf_without_writing(native):
    g = torch.tensor([1.0, math.nan, 3.0])
    g_half = torch.tensor([1.0, 2.0, math.inf], dtype=torch.float16)
    found = torch.zeros(())
    before = g.clone()
    with ops.use_backend("cpp"):
        ops.unscale_([g, g_half], torch.tensor(1.0), found)
    assert found.item() == 1.0
    assert torch.equal(g.view(torch.int32), before.view(torch.int32))  # NaN payload untouched too


def test_none_mixed_dtypes_and_strided_views_in_auto(native):
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(40, 30, generator=gen)
    grads = [
        None,
        torch.randn(17, generator=gen),
        torch.randn(9, generator=gen).half(),
        None,
        base.t(),  # non-contiguous: reference path
        torch.randn(5, generator=gen, dtype=torch.float64),  # float64: reference path
        torch.randn(2049, generator=gen).bfloat16(),
        torch.randn(33, generator=gen),
        torch.randn(40, 30, generator=gen)[::2, 1:],  # strided view (of another base: views must not overlap)
    ]
    grads[7][32] = -math.inf
    expect = [g.clone() if g is not None else None for g in grads]
    inv = torch.tensor(0.37)
    found, found_ref = torch.zeros(()), torch.zeros(())
    ops.unscale_reference(expect, inv, found_ref)
    ops.unscale_(grads, inv, found)
    assert found.item() == found_ref.item() == 1.0
    _assert_same([g for g in grads if g is not None], [e for e in expect if e is not None])
    assert grads[0] is None and grads[3] is None


def test_forced_cpp_refuses_what_it_cannot_run(native):
    inv, found = torch.tensor(0.5), torch.zeros(())
    with ops.use_backend("cpp"):
        with pytest.raises(BackendUnavailableError, match=r"grads\[1\].*not contiguous"):
            ops.unscale_([torch.randn(3), torch.randn(4, 5).t()], inv, found)
        with pytest.raises(BackendUnavailableError, match=r"grads\[0\].*float64"):
            ops.unscale_([torch.randn(3, dtype=torch.float64)], inv, found)
    # unscale_ has no Triton path: asked for by name it raises; a global "triton" leaves it on auto
    with ops.use_backend(unscale_="triton"), pytest.raises(BackendUnavailableError, match="'triton' does not implement unscale_"):
        ops.unscale_([torch.randn(3)], inv, found)
    if not torch.cuda.is_available() or not native.has_cuda():
        with ops.use_backend("cuda"), pytest.raises(BackendUnavailableError, match="cuda"):
            ops.unscale_([torch.randn(3)], inv, found)


def test_forced_torch_runs_the_reference(native, monkeypatch):
    calls = []
    real = torch._amp_foreach_non_finite_check_and_unscale_
    monkeypatch.setattr(torch, "_amp_foreach_non_finite_check_and_unscale_", lambda *a: (calls.append(1), real(*a)))
    g = [torch.ones(4)]
    monkeypatch.setenv("JEPA_BACKEND", "torch")
    ops.unscale_(g, torch.tensor(0.5), torch.zeros(()))
    assert calls and torch.equal(g[0], torch.full((4,), 0.5))


def test_cpp_route_does_not_call_torch(native, monkeypatch):
    def boom(*a):
        raise AssertionError("the torch reference ran instead of the C++ kernel")

    monkeypatch.setattr(torch, "_amp_foreach_non_finite_check_and_unscale_", boom)
    g = [torch.ones(4), torch.ones(3, dtype=torch.bfloat16)]
    ops.unscale_(g, torch.tensor(0.5), torch.zeros(()))  # auto on CPU
    assert torch.equal(g[0], torch.full((4,), 0.5)) and torch.equal(g[1], torch.full((3,), 0.5, dtype=torch.bfloat16))


def test_thread_count_does_not_change_results(native):
    gen = torch.Generator().manual_seed(9)
    n = 3 * native.unscale_config()["min_elements_per_thread"] + 101
    for dtype in DTYPES:
        src = (torch.randn(n, generator=gen) * 100).to(dtype)
        outs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            g = [src.clone()]
            with ops.use_backend("cpp"):
                ops.unscale_(g, torch.tensor(0.1), torch.zeros(()))
            outs.append(g[0])
        torch.set_num_threads(2)
        assert torch.equal(outs[0], outs[1])


def test_plan_cache_follows_reallocated_grads(native):
    p = torch.nn.Parameter(torch.zeros(10))
    p.grad = torch.full((10,), 4.0)
    found = torch.zeros(())
    ops.unscale_([p.grad], torch.tensor(0.5), found)
    assert torch.equal(p.grad, torch.full((10,), 2.0))
    p.grad = torch.full((10,), 8.0)  # a new buffer: the cached table must not be reused
    ops.unscale_([p.grad], torch.tensor(0.5), found)
    assert torch.equal(p.grad, torch.full((10,), 4.0))
    ops.unscale_([p.grad], torch.tensor(0.5), found)  # same buffer again: cached plan
    assert torch.equal(p.grad, torch.full((10,), 2.0))
    assert found.item() == 0.0


def test_version_counters_are_bumped(native):
    g = torch.ones(5)
    found = torch.zeros(())
    v0, f0 = g._version, found._version
    ops.unscale_([g], torch.tensor(0.5), found)
    assert g._version > v0 and found._version > f0


def test_empty_and_all_none_lists(native):
    found = torch.zeros(())
    ops.unscale_([], torch.tensor(0.5), found)
    ops.unscale_([None, None], torch.tensor(0.5), found)
    ops.unscale_([torch.empty(0)], torch.tensor(0.5), found)
    assert found.item() == 0.0


def test_bad_arguments_name_the_argument():
    g = [torch.ones(3)]
    with pytest.raises(TypeError, match="inv_scale.*float"):
        ops.unscale_(g, 0.5, torch.zeros(()))
    with pytest.raises(TypeError, match="inv_scale has dtype torch.float64"):
        ops.unscale_(g, torch.tensor(0.5, dtype=torch.float64), torch.zeros(()))
    with pytest.raises(ValueError, match=r"inv_scale has shape \(2,\)"):
        ops.unscale_(g, torch.ones(2), torch.zeros(()))
    with pytest.raises(TypeError, match="found_inf has dtype torch.int64"):
        ops.unscale_(g, torch.tensor(0.5), torch.zeros((), dtype=torch.int64))
    with pytest.raises(ValueError, match="found_inf is on meta"):
        ops.unscale_(g, torch.tensor(0.5), torch.zeros((), device="meta"))
    with pytest.raises(ValueError, match=r"grads\[1\] is on meta"):
        ops.unscale_([torch.ones(2), torch.ones(2, device="meta")], torch.tensor(0.5), torch.zeros(()))
    with pytest.raises(TypeError, match=r"grads\[1\] has dtype torch.int32"):
        ops.unscale_([torch.ones(2), torch.ones(2, dtype=torch.int32)], torch.tensor(0.5), torch.zeros(()))
    with pytest.raises(TypeError, match=r"grads\[0\] must be a torch.Tensor or None, got list"):
        ops.unscale_([[1.0]], torch.tensor(0.5), torch.zeros(()))
    with pytest.raises(TypeError, match="single torch.Tensor"):
        ops.unscale_(torch.ones(3), torch.tensor(0.5), torch.zeros(()))
    with pytest.raises(TypeError, match=r"grads\[0\] has layout torch.sparse_coo"):
        ops.unscale_([torch.ones(3).to_sparse()], torch.tensor(0.5), torch.zeros(()))


def test_native_binding_rejects_bad_pointers(native):
    g = torch.ones(4)
    table = native.TensorTable([[g.data_ptr()]], [4], native.DTYPE_FLOAT32)
    found = torch.zeros(())
    with pytest.raises(ValueError, match="inv_scale_ptr is a null pointer"):
        native.unscale(table, 0, found.data_ptr())
    with pytest.raises(ValueError, match="found_inf_ptr is not aligned"):
        native.unscale(table, torch.tensor(1.0).data_ptr(), found.data_ptr() + 1)
    pair = native.TensorTable([[g.data_ptr()], [g.data_ptr()]], [4], native.DTYPE_FLOAT32)
    with pytest.raises(ValueError, match="1 pointer list"):
        native.unscale(pair, torch.tensor(1.0).data_ptr(), found.data_ptr())
    s, t = torch.ones(()), torch.zeros((), dtype=torch.int32)
    with pytest.raises(ValueError, match="growth_interval=0"):
        native.update_scale(s.data_ptr(), t.data_ptr(), found.data_ptr(), 2.0, 0.5, 0)
    with pytest.raises(ValueError, match="backoff_factor"):
        native.update_scale(s.data_ptr(), t.data_ptr(), found.data_ptr(), 2.0, float("nan"), 10)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_portable_half_paths_match_the_reference(native, dtype, tmp_path):
    """JEPA_CPU_DISABLE_AVX2=1 (read once per process) forces the non-AVX2 float16/bfloat16 loops."""
    script = textwrap.dedent(
        f"""
        import math, torch, jepa.ops as ops, jepa._C as C
        assert C.unscale_config()["avx2_half_path"] is False
        gen = torch.Generator().manual_seed(2)
        grads = [(torch.randn(n, generator=gen) * 500).to({dtype}) for n in (0, 1, 7, 8, 15, 16, 17, 1000, 1_200_001)]
        grads[5][15] = math.nan
        expect = [g.clone() for g in grads]
        inv = torch.tensor(0.37)
        f, fr = torch.zeros(()), torch.zeros(())
        ops.unscale_reference(expect, inv, fr)
        with ops.use_backend("cpp"):
            ops.unscale_(grads, inv, f)
        assert f.item() == fr.item() == 1.0
        for a, b in zip(grads, expect):
            assert torch.equal(torch.isnan(a), torch.isnan(b))
            assert torch.equal(a[~torch.isnan(a)], b[~torch.isnan(b)])
        print("ok")
        """
    )
    env = dict(os.environ, JEPA_CPU_DISABLE_AVX2="1", OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


# ------------------------------------------------------------------------------------------- update_scale_
def _scaler_state(scale=2.0**16, tracker=0):
    return torch.tensor(scale, dtype=torch.float32), torch.tensor(tracker, dtype=torch.int32)


@pytest.mark.parametrize("interval", [1, 3, 7])
def test_update_scale_matches_torch_over_a_run(native, interval):
    gen = torch.Generator().manual_seed(interval)
    found_seq = (torch.rand(300, generator=gen) < 0.15).float().tolist()
    s, t = _scaler_state()
    s_ref, t_ref = _scaler_state()
    for k, f in enumerate(found_seq):
        found = torch.tensor(f)
        with ops.use_backend("cpp"):
            out = ops.update_scale_(s, t, found, 2.0, 0.5, interval)
        ops.update_scale_reference(s_ref, t_ref, found, 2.0, 0.5, interval)
        assert out is s
        assert s.item() == s_ref.item() and t.item() == t_ref.item(), f"diverged at step {k}"


def test_update_scale_edges(native):
    s, t = _scaler_state(3.0e38, 4)
    with ops.use_backend("cpp"):
        ops.update_scale_(s, t, torch.zeros(()), 2.0, 0.5, 5)
    assert s.item() == pytest.approx(3.0e38) and t.item() == 0  # never grows to inf
    s, t = _scaler_state(8.0, 3)
    with ops.use_backend("cpp"):
        ops.update_scale_(s, t, torch.tensor(math.nan), 2.0, 0.5, 5)
    assert s.item() == 4.0 and t.item() == 0  # NaN in found_inf counts as found
    s, t = _scaler_state(8.0, 3)
    with ops.use_backend("cpp"):
        ops.update_scale_(s, t, torch.tensor(2.0), 2.0, 0.25, 5)  # found_inf summed over devices
    assert s.item() == 2.0 and t.item() == 0


def test_update_scale_bad_arguments(native):
    s, t, f = torch.ones(()), torch.zeros((), dtype=torch.int32), torch.zeros(())
    with pytest.raises(TypeError, match="growth_tracker has dtype torch.int64"):
        ops.update_scale_(s, torch.zeros((), dtype=torch.int64), f, 2.0, 0.5, 10)
    with pytest.raises(TypeError, match="scale has dtype torch.float64"):
        ops.update_scale_(s.double(), t, f, 2.0, 0.5, 10)
    with pytest.raises(ValueError, match="growth_factor must be a finite number > 0, got -2.0"):
        ops.update_scale_(s, t, f, -2.0, 0.5, 10)
    with pytest.raises(ValueError, match="growth_interval must be in"):
        ops.update_scale_(s, t, f, 2.0, 0.5, 0)
    with pytest.raises(TypeError, match="growth_interval must be an int"):
        ops.update_scale_(s, t, f, 2.0, 0.5, 10.5)
    with pytest.raises(ValueError, match="found_inf is on meta"):
        ops.update_scale_(s, t, torch.zeros((), device="meta"), 2.0, 0.5, 10)
    with ops.use_backend(update_scale_="triton"), pytest.raises(BackendUnavailableError, match="does not implement"):
        ops.update_scale_(s, t, f, 2.0, 0.5, 10)


def test_plan_cache_is_cleared_between_tests():
    assert not _native._PLANS


def test_concurrent_calls_from_python_threads(native):
    """The GIL is released during the C++ pass and the pool serves one caller at a time (others run alone):
    concurrent calls on disjoint grads all give the reference result."""
    import threading

    n = 2 * native.unscale_config()["min_elements_per_thread"] + 1
    gen = torch.Generator().manual_seed(21)
    sets = [[torch.randn(n, generator=gen), torch.randn(77, generator=gen)] for _ in range(4)]
    sets[2][1][5] = math.inf
    expect = [[g * 0.125 for g in s] for s in sets]
    founds = [torch.zeros(()) for _ in sets]
    errors = []

    def work(k):
        try:
            for _ in range(3):  # x (1/8)**3 then back with 8**3 below: exact powers of two
                ops.unscale_(sets[k], torch.tensor(0.125), founds[k])
            for _ in range(2):
                ops.unscale_(sets[k], torch.tensor(8.0), founds[k])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(sets))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k, (s, e) in enumerate(zip(sets, expect)):
        _assert_same(s, e)
        assert founds[k].item() == (1.0 if k == 2 else 0.0)


def test_plans_are_cached_only_for_gradients_that_persist(native):
    from jepa.ops import amp as amp_mod

    inv, found = torch.tensor(0.5), torch.zeros(())
    # fresh tensors every call (zero_grad(set_to_none=True)): never cached, always right
    for k in range(4):
        grads = [torch.full((7,), 2.0**k), torch.full((3,), 4.0)]
        ops.unscale_(grads, inv, found)
        assert torch.equal(grads[0], torch.full((7,), 2.0 ** (k - 1))) and torch.equal(grads[1], torch.full((3,), 2.0))
        assert not _native._PLANS
        del grads
    # the same tensors again: cached from the second call on, results unchanged
    grads = [torch.full((7,), 8.0), torch.full((3,), 8.0)]
    for k in range(3):
        ops.unscale_(grads, inv, found)
        assert torch.equal(grads[0], torch.full((7,), 8.0 / 2 ** (k + 1)))
        assert bool(_native._PLANS) == (k >= 1)
    assert found.item() == 0.0
    grads[1] = torch.full((5,), 1.0)  # one entry replaced: the cached plan no longer matches
    ops.unscale_(grads, inv, found)
    assert torch.equal(grads[1], torch.full((5,), 0.5)) and torch.equal(grads[0], torch.full((7,), 0.5))
    amp_mod._hint = None
