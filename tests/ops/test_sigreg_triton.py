"""jepa.ops.sigreg: the fused Triton kernels (under TRITON_INTERPRET=1 on CPU) against a float64 reference,
forward and backward on odd sizes and every supported dtype; the custom op under torch.compile and
opcheck; dispatch and errors; and an ahead-of-time build for sm_80 and sm_90 (shared memory, spills)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

import jepa.ops as ops  # noqa: E402
from jepa.ops import BackendUnavailableError, _backend, use_backend  # noqa: E402
from oracles import PoisonedTorch  # noqa: E402

if not _backend.triton_can_run(torch.empty(1, device="cuda" if torch.cuda.is_available() else "cpu")):
    pytest.skip("Triton cannot run here (no GPU and TRITON_INTERPRET is not set)", allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# float32: the projection's tl.dot runs tf32x3 on GPUs (about float32 accuracy, docs/guides/kernels.md allows 5e-4
# where tf32 is used) and IEEE float32 under the interpreter.
TOL = {torch.float32: 1e-5 if DEVICE == "cpu" else 5e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture
def poisoned(monkeypatch):
    """Fresh buffers of the kernel module come back full of NaN: an element a kernel forgot to write fails."""
    from jepa.kernels.triton import sigreg as kernels  # noqa: PLC0415

    monkeypatch.setattr(kernels, "torch", PoisonedTorch())


def _unit_columns(d, m, gen):
    a = torch.randn(d, m, generator=gen)
    return (a / a.norm(dim=0)).to(DEVICE)


def _check(out, ref, tol):
    out, ref = out.double(), ref.double()
    assert not torch.isnan(out).any(), "NaN in the output"
    num, den = (out - ref).norm().item(), ref.norm().item()
    assert num <= tol * den, f"error {num:.3e} > {tol} x {den:.3e}"


def _run(z, a, *, t_max=3.0, knots=17, upstream=1.0):
    """(value, dz) of the Triton path and of the float64 reference on the same (rounded) inputs."""
    z = z.requires_grad_(True)
    with use_backend("triton"):
        out = ops.sigreg(z, a, t_max=t_max, knots=knots)
    out.backward(torch.tensor(upstream, dtype=out.dtype, device=DEVICE))
    z64 = z.detach().double().requires_grad_(True)
    ref = ops.sigreg_reference(z64, a.double(), t_max, knots)
    (ref * upstream).backward()
    return out, z.grad, ref, z64.grad


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n, d, m", [(1, 3, 1), (37, 19, 23), (129, 33, 65)])
def test_triton_forward_and_backward_match_float64(poisoned, dtype, n, d, m):
    gen = torch.Generator().manual_seed(n * 1000 + d * 10 + m)
    z = (torch.randn(n, d, generator=gen) * 1.3 + 0.2).to(dtype).to(DEVICE)
    a = _unit_columns(d, m, gen)
    out, dz, ref, dz64 = _run(z, a, upstream=1.7)
    assert out.dtype == torch.float32 and out.dim() == 0
    assert dz.dtype == dtype and dz.shape == z.shape
    _check(out, ref, TOL[dtype])
    _check(dz, dz64, TOL[dtype])


def test_triton_several_row_chunks_feature_chunks_and_direction_blocks(poisoned, monkeypatch):
    """Many row blocks per program (the partial sums of several tiles accumulate in one program, and
    the last program gets fewer blocks), D over several BLOCK_K chunks, M over several BLOCK_M blocks."""
    from jepa.kernels.triton import sigreg as kernels  # noqa: PLC0415

    monkeypatch.setattr(kernels, "_TARGET_PROGRAMS", 5)
    n, d, m = 333, 77, 70
    block_n, block_m, block_k = kernels._blocks(n, m, d)
    assert n > 4 * block_n and d > 2 * block_k and m > 2 * block_m
    gen = torch.Generator().manual_seed(6)
    z = (torch.randn(n, d, generator=gen) * 0.9).to(DEVICE)
    a = _unit_columns(d, m, gen)
    out, dz, ref, dz64 = _run(z, a, t_max=4.0, knots=11)
    _check(out, ref, TOL[torch.float32])
    _check(dz, dz64, TOL[torch.float32])


@pytest.mark.parametrize("scale", [0.01, 25.0])
def test_triton_tiny_and_large_projections(poisoned, scale):
    """Near-collapsed embeddings (every angle near 0) and large ones (angles of ~100 radians: the
    kernels' own range reduction and the knot rotations must stay accurate)."""
    gen = torch.Generator().manual_seed(8)
    z = (torch.randn(65, 12, generator=gen) * scale + 0.1 * scale).to(DEVICE)
    a = _unit_columns(12, 17, gen)
    out, dz, ref, dz64 = _run(z, a)
    _check(out, ref, TOL[torch.float32])
    _check(dz, dz64, TOL[torch.float32])


def test_triton_ecf_and_its_backward_for_any_upstream_gradient(poisoned):
    """sigreg_ecf alone, with a random upstream gradient (the distributed path feeds it all-reduced
    gradients, not the ones of sigreg_from_ecf)."""
    gen = torch.Generator().manual_seed(12)
    z = torch.randn(41, 10, generator=gen).to(DEVICE).requires_grad_(True)
    a = _unit_columns(10, 9, gen)
    with use_backend("triton"):
        ecf = ops.sigreg_ecf(z, a, t_max=2.0, knots=6)
    z64 = z.detach().double().requires_grad_(True)
    ref = ops.sigreg_ecf_reference(z64, a.double(), 2.0, 6)
    assert ecf.shape == ref.shape == (2, 9, 6) and ecf.dtype == torch.float32
    _check(ecf, ref, TOL[torch.float32])
    g = torch.randn(2, 9, 6, generator=gen).to(DEVICE)
    ecf.backward(g)
    ref.backward(g.double())
    _check(z.grad, z64.grad, TOL[torch.float32])


def test_triton_is_deterministic():
    gen = torch.Generator().manual_seed(13)
    z = torch.randn(150, 20, generator=gen).to(DEVICE)
    a = _unit_columns(20, 40, gen)
    runs = []
    for _ in range(2):
        x = z.clone().requires_grad_(True)
        with use_backend("triton"):
            out = ops.sigreg(x, a)
        out.backward()
        runs.append((out.detach(), x.grad))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_triton_sanity_gaussian_small_collapsed_large():
    gen = torch.Generator().manual_seed(14)
    z = torch.randn(512, 16, generator=gen).to(DEVICE)
    a = _unit_columns(16, 64, gen)
    with use_backend("triton"):
        gaussian = ops.sigreg(z, a).item()
        collapsed = ops.sigreg(z[:1].expand(512, 16), a).item()
    assert gaussian < 2.5  # the null expectation is about 1.05
    assert collapsed > 100 * gaussian


# ----------------------------------------------------------------------------- dispatch and errors


def test_forced_triton_refuses_float64_and_directions_that_need_a_gradient():
    z = torch.randn(4, 3, device=DEVICE, dtype=torch.float64)
    with use_backend("triton"), pytest.raises(BackendUnavailableError, match="float64"):
        ops.sigreg(z, torch.randn(3, 2, device=DEVICE))
    a = torch.randn(3, 2, device=DEVICE, requires_grad=True)
    with use_backend("triton"), pytest.raises(BackendUnavailableError, match="directions require a gradient"):
        ops.sigreg(z.float(), a)
    with use_backend("triton"), torch.no_grad():  # no gradient is being recorded: fine
        ops.sigreg(z.float(), a)


def test_auto_sends_directions_that_need_a_gradient_to_the_reference():
    from jepa.ops.sigreg import _choose_impl  # noqa: PLC0415

    z = torch.randn(4, 3, device=DEVICE)
    a = torch.randn(3, 2, device=DEVICE, requires_grad=True)
    assert _choose_impl(z, a) == "torch"
    expected = "triton" if DEVICE == "cuda" else "torch"  # auto runs Triton on CUDA tensors only
    assert _choose_impl(z, a.detach()) == expected


# ----------------------------------------------------------------------------- custom op / torch.compile


def test_torch_compile_fullgraph_matches_eager_on_the_triton_backend():
    gen = torch.Generator().manual_seed(4)
    z0 = torch.randn(19, 9, generator=gen).to(DEVICE)
    a = _unit_columns(9, 5, gen)

    def model(z):
        return ops.sigreg(z * 1.5, a, knots=9) * 2.0

    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm.code)
        return gm.forward

    with use_backend("triton"):
        torch._dynamo.reset()
        torch.compile(model, fullgraph=True, backend=record)(z0)
        assert any("torch.ops.jepa.sigreg_ecf" in g for g in graphs)
        results = []
        for compiled in (False, True):
            z = z0.clone().requires_grad_(True)
            torch._dynamo.reset()
            fn = torch.compile(model, fullgraph=True, backend="aot_eager") if compiled else model
            out = fn(z)
            out.backward()
            results.append((out.detach(), z.grad))
    for eager, comp in zip(*results):
        _check(comp, eager, 1e-6)


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_custom_op_opcheck(impl):
    gen = torch.Generator().manual_seed(9)
    z = torch.randn(9, 5, generator=gen).to(DEVICE).requires_grad_(True)
    a = _unit_columns(5, 4, gen)
    torch.library.opcheck(
        torch.ops.jepa.sigreg_ecf.default,
        (z, a, 3.0, 7, impl),
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
    )


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_custom_op_opcheck_with_permuted_inputs(impl):
    # The backward kernel returns a contiguous dz; the fake and the torch path must too.
    gen = torch.Generator().manual_seed(10)
    z = torch.randn(5, 9, generator=gen).to(DEVICE).T.requires_grad_(True)
    a = _unit_columns(5, 4, gen).T.contiguous().T.requires_grad_(impl == "torch")
    assert not z.is_contiguous() and not a.is_contiguous()
    torch.library.opcheck(
        torch.ops.jepa.sigreg_ecf.default,
        (z, a, 3.0, 7, impl),
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
    )
    ecf = torch.ops.jepa.sigreg_ecf(z, a, 3.0, 7, impl)
    torch.library.opcheck(  # the backward op on its own: opcheck above does not compare its fake
        torch.ops.jepa.sigreg_ecf_backward.default,
        (torch.ones_like(ecf), z.detach(), a.detach(), 3.0, 7, impl, impl == "torch"),
        test_utils=("test_schema", "test_faketensor"),
    )


# ----------------------------------------------------------------------------- ahead-of-time build (sm_80, sm_90)

_AOT_SCRIPT = r"""
import json, os, re, shutil, subprocess, sys, tempfile
os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import jepa.kernels.triton.sigreg as S
sys.path.insert(0, os.environ["JEPA_AOT_HELPERS"])
from _aot_worker import size_products

try:
    from triton.backends.nvidia.compiler import get_ptxas
    def ptxas(cap):
        return get_ptxas(cap).path
except ImportError:
    def ptxas(cap):
        return shutil.which("ptxas")

def build(fn, sig, consts, cap):
    names = fn.arg_names
    full = {n: sig.get(n, "constexpr") for n in names}
    src = ASTSource(fn=fn, signature=full, constexprs={(names.index(k),): v for k, v in consts.items()})
    k = triton.compile(src, target=GPUTarget("cuda", cap, 32), options={"num_warps": S.NUM_WARPS, "num_stages": S.NUM_STAGES})
    # ptxas -v on the kernel's PTX reports registers and spills (Triton runs it without keeping the log).
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as f:
            f.write(k.asm["ptx"])
        arch = "sm_90a" if cap == 90 else f"sm_{cap}"
        proc = subprocess.run([ptxas(cap), "-v", f"--gpu-name={arch}", path, "-o", path + ".o"], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(proc.stderr)
    spills = [int(a) + int(b) for a, b in re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", proc.stderr)]
    regs = [int(r) for r in re.findall(r"Used (\d+) registers", proc.stderr)]
    return {"shared": k.metadata.shared, "spill_bytes": sum(spills), "registers": max(regs), "reports": len(spills),
            "size_products": size_products(k.asm["ttir"])}

out = {}
for cap in (90, 80):
    for dt, prec in (("fp32", "tf32x3"), ("bf16", "tf32")):
        # the host's launch for a large problem: full blocks
        bn, bm, bk = S._blocks(1 << 14, 1 << 10, 1 << 10)
        common = dict(BLOCK_N=bn, BLOCK_M=bm, BLOCK_K=bk, DOT_PRECISION=prec, KNOTS=17)
        ints = {"N": "i32", "D": "i32", "M": "i32", "dt": "fp32"}
        out[f"sm_{cap} {dt} forward"] = build(S._ecf_fwd_kernel, {"Z": f"*{dt}", "A": "*fp32", "PART": "*fp32", **ints,
                                              "n_blocks": "i32", "BLOCKS_PER_PROG": "i32"}, dict(common, KP=32), cap)
        out[f"sm_{cap} {dt} backward"] = build(S._ecf_bwd_kernel, {"Z": f"*{dt}", "A": "*fp32", "G": "*fp32",
                                               "DX": "*fp32", **ints}, common, cap)
print("RESULT " + json.dumps(out))
"""

# Shared memory a block may use (opt-in maximum): H100/H200 232,448 B, A100 166,912 B.
_SHARED_LIMIT = {90: 232448, 80: 166912}


@pytest.mark.aot
def test_kernels_compile_for_sm80_and_sm90_within_shared_memory_and_without_spills(tmp_path):
    """Triton's real compiler (no GPU needed): the interpreter never builds the kernels, so lowering
    errors, shared memory beyond the device limit, register spills and 32-bit offset products (which wrap
    past 2**31 elements) would go unseen."""
    import json  # noqa: PLC0415
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    try:
        from triton.backends import backends  # noqa: PLC0415
    except ImportError:
        pytest.skip("this triton has no backend registry")
    if "nvidia" not in backends:
        pytest.skip("this triton has no NVIDIA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    env["JEPA_AOT_HELPERS"] = os.path.dirname(os.path.abspath(__file__))  # _aot_worker.size_products: the TTIR scan
    proc = subprocess.run([sys.executable, "-c", _AOT_SCRIPT], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    results = json.loads(line[len("RESULT "):])
    assert len(results) == 8
    for name, r in results.items():
        cap = int(name[3:5])
        assert r["reports"] == 1, f"{name}: ptxas reported {r['reports']} functions"
        assert 0 < r["shared"] <= _SHARED_LIMIT[cap], f"{name}: {r['shared']} B of shared memory"
        assert r["spill_bytes"] == 0, f"{name}: {r['spill_bytes']} bytes of register spills ({r['registers']} registers)"
        # 64-bit offsets (rows * D, ks * M, M * knots ...): 32-bit ones wrap past 2**31 elements
        assert r["size_products"]["i32"] == [], f"{name}: 32-bit size products {r['size_products']['i32']}"
        assert r["size_products"]["i64"] >= 2, f"{name}: {r['size_products']}"


def test_triton_under_autocast_matches_without():
    gen = torch.Generator().manual_seed(16)
    z0 = torch.randn(40, 24, generator=gen).to(DEVICE)
    a = _unit_columns(24, 16, gen)
    results = []
    for autocast in (False, True):
        z = z0.clone().requires_grad_(True)
        with use_backend("triton"), torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=autocast):
            out = ops.sigreg(z, a)
        out.backward()
        results.append((out.detach(), z.grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
