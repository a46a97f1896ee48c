"""jepa.ops._native.DeviceTable: the cached launch tables of the multi-tensor EMA (Triton and jepa._C's
CUDA kernel) are safe across CUDA streams and CUDA-graph capture.

A table is copied once to the device on the stream of its first call. Another stream must wait for that
copy before a kernel on it reads the table; a copy made inside a graph capture would be replayed from a
host buffer, so building a table there is refused. The stream and capture behaviour needs a GPU (those
tests skip here); the refusal itself is decided before any CUDA call and is checked on CPU too.
"""

from __future__ import annotations

import importlib

import pytest
import torch

import jepa.ops as ops
from jepa.ops import _native

ema_mod = importlib.import_module("jepa.ops.ema_update")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_a_cpu_table_holds_the_values():
    table = _native.DeviceTable([3, -1, 2**40], torch.device("cpu"), "ema_update")
    assert table.get().dtype == torch.int64 and table.get().tolist() == [3, -1, 2**40]
    assert table.get() is table.get()


def test_building_a_cuda_table_inside_a_graph_capture_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    with pytest.raises(RuntimeError, match=r"ema_update: .*inside a CUDA-graph capture.*before capturing"):
        _native.DeviceTable([1, 2, 3], torch.device("cuda", 0), "ema_update")


def _delayed(stream):
    """Queue ~50 ms of GPU work on ``stream``: whatever is enqueued after it runs late."""
    with torch.cuda.stream(stream):
        torch.cuda._sleep(50_000_000)


@needs_cuda
@torch.no_grad()
def test_a_table_built_on_one_stream_is_waited_for_on_another():  # pragma: no cover - GPU only
    kernels = pytest.importorskip("jepa.kernels.triton.ema_update")
    t = [torch.zeros(70_000, device="cuda"), torch.zeros(5, device="cuda")]
    o = [torch.ones(70_000, device="cuda"), torch.ones(5, device="cuda")]
    torch.cuda.synchronize()
    builder, user = torch.cuda.Stream(), torch.cuda.Stream()
    _delayed(builder)  # the table's copy waits behind this on the builder stream
    with torch.cuda.stream(builder):
        groups = kernels.build_groups(t, o)
        tables = [_native.DeviceTable(g.layout, t[0].device, "ema_update") for g in groups]
    with torch.cuda.stream(user):  # without a wait on the copy, this kernel reads an unwritten table
        kernels.ema_update(groups, [tb.get() for tb in tables], 0.5)
    torch.cuda.synchronize()
    for x in t:
        torch.testing.assert_close(x, torch.full_like(x, 0.5), rtol=0, atol=0)


@needs_cuda
@torch.no_grad()
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_the_op_on_a_side_stream_waits_for_a_table_built_on_another(backend):  # pragma: no cover - GPU only
    if backend == "cuda" and not ops._backend.cuda_kernels_available():
        pytest.skip("jepa._C without CUDA kernels")
    if backend == "triton" and not ops._backend.triton_available():
        pytest.skip("triton is not installed")
    t = [torch.zeros(70_000, device="cuda"), torch.zeros(5, device="cuda")]
    o = [torch.ones(70_000, device="cuda"), torch.ones(5, device="cuda")]
    torch.cuda.synchronize()
    builder, user = torch.cuda.Stream(), torch.cuda.Stream()
    plan = _native.get_plan("ema_update", (t, o), ema_mod._validate)
    _delayed(builder)
    with torch.cuda.stream(builder):  # the op's first call builds the table here, its copy delayed
        if backend == "cuda":
            plan.device_table()
        else:
            ema_mod._triton_tables(plan, t, o)
    with ops.use_backend(ema_update=backend), torch.cuda.stream(user):
        ops.ema_update(t, o, 0.5)  # without a wait on the copy, reads an unwritten table
    torch.cuda.synchronize()
    for x in t:
        torch.testing.assert_close(x, torch.full_like(x, 0.5), rtol=0, atol=0)


@needs_cuda
@torch.no_grad()
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_ema_update_in_a_cuda_graph(backend):  # pragma: no cover - GPU only
    if backend == "cuda" and not ops._backend.cuda_kernels_available():
        pytest.skip("jepa._C without CUDA kernels")
    if backend == "triton" and not ops._backend.triton_available():
        pytest.skip("triton is not installed")
    gen = torch.Generator(device="cuda").manual_seed(0)
    t = [torch.randn(n, device="cuda", generator=gen) for n in (70_000, 33, 5)]
    o = [torch.randn(n, device="cuda", generator=gen) for n in (70_000, 33, 5)]
    expect = [x.double() for x in t]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with ops.use_backend(ema_update=backend):
        with torch.cuda.stream(side):  # warm-up: builds the table (and compiles the kernel) before capture
            ops.ema_update(t, o, 0.9)
        torch.cuda.current_stream().wait_stream(side)
        expect = [e * 0.9 + y.double() * 0.1 for e, y in zip(expect, o)]
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            ops.ema_update(t, o, 0.9)
        junk = [torch.full((4096,), -1, dtype=torch.int64).pin_memory() for _ in range(8)]  # reuse freed pinned blocks
        for _ in range(3):
            graph.replay()
            expect = [e * 0.9 + y.double() * 0.1 for e, y in zip(expect, o)]
        torch.cuda.synchronize()
        del junk
        for x, e in zip(t, expect):
            torch.testing.assert_close(x.double(), e, rtol=1e-5, atol=1e-6)
        fresh_t, fresh_o = [torch.zeros(9, device="cuda")], [torch.ones(9, device="cuda")]
        with pytest.raises(RuntimeError, match="before capturing"):
            with torch.cuda.graph(torch.cuda.CUDAGraph()):
                ops.ema_update(fresh_t, fresh_o, 0.5)
