"""The CUDA kernels (kernels/cuda/*.cu) as nvcc builds them for sm_90, read without a GPU.

- Every vectorized instantiation moves 16-byte vectors (ld/st.global.*.v4) and every data access is a
  .global one (generic addressing costs an address-space check per access and kept 2-byte loads).
- The host code calls nothing that synchronizes the device (cudaMalloc, cudaFree, cudaMemcpy, ...): the
  EMA's device table comes from torch's allocator through an asynchronous copy (jepa/ops/_native.py).
- ptxas reports no spills (stack frame 0) for any kernel.

Skipped without nvcc; marked ``aot`` (ahead-of-time compile checks, run in CI).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.aot

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "kernels" / "cuda").glob("*.cu"))
NVCC = shutil.which("nvcc")
FLAGS = ["-std=c++17", "-O3", "-arch=sm_90", "-I", str(ROOT / "csrc" / "include")]
# Runtime calls that block the host or the device: none may appear in the kernels' host code.
SYNCING = {"cudaMalloc", "cudaFree", "cudaMemcpy", "cudaMemcpy2D", "cudaMallocHost", "cudaFreeHost",
           "cudaDeviceSynchronize", "cudaStreamSynchronize", "cudaEventSynchronize", "cudaMemset"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """{source stem: (ptx text, undefined symbols of the object, ptxas -v report)}, built once."""
    if NVCC is None:
        pytest.skip("nvcc is not on PATH")
    if shutil.which("nm") is None:
        pytest.skip("nm is not on PATH")
    out = tmp_path_factory.mktemp("cuda_aot")
    result = {}
    for src in SOURCES:
        ptx, obj = out / f"{src.stem}.ptx", out / f"{src.stem}.o"
        subprocess.run([NVCC, "-ptx", *FLAGS, str(src), "-o", str(ptx)], check=True, capture_output=True)
        proc = subprocess.run([NVCC, "-c", *FLAGS, "-Xptxas", "-v", str(src), "-o", str(obj)],
                              check=True, capture_output=True, text=True)
        undefined = subprocess.run(["nm", "-u", str(obj)], check=True, capture_output=True, text=True).stdout
        symbols = {line.split()[-1] for line in undefined.splitlines() if line.strip()}
        result[src.stem] = (ptx.read_text(), symbols, proc.stderr)
    return result


def _entries(ptx: str) -> dict[str, str]:
    """Kernel name (demangling not needed: the template arguments are in the mangled name) -> PTX body."""
    parts = re.split(r"(?=^(?:\.visible\s+)?\.entry\s)", ptx, flags=re.M)
    out = {}
    for part in parts:
        m = re.match(r"(?:\.visible\s+)?\.entry\s+(\w+)", part)
        if m:
            out[m.group(1)] = part
    return out


def _accesses(body: str) -> set[str]:
    return set(re.findall(r"\b(?:ld|st)(?:\.[a-z0-9]+)+", body))


@pytest.mark.parametrize("stem, kernel", [("ema_update", "ema_update_kernel"), ("unscale", "unscale_kernel")])
def test_vectorized_instantiations_move_16_byte_vectors(built, stem, kernel):
    entries = {k: v for k, v in _entries(built[stem][0]).items() if kernel in k}
    # <T, true> for float, __half, __nv_bfloat16: the template's bool is mangled as Lb1E
    vectorized = {k: v for k, v in entries.items() if "Lb1E" in k}
    assert len(vectorized) == 3, sorted(entries)
    for name, body in vectorized.items():
        ops = _accesses(body)
        assert any(op.startswith("ld.global") and op.endswith(("v4.f32", "v4.u32", "v4.b32")) for op in ops), (name, ops)
        assert any(op.startswith("st.global") and op.endswith(("v4.f32", "v4.u32", "v4.b32")) for op in ops), (name, ops)


@pytest.mark.parametrize("stem", [s.stem for s in SOURCES])
def test_every_data_access_is_global(built, stem):
    entries = _entries(built[stem][0])
    assert entries, "no kernel found in the PTX"
    for name, body in entries.items():
        generic = {op for op in _accesses(body) if not op.startswith(("ld.global", "st.global", "ld.param", "ld.shared", "st.shared"))}
        assert not generic, f"{name}: generic-address accesses {sorted(generic)}"


@pytest.mark.parametrize("stem", [s.stem for s in SOURCES])
def test_host_code_never_synchronizes(built, stem):
    symbols = built[stem][1]
    assert symbols, "nm listed no undefined symbols: the object was not read"
    assert not symbols & SYNCING, f"{stem}.cu calls {sorted(symbols & SYNCING)}"


@pytest.mark.parametrize("stem", [s.stem for s in SOURCES])
def test_no_register_spills(built, stem):
    report = built[stem][2]
    frames = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", report)
    assert frames, report
    assert all(f == ("0", "0", "0") for f in frames), report
