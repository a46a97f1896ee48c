"""Backend selection: the one place in jepa that decides which implementation of an op runs.

Every op registers an :class:`OpSpec` (its name, the backends it implements, their dtypes and the
order ``auto`` tries them in) and calls :func:`choose` once per call, after validating its inputs:
validate -> ``choose`` -> run. :func:`choose` owns availability (is triton importable, is jepa._C
built, with CUDA, does its runtime see a device, are the tensors where the backend runs), the errors
of forced backends, the ``auto`` order and the dtype tables; the op adds only what is its own (a head
size limit, a mixed-dtype list, ...) through ``check``.

Backends: ``torch`` (the reference, every op), ``cpp`` (jepa._C on CPU tensors), ``cuda`` (jepa._C on
CUDA tensors), ``triton`` (Triton kernels on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1``).

Asking for a backend:

- ``JEPA_BACKEND``: comma-separated entries, each either a backend name (the *global* setting) or
  ``op=backend`` (a *per-op* setting), e.g. ``JEPA_BACKEND=triton``,
  ``JEPA_BACKEND=ema_update=cuda,attention=torch`` or ``JEPA_BACKEND=cpp,attention=torch``.
- ``with jepa.ops.use_backend("triton"):``, ``use_backend(attention="torch")`` or
  ``use_backend("ema_update=cuda,attention=torch")``: the same, for the calls inside the block
  (thread-local); the innermost block comes first, the environment last.

The rule: **a per-op setting is strict, a global one applies to the ops that have that backend.**
An op looks at the settings from the innermost ``use_backend`` block out to ``JEPA_BACKEND`` and takes
the first that concerns it: an entry naming the op, or a global backend the op implements (``auto``
included). A global backend the op does not implement is skipped for that op, so ``JEPA_BACKEND=cpp``
runs the C++ EMA and loss scaling and leaves attention, jepa_loss and info_nce (which have no C++ path)
on ``auto`` instead of failing the run. A backend that applies but cannot run (not installed, tensors on
the wrong device, an unsupported dtype or shape) raises :class:`BackendUnavailableError` with the reason;
it never falls back silently. ``attention=cuda`` (a per-op setting for a backend the op lacks) raises too.

``auto`` (nothing applies): the first backend of the op's ``auto`` order for the tensors' device that can
run, else ``torch``. CUDA tensors: the fastest kernel measured for the call (for attention, SDPA unless
Triton was measured faster for that shape bucket; see :mod:`jepa.ops.attention_routes`); CPU tensors: the
C++ path where one exists.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping

BACKENDS = ("auto", "torch", "triton", "cuda", "cpp")

_local = threading.local()


class BackendUnavailableError(RuntimeError):
    """A forced backend cannot run the requested op on the given tensors."""


# ----------------------------------------------------------------------------------------- op registry


@dataclass(frozen=True)
class OpSpec:
    """What :func:`choose` knows about one op.

    Attributes:
        name: the op's public name (``"ema_update"``), also its key in ``JEPA_BACKEND`` / ``use_backend``.
        backends: the backends it implements; always includes ``"torch"``.
        dtypes: per backend, the tensor dtypes it takes (a backend missing here takes any dtype).
        auto: per device type (``"cuda"``, ``"cpu"``), the backends ``auto`` tries, in order; ``torch``
            is the last resort for every device.
    """

    name: str
    backends: tuple[str, ...]
    dtypes: Mapping[str, tuple] = field(default_factory=dict)
    auto: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


_OPS: dict[str, OpSpec] = {}


def register_op(
    name: str,
    *,
    backends: Iterable[str],
    dtypes: Mapping[str, Iterable] | None = None,
    auto: Mapping[str, Iterable[str]] | None = None,
) -> OpSpec:
    """Declare an op (once, at import of its module) and return its :class:`OpSpec` for :func:`choose`."""
    backends = tuple(backends)
    if "torch" not in backends:
        raise ValueError(f"register_op({name!r}): every op needs the 'torch' reference backend, got {backends}")
    for b in backends:
        if b not in BACKENDS or b == "auto":
            raise ValueError(f"register_op({name!r}): unknown backend {b!r}; expected some of {', '.join(BACKENDS[1:])}")
    spec = OpSpec(
        name,
        backends,
        {k: tuple(v) for k, v in (dtypes or {}).items()},
        {k: tuple(v) for k, v in (auto or {}).items()},
    )
    for order in spec.auto.values():
        for b in order:
            if b not in backends:
                raise ValueError(f"register_op({name!r}): auto order names {b!r}, which the op does not implement")
    _OPS[name] = spec
    _SPEC_CACHE.clear()
    return spec


def registered_ops() -> dict[str, OpSpec]:
    """Every registered op by name (a copy)."""
    return dict(_OPS)


# ----------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class _Setting:
    """One parsed layer of settings: an optional global backend and per-op backends."""

    global_backend: str | None
    per_op: Mapping[str, str]


def _check_name(name: object, source: str) -> str:
    if not isinstance(name, str) or name.strip().lower() not in BACKENDS:
        raise ValueError(f"{source}: unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    return name.strip().lower()


def _check_op(op: str, source: str) -> str:
    if _OPS and op not in _OPS:
        raise ValueError(f"{source}: unknown op {op!r}; expected one of {', '.join(sorted(_OPS))}")
    return op


def _parse(spec: str, source: str) -> _Setting:
    """``"triton"``, ``"ema_update=cuda,attention=torch"``, ``"cpp,attention=torch"`` -> a setting."""
    global_backend = None
    per_op: dict[str, str] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" in item:
            op, _, name = item.partition("=")
            op = _check_op(op.strip(), source)
            if op in per_op:
                raise ValueError(f"{source}: op {op!r} is given twice in {spec!r}")
            per_op[op] = _check_name(name, f"{source} ({op})")
        else:
            if global_backend is not None:
                raise ValueError(f"{source}: two global backends in {spec!r}; name one, and others per op (op=backend)")
            global_backend = _check_name(item, source)
    return _Setting(global_backend, per_op)


_SPEC_CACHE: dict[str, _Setting] = {}


def _env_setting() -> _Setting | None:
    env = os.environ.get("JEPA_BACKEND", "")
    if not env.strip():
        return None
    setting = _SPEC_CACHE.get(env)
    if setting is None:
        setting = _parse(env, "JEPA_BACKEND")
        _SPEC_CACHE[env] = setting
    return setting


def _layers() -> list[_Setting]:
    """Settings from the innermost ``use_backend`` block out to ``JEPA_BACKEND``."""
    stack = getattr(_local, "stack", None)
    layers = list(reversed(stack)) if stack else []
    env = _env_setting()
    if env is not None:
        layers.append(env)
    return layers


def requested_backend(op: str | None = None) -> str:
    """The backend asked for ``op`` (``"auto"`` when nothing applies), by the rule of this module.

    Without ``op``: the global backend of the innermost setting that has one (``use_backend`` blocks,
    then ``JEPA_BACKEND``), else ``"auto"``.
    """
    for layer in _layers():
        if op is not None and op in layer.per_op:
            return layer.per_op[op]
        g = layer.global_backend
        if g is None:
            continue
        if op is None or g == "auto":
            return g
        spec = _OPS.get(op)
        if spec is None or g in spec.backends:
            return g
    return "auto"


@contextlib.contextmanager
def use_backend(name: str | None = None, /, **per_op: str) -> Iterator[str]:
    """Force backends for the calls inside the ``with`` block (thread-local; the innermost block wins).

    ``use_backend("triton")`` sets the global backend (applies to the ops that have it),
    ``use_backend(attention="torch")`` or ``use_backend("ema_update=cuda,attention=torch")`` set
    per-op backends (strict). See the module docstring for the rule.
    """
    if name is None and not per_op:
        raise ValueError("use_backend: name a backend ('triton') or ops (attention='torch')")
    setting = _parse(name, "use_backend(name)") if name is not None else _Setting(None, {})
    if per_op:
        merged = dict(setting.per_op)
        for op, backend in per_op.items():
            merged[_check_op(op, "use_backend")] = _check_name(backend, f"use_backend({op}=...)")
        setting = _Setting(setting.global_backend, merged)
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(setting)
    try:
        yield name if name is not None else ",".join(f"{k}={v}" for k, v in setting.per_op.items())
    finally:
        stack.pop()


# ----------------------------------------------------------------------------------------- availability

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


_triton_cache: bool | None = None


def triton_available() -> bool:
    """True when the ``triton`` package can be imported (looked up once per process)."""
    global _triton_cache
    if _triton_cache is None:
        try:
            import triton  # noqa: F401, PLC0415
        except ImportError:
            _triton_cache = False
        else:
            _triton_cache = True
    return _triton_cache


def triton_interpret() -> bool:
    """True when ``TRITON_INTERPRET=1``: Triton kernels then run on CPU tensors (how CI tests them)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip() not in ("", "0")


def _device_types(tensors) -> list[str]:
    return sorted({t.device.type for t in tensors if t is not None})


def triton_can_run(*tensors) -> bool:
    """True when the Triton kernels can run on ``tensors``: triton is importable and the tensors are
    CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``."""
    return not triton_unavailable_reason(*tensors)


def triton_unavailable_reason(*tensors) -> str:
    """Why the ``triton`` backend cannot run on ``tensors`` ("" when it can)."""
    return _triton_device_reason(_device_types(tensors))


def _triton_device_reason(devices: list[str]) -> str:
    if not triton_available():
        return "triton is not installed (pip install 'jepa-torch[gpu]' or pip install triton)"
    if devices == ["cpu"] and not triton_interpret():
        return "the tensors are on the CPU; Triton kernels run on CUDA tensors (or on CPU under TRITON_INTERPRET=1)"
    if devices and devices not in (["cpu"], ["cuda"]):
        return f"the tensors are on {', '.join(devices)}; Triton kernels need CUDA tensors"
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


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def unavailable_reason(op: OpSpec, backend: str, device=None, dtypes: Iterable = (), check=None) -> str:
    """Why ``backend`` cannot run ``op`` on tensors of ``device`` and ``dtypes`` ("" when it can):
    availability, device, the op's dtype table, then ``check(backend)``."""
    kind = None if device is None else device.type
    if backend == "cpp":
        if not cpp_available():
            return "jepa._C is not built or failed to import"
        if kind is not None and kind != "cpu":
            return f"the tensors are on {device}, not the CPU"
    elif backend == "cuda":
        why = cuda_unavailable_reason()
        if why:
            return why
        if kind is not None and kind != "cuda":
            return f"the tensors are on {device}, not a CUDA device"
    elif backend == "triton":
        why = _triton_device_reason([] if kind is None else [kind])
        if why:
            return why
    allowed = op.dtypes.get(backend)
    if allowed is not None:
        for dt in dtypes:
            if dt not in allowed:
                names = ", ".join(_dtype_name(a) for a in allowed)
                return f"dtype {_dtype_name(dt)} is not supported by the {backend} kernels ({names})"
    if check is not None:
        return check(backend)
    return ""


def choose(
    op: OpSpec,
    *,
    device=None,
    dtypes: Iterable = (),
    check: Callable[[str], str] | None = None,
    auto: Iterable[str] | None = None,
) -> str:
    """The backend that runs this call of ``op``.

    Args:
        op: the op's :class:`OpSpec` (from :func:`register_op`).
        device: the device of the op's tensors (``None``: nothing to run on, only availability counts).
        dtypes: the dtypes of the op's tensors, checked against ``op.dtypes``.
        check: ``check(backend) -> str``: the op's own reason why ``backend`` cannot run this call
            ("" when it can); asked only for the forced backend or the ``auto`` candidates.
        auto: this call's ``auto`` order (default: ``op.auto`` for the device type); ``torch`` ends it.

    Raises:
        BackendUnavailableError: the backend requested for the op (see the module docstring) does not
            implement it, or cannot run on these tensors.
    """
    dtypes = tuple(dtypes)
    requested = requested_backend(op.name)
    if requested != "auto":
        if requested not in op.backends:
            raise BackendUnavailableError(
                f"{op.name}: backend {requested!r} does not implement {op.name} "
                f"({op.name} backends: {', '.join(op.backends)})"
            )
        why = unavailable_reason(op, requested, device, dtypes, check)
        if why:
            raise BackendUnavailableError(f"{op.name}: backend {requested!r} cannot run: {why}")
        return requested
    if auto is None:
        auto = op.auto.get(device.type, ()) if device is not None else ()
    for backend in auto:
        if backend == "torch" or not unavailable_reason(op, backend, device, dtypes, check):
            return backend
    return "torch"


# ----------------------------------------------------------------------------------------- launches


def device_guard(device):
    """A context that makes ``device`` the current CUDA device (a no-op for other devices): kernels
    launch on the current device, which need not be the tensors' (``torch.cuda.set_device`` elsewhere)."""
    if device is not None and device.type == "cuda":
        import torch  # noqa: PLC0415

        return torch.cuda.device(device)
    return contextlib.nullcontext()
