"""Shared fixtures of the jepa.ops tests."""

from __future__ import annotations

import os

import pytest

from jepa.ops import _backend, _native


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def native():
    """The compiled extension jepa._C.

    Skips where it is genuinely absent (e.g. running from a source tree that was never built), but fails
    under CI (``CI`` set) or with ``JEPA_REQUIRE_EXTENSION=1``: there it is always built, so its tests must run.
    """
    mod = _backend.native_module()
    if mod is None:
        try:
            from jepa import _C  # noqa: F401, PLC0415
        except ImportError as exc:
            reason = f"jepa._C is not built ({exc})"
        else:  # pragma: no cover - native_module() and a direct import disagree
            reason = "jepa._C imports but jepa.ops cannot see it"
        if _truthy("CI") or _truthy("JEPA_REQUIRE_EXTENSION"):
            pytest.fail(f"{reason}; it must be built here (pip install .)")
        pytest.skip(reason)
    return mod


@pytest.fixture(autouse=True)
def _clean_backend_state(monkeypatch):
    """Each test starts with no forced backend and an empty plan cache; on a GPU, the attention kernels
    run their pinned tiles (what the aot tests compile) unless JEPA_TRITON_AUTOTUNE is set explicitly:
    autotuning would compile up to 20 configurations per shape key of every test."""
    monkeypatch.delenv("JEPA_BACKEND", raising=False)
    if "JEPA_TRITON_AUTOTUNE" not in os.environ:
        monkeypatch.setenv("JEPA_TRITON_AUTOTUNE", "0")
    _native.clear_plan_cache()
    yield
    _native.clear_plan_cache()



@pytest.fixture
def cuda_native(native):
    """jepa._C for the CUDA kernel tests: skips without a GPU or a CUDA build, fails when both exist but
    jepa._C's CUDA runtime sees no device."""
    import torch  # noqa: PLC0415

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible to torch")
    if not native.has_cuda():
        pytest.skip("jepa._C was built without CUDA")
    if not _backend.cuda_kernels_available():
        pytest.fail("jepa._C has CUDA and torch sees a GPU, but jepa._C's CUDA runtime sees no device")
    return native


@pytest.fixture(scope="session")
def cxx():
    """A C++ compiler on PATH ($CXX first) for the header-math tests; skips without one."""
    import shutil  # noqa: PLC0415

    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    pytest.skip("no C++ compiler on PATH")

# ----------------------------------------------------------------------------- Triton: real compilation (sm_90)

_AOT_SCRIPT = r"""
import json, os, sys
os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
import importlib
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

TL = {"tl.float32": tl.float32, "tl.float16": tl.float16, "tl.bfloat16": tl.bfloat16}
for module, kernel, sig, consts, warps in json.loads(sys.argv[1]):
    fn = getattr(importlib.import_module(module), kernel)
    names = fn.arg_names
    consts = {k: TL.get(v, v) if isinstance(v, str) else v for k, v in consts.items()}
    full = {n: sig.get(n, "constexpr") for n in names}
    src = ASTSource(fn=fn, signature=full, constexprs={(names.index(k),): v for k, v in consts.items()})
    triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    print("compiled", kernel)
"""


def _compile_for_sm90(specs, tmp_path):
    """Compile kernels for an H100 (sm_90) without a GPU: the interpreter never runs Triton's real
    compiler, so type, layout and lowering errors of the GPU path would otherwise go unseen here."""
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
    proc = subprocess.run(
        [sys.executable, "-c", _AOT_SCRIPT, json.dumps(specs)], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("compiled") == len(specs)


@pytest.fixture
def compile_for_sm90(tmp_path):
    """``compile_for_sm90(specs)``: compile Triton kernels for sm_90 with Triton's real compiler (no GPU
    needed); each spec is ``[module, kernel, signature, constexprs, num_warps]``."""
    return lambda specs: _compile_for_sm90(specs, tmp_path)
