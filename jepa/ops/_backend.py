"""Backend selection: the one place in jepa that decides which implementation runs.

Rules (DESIGN.md, "Ops and backends"):
- ``auto`` (default): CUDA tensors -> the GPU kernel when importable, else torch;
  CPU tensors -> the C++ path (jepa._C) where one exists, else torch.
- ``JEPA_BACKEND=torch|triton|cuda|cpp`` or ``with jepa.ops.use_backend(name):`` forces one.
  Forcing a backend that is unavailable (or that does not implement the op) raises
  :class:`BackendUnavailableError`; it never silently falls back.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator

BACKENDS = ("auto", "torch", "triton", "cuda", "cpp")

_local = threading.local()


class BackendUnavailableError(RuntimeError):
    """A forced backend cannot run the requested op on the given tensors."""


def _check_name(name: str, source: str) -> str:
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"{source}: unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    return name.lower()


def requested_backend() -> str:
    """The backend forced by ``use_backend`` (innermost wins), else ``$JEPA_BACKEND``, else ``auto``."""
    stack = getattr(_local, "stack", None)
    if stack:
        return stack[-1]
    env = os.environ.get("JEPA_BACKEND", "").strip()
    if env:
        return _check_name(env, "JEPA_BACKEND")
    return "auto"


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Force ``name`` for every op called inside the ``with`` block (thread-local)."""
    name = _check_name(name, "use_backend(name)")
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(name)
    try:
        yield name
    finally:
        stack.pop()


_UNSET = object()
_native_cache: object = _UNSET


def native_module():
    """The compiled extension ``jepa._C`` or ``None`` when it was not built (looked up once per process)."""
    global _native_cache
    mod = _native_cache
    if mod is _UNSET:
        try:
            from jepa import _C as mod  # noqa: PLC0415  (optional extension)
        except ImportError:
            mod = None
        _native_cache = mod
    return mod


def cpp_available() -> bool:
    """True when ``jepa._C`` (the C++ CPU kernels) can be imported."""
    return native_module() is not None


_cuda_usable_cache: bool | None = None


def cuda_kernels_available() -> bool:
    """True when ``jepa._C`` was built with its CUDA kernels (``jepa._C.has_cuda()``) and its CUDA
    runtime sees a device (a driver too old for the toolkit it was built with sees none)."""
    global _cuda_usable_cache
    if _cuda_usable_cache is None:
        mod = native_module()
        _cuda_usable_cache = mod is not None and bool(mod.has_cuda()) and int(mod.cuda_device_count()) > 0
    return _cuda_usable_cache


def cuda_unavailable_reason() -> str:
    """Why the ``cuda`` backend cannot run here ("" when it can)."""
    mod = native_module()
    if mod is None:
        return "jepa._C is not built or failed to import"
    if not mod.has_cuda():
        return "jepa._C is built without CUDA (jepa._C.has_cuda() is False)"
    if not cuda_kernels_available():
        return "jepa._C's CUDA runtime sees no device (no GPU, or a driver older than its CUDA toolkit)"
    return ""


def triton_available() -> bool:
    """True when the ``triton`` package can be imported."""
    try:
        import triton  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def triton_interpret() -> bool:
    """True when ``TRITON_INTERPRET=1``: Triton kernels then run on CPU tensors (how CI tests them)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip() not in ("", "0")


def triton_can_run(*tensors) -> bool:
    """True when the Triton kernels can run on ``tensors``: triton is importable and the tensors are
    CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``."""
    if not triton_available():
        return False
    devices = {t.device.type for t in tensors if t is not None}
    if devices == {"cuda"}:
        return True
    return devices == {"cpu"} and triton_interpret()


def triton_unavailable_reason(*tensors) -> str:
    """Why the ``triton`` backend cannot run on ``tensors`` ("" when it can)."""
    if not triton_available():
        return "triton is not installed (pip install 'jepa[gpu]' or pip install triton)"
    devices = sorted({t.device.type for t in tensors if t is not None})
    if devices == ["cpu"] and not triton_interpret():
        return "the tensors are on the CPU; Triton kernels run on CUDA tensors (or on CPU under TRITON_INTERPRET=1)"
    if devices not in (["cpu"], ["cuda"]):
        return f"the tensors are on {', '.join(devices) or 'no device'}; Triton kernels need CUDA tensors"
    return ""


def available_backends() -> list[str]:
    """Backends usable in this process (a backend may still not implement every op)."""
    out = ["torch"]
    if cpp_available():
        out.append("cpp")
    if cuda_kernels_available():
        out.append("cuda")
    if triton_available():
        out.append("triton")
    return out
