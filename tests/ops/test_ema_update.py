"""jepa.ops.ema_update: the C++ kernel against a float64 reference, backend dispatch, input errors."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time

import pytest
import torch

import importlib

import jepa.ops as ops
from jepa.ops import BackendUnavailableError, _backend, _native

ema_mod = importlib.import_module("jepa.ops.ema_update")  # the module (jepa.ops.ema_update is also the function)
from oracles import multi_rel_err as _rel_err

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}
MOMENTA = [0.0, 1.0, 0.5, 0.9, 0.996, 0.3]


def _code(native, dtype):
    return {
        torch.float32: native.DTYPE_FLOAT32,
        torch.float16: native.DTYPE_FLOAT16,
        torch.bfloat16: native.DTYPE_BFLOAT16,
    }[dtype]


def _sizes(native, gen):
    """Odd sizes: empty, one element, primes, a tensor bigger than one chunk, many small ones."""
    cfg = native.ema_config()
    big = 2 * cfg["min_elements_per_thread"] + 13  # the call runs on several threads, this tensor spans chunks
    assert big > 4 * cfg["min_chunk_elements"]
    sizes = [0, 1, 2, 3, 7, 31, 33, 1000, 4097, big, 0, 1, cfg["min_chunk_elements"] + 5]
    sizes += torch.randint(0, 70, (300,), generator=gen).tolist()
    return sizes


def _make(sizes, dtype, gen, *, scale=1.0):
    targets = [(torch.randn(n, generator=gen, dtype=torch.float64) * scale).to(dtype) for n in sizes]
    onlines = [(torch.randn(n, generator=gen, dtype=torch.float64) * scale).to(dtype) for n in sizes]
    return targets, onlines


def _reference64(targets, onlines, m):
    return [t.double() * m + o.double() * (1.0 - m) for t, o in zip(targets, onlines)]


@torch.no_grad()
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("momentum", MOMENTA)
def test_cpp_matches_float64_reference(native, dtype, momentum):
    gen = torch.Generator().manual_seed(1234 + DTYPES.index(dtype) * 97 + int(momentum * 1000))
    sizes = _sizes(native, gen)
    targets, onlines = _make(sizes, dtype, gen)
    before = [t.clone() for t in targets]
    refs = _reference64(targets, onlines, momentum)
    with ops.use_backend("cpp"):
        ops.ema_update(targets, onlines, momentum)
    err = _rel_err(targets, refs)
    assert err <= TOL[dtype], f"relative error {err} > {TOL[dtype]} for {dtype}, momentum {momentum}"
    if momentum == 1.0:  # targets unchanged, bit for bit
        assert all(torch.equal(a, b) for a, b in zip(targets, before))
    if momentum == 0.0:  # targets become the onlines, bit for bit
        assert all(torch.equal(a, b) for a, b in zip(targets, onlines))
    assert all(not torch.isnan(t).any() for t in targets)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cpp_matches_torch_reference(native, dtype):
    gen = torch.Generator().manual_seed(7)
    sizes = _sizes(native, gen)
    targets, onlines = _make(sizes, dtype, gen, scale=3.0)
    expected = [t.clone() for t in targets]
    ops.ema_update_reference(expected, onlines, 0.9)
    with ops.use_backend("cpp"):
        ops.ema_update(targets, onlines, 0.9)
    assert _rel_err(targets, [e.double() for e in expected]) <= TOL[dtype]


def test_multidim_and_parameters(native):
    gen = torch.Generator().manual_seed(3)
    shapes = [(3, 5, 7), (1,), (768, 3), (2, 0, 4), (5, 1, 1, 1)]
    online = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes])
    target = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes])
    refs = _reference64(list(target), list(online), 0.75)
    with ops.use_backend("cpp"):
        ops.ema_update(target.parameters(), online.parameters(), 0.75)  # generators and requires_grad params
    assert _rel_err(list(target), refs) <= 1e-5
    assert all(p.requires_grad for p in target)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_thread_count_does_not_change_results(native, dtype):
    gen = torch.Generator().manual_seed(11)
    per_thread = native.ema_config()["min_elements_per_thread"]
    sizes = [per_thread * 3 + 17, 5, 0, 123457] + torch.randint(0, 300, (200,), generator=gen).tolist()
    targets, onlines = _make(sizes, dtype, gen)
    results = {}
    for threads in (1, 2, 3, 8):
        # A pool worker that wakes up after the caller finished does not join, so how many threads
        # ran varies; repeat (on fresh copies) until the work was really shared, and check every run.
        deadline = time.monotonic() + 5.0
        while True:
            outs = [t.clone() for t in targets]
            table = native.TensorTable(
                [[t.data_ptr() for t in outs], [o.data_ptr() for o in onlines]],
                [t.numel() for t in outs],
                _code(native, dtype),
            )
            used = native.ema_update(table, 0.9, threads)
            assert 1 <= used <= threads
            if threads in results:
                assert all(torch.equal(a, b) for a, b in zip(results[threads], outs))
            results[threads] = outs
            if threads == 1 or used > 1 or time.monotonic() > deadline:
                break
        assert threads == 1 or used > 1, "the work was never shared between threads"
    for threads in (2, 3, 8):
        assert all(torch.equal(a, b) for a, b in zip(results[1], results[threads])), f"{threads} threads differ from 1"


def test_small_total_runs_on_one_thread(native):
    t, o = torch.randn(1000), torch.randn(1000)
    used = native.ema_update([t.data_ptr()], [o.data_ptr()], [1000], native.DTYPE_FLOAT32, 0.5, 8)
    assert used == 1


def test_list_binding_matches_table_binding(native):
    gen = torch.Generator().manual_seed(5)
    targets, onlines = _make([10, 0, 300000, 3], torch.bfloat16, gen)
    copies = [t.clone() for t in targets]
    args = ([t.data_ptr() for t in targets], [o.data_ptr() for o in onlines], [t.numel() for t in targets])
    native.ema_update(*args, native.DTYPE_BFLOAT16, 0.8, 2)
    table = native.TensorTable([[c.data_ptr() for c in copies], args[1]], args[2], native.DTYPE_BFLOAT16)
    native.ema_update(table, 0.8, 2)
    assert all(torch.equal(a, b) for a, b in zip(targets, copies))
    assert table.num_tensors == 4 and table.depth == 2 and table.total_numel == 300013
    assert table.numels() == [10, 0, 300000, 3] and table.dtype_code == native.DTYPE_BFLOAT16


def test_concurrent_calls_from_python_threads(native):
    """The GIL is released and the thread pool is shared: concurrent callers must all be correct."""
    gen = torch.Generator().manual_seed(21)
    per_thread = native.ema_config()["min_elements_per_thread"]
    jobs = [_make([2 * per_thread + 3, 17, 4099], torch.float32, gen) for _ in range(4)]  # each wants 2 threads
    refs = [_reference64(t, o, 0.6) for t, o in jobs]
    errors = []

    def work(targets, onlines):
        try:
            with ops.use_backend("cpp"):
                ops.ema_update(targets, onlines, 0.6)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=job) for job in jobs]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not errors
    for (targets, _), ref in zip(jobs, refs):
        assert _rel_err(targets, ref) <= 1e-5


def _child_ema(queue, n):
    # torch's own OpenMP pool cannot be used in a forked child once the parent used it (GNU OpenMP
    # limitation, hence torch.set_num_threads(1) here as in DataLoader workers); jepa._C's pool can.
    torch.set_num_threads(1)
    from jepa import _C  # noqa: PLC0415

    t = torch.full((n,), 2.0)
    o = torch.full((n,), 4.0)
    import time  # noqa: PLC0415

    used, deadline = 1, time.monotonic() + 5.0
    while used < 2 and time.monotonic() < deadline:  # until a pool worker (made in this child) took part
        t.fill_(2.0)
        used = _C.ema_update([t.data_ptr()], [o.data_ptr()], [t.numel()], _C.DTYPE_FLOAT32, 0.5, 2)
    queue.put((used, float(t.double().sum())))


def test_works_in_forked_child_after_threads_ran(native):
    n = 3 * native.ema_config()["min_elements_per_thread"] + 1
    big_t, big_o = torch.randn(n), torch.randn(n)
    deadline = time.monotonic() + 5.0
    while native.ema_update([big_t.data_ptr()], [big_o.data_ptr()], [n], native.DTYPE_FLOAT32, 0.5, 2) != 2:
        if time.monotonic() > deadline:  # until the parent's pool has a worker thread that took part
            pytest.fail("the pool never ran a second thread")
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_ema, args=(queue, n))
    proc.start()
    proc.join(timeout=60)
    if proc.is_alive():  # pragma: no cover - a deadlock in the child
        proc.kill()
        pytest.fail("ema_update hung in a forked child")
    assert proc.exitcode == 0
    used_child, total = queue.get(timeout=5)
    assert used_child == 2
    assert total == pytest.approx(3.0 * n)


# ----------------------------------------------------------------------------- dispatch


class _Spy:
    def __init__(self, monkeypatch):
        self.calls = []
        real_cpp, real_ref = ema_mod._run_cpp, ema_mod.ema_update_reference

        def run_cpp(plan, m):
            self.calls.append("cpp")
            real_cpp(plan, m)

        def reference(targets, onlines, m):
            self.calls.append("torch")
            real_ref(targets, onlines, m)

        monkeypatch.setattr(ema_mod, "_run_cpp", run_cpp)
        monkeypatch.setattr(ema_mod, "ema_update_reference", reference)


def _pair(n=10, dtype=torch.float32):
    return [torch.randn(n, dtype=dtype), torch.randn(3, 4, dtype=dtype)], [
        torch.randn(n, dtype=dtype),
        torch.randn(3, 4, dtype=dtype),
    ]


def test_auto_uses_cpp_for_cpu_tensors(native, monkeypatch):
    spy = _Spy(monkeypatch)
    t, o = _pair()
    ops.ema_update(t, o, 0.9)
    assert spy.calls == ["cpp"]


@pytest.mark.parametrize(
    "case",
    ["float64", "non_contiguous", "mixed_dtypes"],
)
def test_auto_falls_back_to_torch_when_cpp_does_not_apply(native, monkeypatch, case):
    spy = _Spy(monkeypatch)
    if case == "float64":
        t, o = _pair(dtype=torch.float64)
    elif case == "non_contiguous":
        t, o = _pair()
        t[1] = torch.randn(4, 3).t()
        o[1] = torch.randn(4, 3).t()
    else:
        t, o = _pair()
        t[1], o[1] = t[1].bfloat16(), o[1].bfloat16()
    refs = _reference64(t, o, 0.7)
    ops.ema_update(t, o, 0.7)
    assert spy.calls == ["torch"]
    assert _rel_err(t, refs) <= 1e-2


def test_env_var_forces_backend(native, monkeypatch):
    spy = _Spy(monkeypatch)
    t, o = _pair()
    monkeypatch.setenv("JEPA_BACKEND", "torch")
    ops.ema_update(t, o, 0.9)
    monkeypatch.setenv("JEPA_BACKEND", "cpp")
    ops.ema_update(t, o, 0.9)
    assert spy.calls == ["torch", "cpp"]


def test_context_manager_overrides_env_var(native, monkeypatch):
    spy = _Spy(monkeypatch)
    t, o = _pair()
    monkeypatch.setenv("JEPA_BACKEND", "cpp")
    with ops.use_backend("torch"):
        ops.ema_update(t, o, 0.9)
        with ops.use_backend("cpp"):
            ops.ema_update(t, o, 0.9)
        ops.ema_update(t, o, 0.9)
    assert spy.calls == ["torch", "cpp", "torch"]


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_forcing_gpu_backends_on_cpu_tensors_raises(native, backend, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # Triton runs CPU tensors only under its interpreter
    t, o = _pair()
    before = [x.clone() for x in t]
    with ops.use_backend(backend), pytest.raises(BackendUnavailableError, match=backend):
        ops.ema_update(t, o, 0.9)
    assert all(torch.equal(a, b) for a, b in zip(t, before)), "a refused call must not touch the targets"


def test_forcing_triton_raises_even_for_empty_lists(monkeypatch):
    monkeypatch.setattr(_backend, "triton_available", lambda: False)  # as where triton is not installed
    monkeypatch.setenv("JEPA_BACKEND", "triton")
    with pytest.raises(BackendUnavailableError, match="triton"):
        ops.ema_update([], [], 0.5)


@pytest.mark.parametrize(
    "case, match",
    [("float64", "float64"), ("non_contiguous", "not contiguous"), ("mixed", "mixed dtypes"), ("subclass", "Tensor")],
)
def test_forcing_cpp_on_inapplicable_tensors_raises(native, case, match):
    t, o = _pair()
    if case == "float64":
        t, o = _pair(dtype=torch.float64)
    elif case == "non_contiguous":
        t[0], o[0] = torch.randn(20)[::2], torch.randn(20)[::2]
    elif case == "mixed":
        t[0], o[0] = t[0].half(), o[0].half()
    else:

        class MyTensor(torch.Tensor):
            pass

        t[0] = t[0].as_subclass(MyTensor)
    with ops.use_backend("cpp"), pytest.raises(BackendUnavailableError, match=match):
        ops.ema_update(t, o, 0.9)


def test_without_extension_auto_uses_torch_and_forced_cpp_raises(monkeypatch):
    monkeypatch.setattr(_backend, "_native_cache", None)  # as if jepa._C were not built
    monkeypatch.setattr(_backend, "_cuda_usable_cache", None)
    spy = _Spy(monkeypatch)
    t, o = _pair()
    refs = _reference64(t, o, 0.25)
    ops.ema_update(t, o, 0.25)
    assert spy.calls == ["torch"]
    assert _rel_err(t, refs) <= 1e-5
    assert "cpp" not in ops.available_backends()
    with ops.use_backend("cpp"), pytest.raises(BackendUnavailableError, match="jepa._C"):
        ops.ema_update(t, o, 0.25)
    with ops.use_backend("cuda"), pytest.raises(BackendUnavailableError, match="cuda"):
        ops.ema_update(t, o, 0.25)


def test_unknown_backend_name_is_refused(monkeypatch):
    monkeypatch.setenv("JEPA_BACKEND", "fast")
    with pytest.raises(ValueError, match="fast"):
        ops.ema_update(*_pair(), 0.5)


# ----------------------------------------------------------------------------- plan cache


def test_reassigned_data_is_seen(native):
    t = torch.nn.Parameter(torch.zeros(1000))
    o = torch.nn.Parameter(torch.ones(1000))
    ops.ema_update([t], [o], 0.5)
    assert torch.allclose(t.detach(), torch.full((1000,), 0.5))
    old = t.data
    t.data = torch.zeros(37)  # same Parameter object, new storage and size
    o.data = torch.ones(37)
    ops.ema_update([t], [o], 0.5)
    assert torch.allclose(t.detach(), torch.full((37,), 0.5))
    assert torch.allclose(old, torch.full((1000,), 0.5)), "the old storage must not be written"


def test_views_with_changing_sizes_are_replanned(native):
    base_t, base_o = torch.zeros(1000), torch.ones(1000)
    for k in (1000, 10, 500):  # same data pointers, different lengths, fresh view objects each time
        base_t.zero_()
        ops.ema_update([base_t[:k]], [base_o[:k]], 0.0)
        assert float(base_t.sum()) == k


def test_plan_is_dropped_when_tensors_die(native):
    t, o = _pair()
    ops.ema_update(t, o, 0.5)
    assert len(_native._PLANS) == 1
    del t, o
    assert len(_native._PLANS) == 0


def test_repeated_calls_accumulate(native):
    t, o = [torch.zeros(5)], [torch.ones(5)]
    for _ in range(3):
        ops.ema_update(t, o, 0.5)
    assert torch.allclose(t[0], torch.full((5,), 0.875))


# ----------------------------------------------------------------------------- errors


def test_length_mismatch():
    with pytest.raises(ValueError, match=r"2 targets but 1 onlines"):
        ops.ema_update([torch.zeros(2), torch.zeros(2)], [torch.zeros(2)], 0.5)


def test_shape_mismatch_names_index_and_shapes():
    with pytest.raises(ValueError, match=r"targets\[1\] has shape \(2, 3\) but onlines\[1\] has shape \(3, 2\)"):
        ops.ema_update([torch.zeros(4), torch.zeros(2, 3)], [torch.zeros(4), torch.zeros(3, 2)], 0.5)


@pytest.mark.parametrize("momentum", [-0.1, 1.5, float("nan"), float("inf")])
def test_momentum_out_of_range(momentum):
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
        ops.ema_update([torch.zeros(2)], [torch.zeros(2)], momentum)


@pytest.mark.parametrize("momentum", ["0.9", None, True, torch.zeros(2)])
def test_momentum_wrong_type(momentum):
    with pytest.raises(TypeError, match="momentum"):
        ops.ema_update([torch.zeros(2)], [torch.zeros(2)], momentum)


def test_momentum_accepts_scalar_tensor_and_int():
    t = [torch.zeros(3)]
    ops.ema_update(t, [torch.ones(3)], torch.tensor(0.5))
    ops.ema_update(t, [torch.ones(3)], 1)
    assert torch.allclose(t[0], torch.full((3,), 0.5))


def test_non_tensor_element():
    with pytest.raises(TypeError, match=r"onlines\[0\] must be a torch.Tensor, got list"):
        ops.ema_update([torch.zeros(2)], [[0.0, 1.0]], 0.5)


def test_integer_targets():
    with pytest.raises(TypeError, match=r"targets\[0\] has dtype torch.int64; expected a floating-point dtype"):
        ops.ema_update([torch.zeros(2, dtype=torch.long)], [torch.zeros(2, dtype=torch.long)], 0.5)


def test_dtype_mismatch_within_pair():
    with pytest.raises(TypeError, match=r"onlines\[0\] has dtype torch.float16 but targets\[0\] has dtype torch.float32"):
        ops.ema_update([torch.zeros(2)], [torch.zeros(2, dtype=torch.float16)], 0.5)


def test_empty_lists_are_a_no_op(monkeypatch):
    """Nothing is planned, launched or computed for empty lists (and they return None), but the momentum
    is still checked."""
    calls = []
    for name in ("_run_cpp", "_run_cuda", "_run_triton", "ema_update_reference"):
        monkeypatch.setattr(ema_mod, name, lambda *a, _name=name: calls.append(_name))
    monkeypatch.setattr(ema_mod._native, "get_plan", lambda *a: calls.append("get_plan"))
    assert ops.ema_update([], [], 0.5) is None
    assert ops.ema_update(iter(()), iter(()), 0.5) is None
    assert calls == []
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\], got 1.5"):
        ops.ema_update([], [], 1.5)


def test_native_binding_validates_its_arguments(native):
    t, o = torch.zeros(4), torch.zeros(4)
    p, q = t.data_ptr(), o.data_ptr()
    f32 = native.DTYPE_FLOAT32
    with pytest.raises(ValueError, match="same length"):
        native.ema_update([p], [q, q], [4], f32, 0.5, 1)
    with pytest.raises(ValueError, match="dtype_code=7"):
        native.ema_update([p], [q], [4], 7, 0.5, 1)
    with pytest.raises(ValueError, match="negative"):
        native.ema_update([p], [q], [-1], f32, 0.5, 1)
    with pytest.raises(ValueError, match="null"):
        native.ema_update([0], [q], [4], f32, 0.5, 1)
    with pytest.raises(ValueError, match="aligned"):
        native.ema_update([p + 1], [q], [2], f32, 0.5, 1)
    with pytest.raises(ValueError, match=r"momentum=.* must be in \[0, 1\]"):
        native.ema_update([p], [q], [4], f32, 1.5, 1)
    with pytest.raises(ValueError, match="2 pointer lists"):
        native.ema_update(native.TensorTable([[p]], [4], f32), 0.5, 1)
    native.ema_update([0], [0], [0], f32, 0.5, 1)  # empty tensors may have null pointers


def test_has_cuda_is_consistent(native):
    info = native.build_info()
    assert native.has_cuda() is info["cuda"]
    usable = native.has_cuda() and native.cuda_device_count() > 0
    assert _backend.cuda_kernels_available() is usable
    assert ("cuda" in ops.available_backends()) is usable
    assert "cpp" in ops.available_backends()
    if not usable:
        assert _backend.cuda_unavailable_reason()
    if native.has_cuda():
        assert info["cuda_runtime_version"] > 0
        assert info["cuda_archs"]
        assert native.cuda_device_count() >= 0
    else:
        assert info["cuda_runtime_version"] is None
        assert native.cuda_device_count() == 0
        with pytest.raises(RuntimeError, match="without CUDA"):
            native.ema_update_cuda(native.TensorTable([[0], [0]], [0], native.DTYPE_FLOAT32), 0.5, 0, 0)
    if torch.cuda.is_available() and native.has_cuda():
        assert native.cuda_device_count() == torch.cuda.device_count()


_PORTABLE_CHILD = r"""
import math, torch
from jepa import _C
assert not _C.build_info()["avx2_half_path"], "JEPA_CPU_DISABLE_AVX2 was not honoured"
gen = torch.Generator().manual_seed(3)
for dtype, code, tol in ((torch.float32, 0, 1e-5), (torch.float16, 1, 1e-2), (torch.bfloat16, 2, 1e-2)):
    sizes = [0, 1, 5, 17, 1000, 70001]
    ts = [torch.randn(n, generator=gen, dtype=torch.float64).to(dtype) for n in sizes]
    os_ = [torch.randn(n, generator=gen, dtype=torch.float64).to(dtype) for n in sizes]
    ref = [t.double() * 0.7 + o.double() * 0.3 for t, o in zip(ts, os_)]
    _C.ema_update([t.data_ptr() for t in ts], [o.data_ptr() for o in os_], sizes, code, 0.7, 2)
    num = math.sqrt(sum(float(((t.double() - r) ** 2).sum()) for t, r in zip(ts, ref)))
    den = math.sqrt(sum(float((r ** 2).sum()) for r in ref))
    assert num / den <= tol, (dtype, num / den)
print("portable ok")
"""


def test_portable_loops_without_avx2(native, tmp_path):
    """The non-intrinsics loops (CPUs without AVX2/F16C) against the float64 reference, in a subprocess."""
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    env = dict(os.environ, JEPA_CPU_DISABLE_AVX2="1")
    # cwd outside the repository: `python -c` puts the cwd first on sys.path, and a source checkout's
    # jepa/ (without the compiled _C) would shadow the installed package.
    proc = subprocess.run(
        [sys.executable, "-c", _PORTABLE_CHILD], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "portable ok" in proc.stdout


def test_meta_tensors_use_the_reference(native):
    t, o = [torch.empty(3, 4, device="meta")], [torch.empty(3, 4, device="meta")]
    ops.ema_update(t, o, 0.5)  # auto: no native kernel for meta, torch handles it
    with ops.use_backend("cpp"), pytest.raises(BackendUnavailableError, match="meta"):
        ops.ema_update(t, o, 0.5)


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_update_is_visible_to_autograd(native, backend):
    """Like any in-place op, the update bumps version counters: a value saved for backward before the
    update makes backward fail instead of silently using the new values."""
    target = torch.nn.Parameter(torch.randn(8))
    x = torch.randn(8, requires_grad=True)
    loss = (x * target).sum()  # saves `target` for x's gradient
    before = target._version
    with ops.use_backend(backend):
        ops.ema_update([target], [torch.randn(8)], 0.9)
    assert target._version > before
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_old_module_path_still_imports_the_op():
    from jepa.ops.ema import ema_update as old_name, ema_update_reference as old_ref  # noqa: PLC0415

    assert old_name is ops.ema_update and old_ref is ops.ema_update_reference


def test_device_layout_of_a_table(native):
    """What the CUDA kernel reads from device memory: pointers, element prefix sums, per-tensor chunk
    prefix sums (32 KiB chunks), and whether every buffer is 16-byte aligned."""
    ts = [torch.zeros(5), torch.zeros(0), torch.zeros(20000)]
    os_ = [torch.zeros(5), torch.zeros(0), torch.zeros(20000)]
    tp, op = [t.data_ptr() for t in ts], [o.data_ptr() for o in os_]
    table = native.TensorTable([tp, op], [5, 0, 20000], native.DTYPE_FLOAT32)
    chunk = 32768 // 4
    assert table.device_layout() == tp + op + [0, 5, 5, 20005] + [0, 1, 1, 1 + -(-20000 // chunk)]
    assert table.aligned16
    half = torch.zeros(40000, dtype=torch.float16)
    t16 = native.TensorTable([[half.data_ptr()], [half.data_ptr()]], [40000], native.DTYPE_FLOAT16)
    assert t16.device_layout()[-2:] == [0, -(-40000 // (32768 // 2))]
    odd = torch.zeros(9)[1:]  # 4 bytes past a 16-byte boundary
    assert not native.TensorTable([[odd.data_ptr()], [odd.data_ptr()]], [8], native.DTYPE_FLOAT32).aligned16
