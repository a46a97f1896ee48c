"""Loss-scaling ops: unscale gradients with a non-finite check, and the dynamic scale update.

- :func:`unscale_` — ``g <- g * inv_scale`` for every gradient, and ``found_inf <- 1`` when any element
  was inf/NaN; reference :func:`unscale_reference` = ``torch._amp_foreach_non_finite_check_and_unscale_``.
- :func:`update_scale_` — the scale/growth-tracker update of a dynamic loss scaler after one iteration;
  reference :func:`update_scale_reference` = ``torch._amp_update_scale_``.

Backends (chosen by :func:`jepa.ops._backend.choose`):

- ``torch``: the references (any device and floating dtype, any layout).
- ``cpp``: jepa._C on CPU tensors: one multi-threaded call over all gradients of a dtype that multiplies
  and checks in the same pass, GIL released (csrc/amp/unscale_cpu.cpp); the scale update in C++.
- ``cuda``: jepa._C's CUDA kernels (kernels/cuda/unscale.cu): one launch per dtype over all gradients on
  the current stream of their device; ``inv_scale``/``found_inf``/``scale`` stay on the device (no host sync).
- ``triton``: not implemented for these ops; a global ``triton`` setting leaves them on ``auto``, a per-op
  one (``unscale_=triton``) raises :class:`BackendUnavailableError`.

``auto`` runs the native kernel on every plain contiguous float32/float16/bfloat16 gradient (grouped by
dtype) and the torch reference on the rest (float64, strided views, tensor subclasses). A forced native
backend refuses such gradients with :class:`BackendUnavailableError` instead. Arithmetic is float32,
rounded once to the gradient's dtype, as in the reference: results are bit-identical to it.
"""

from __future__ import annotations

import math
import numbers
import weakref
from collections import defaultdict
from typing import Iterable, Sequence

import torch
from torch.autograd.graph import increment_version

from jepa.ops import _backend, _native
from jepa.ops._backend import BackendUnavailableError, native_module

__all__ = ["unscale_", "unscale_reference", "update_scale_", "update_scale_reference"]

_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)
_NATIVE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# unscale_ takes any mix of dtypes: auto runs the native kernel per supported dtype and the reference on
# the rest, so its dtype rules live in the op (a forced native backend refuses a tensor it cannot take).
UNSCALE = _backend.register_op(
    "unscale_", backends=("torch", "cpp", "cuda"), auto={"cpu": ("cpp", "torch"), "cuda": ("cuda", "torch")}
)
UPDATE_SCALE = _backend.register_op(
    "update_scale_", backends=("torch", "cpp", "cuda"), auto={"cpu": ("cpp", "torch"), "cuda": ("cuda", "torch")}
)


# ----------------------------------------------------------------------------------------- references
def unscale_reference(
    grads: Iterable[torch.Tensor | None], inv_scale: torch.Tensor, found_inf: torch.Tensor
) -> None:
    """Torch reference: ``torch._amp_foreach_non_finite_check_and_unscale_`` per dtype (None skipped)."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = defaultdict(list)
    for g in grads:
        if g is not None:
            by_dtype[g.dtype].append(g)
    with torch.no_grad():
        for lst in by_dtype.values():
            torch._amp_foreach_non_finite_check_and_unscale_(lst, found_inf, inv_scale)


def update_scale_reference(
    scale: torch.Tensor,
    growth_tracker: torch.Tensor,
    found_inf: torch.Tensor,
    growth_factor: float,
    backoff_factor: float,
    growth_interval: int,
) -> torch.Tensor:
    """Torch reference: ``torch._amp_update_scale_`` (returns ``scale``, updated in place)."""
    return torch._amp_update_scale_(scale, growth_tracker, found_inf, growth_factor, backoff_factor, growth_interval)


# ----------------------------------------------------------------------------------------- checks
def _check_scalar_tensor(fn: str, name: str, t: object, dtype: torch.dtype) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a 1-element {dtype} torch.Tensor, got {type(t).__name__} {t!r}")
    if t.dtype != dtype:
        raise TypeError(f"{fn}: {name} has dtype {t.dtype}; expected {dtype}")
    if t.layout != torch.strided:
        raise TypeError(f"{fn}: {name} has layout {t.layout}; expected a dense (strided) tensor")
    if t.numel() != 1:
        raise ValueError(f"{fn}: {name} has shape {tuple(t.shape)} ({t.numel()} elements); expected 1 element")
    return t


def _validate_grads(grads: Sequence[torch.Tensor | None], device: torch.device) -> None:
    for i, g in enumerate(grads):
        if g is None:
            continue
        if not isinstance(g, torch.Tensor):
            raise TypeError(f"unscale_: grads[{i}] must be a torch.Tensor or None, got {type(g).__name__}")
        if g.layout != torch.strided:
            raise TypeError(
                f"unscale_: grads[{i}] has layout {g.layout}; expected a dense tensor (pass a sparse gradient's "
                "_values(), as GradScaler does)"
            )
        if not g.is_floating_point():
            raise TypeError(f"unscale_: grads[{i}] has dtype {g.dtype}; expected a floating-point dtype")
        if g.device != device:
            raise ValueError(
                f"unscale_: grads[{i}] is on {g.device} but inv_scale and found_inf are on {device}; "
                "expected every gradient on their device"
            )


def _native_reason(g: torch.Tensor) -> str:
    """Why the native kernels cannot run on ``g`` ("" when they can)."""
    if type(g) not in _PLAIN_TYPES:
        return f"is a {type(g).__name__}, not a plain torch.Tensor"
    if g.dtype not in _NATIVE_DTYPES:
        return f"has dtype {g.dtype} (native kernels: float32, float16, bfloat16)"
    if not g.is_contiguous():
        return "is not contiguous"
    return ""


# ----------------------------------------------------------------------------------------- unscale_
def _run_native(route: str, plan: _native.TensorListPlan, inv_scale: torch.Tensor, found_inf: torch.Tensor) -> None:
    mod = native_module()
    if route == "cpu":
        mod.unscale(plan.table(), inv_scale.data_ptr(), found_inf.data_ptr(), torch.get_num_threads())
    else:
        device = plan.device
        with _backend.device_guard(device):
            stream = torch.cuda.current_stream(device).cuda_stream
            mod.unscale_cuda(plan.table(), inv_scale.data_ptr(), found_inf.data_ptr(), stream)


# The last gradient list planned without caching: (key, plan (ids and pointers, no references), weak reference
# to its first tensor), or None. Replaced as a whole, so concurrent callers see one consistent tuple.
_hint: tuple | None = None


def _grad_plan(present: list[torch.Tensor], grads: list, device: torch.device) -> _native.TensorListPlan:
    """The validated plan of ``present`` (the non-None grads).

    A cached plan for exactly these tensors (same objects, same data pointers) skips the validation. But
    caching costs a weak reference per tensor, more than validating again, and gradients are usually new
    tensors every step (``zero_grad(set_to_none=True)``). So a list is planned without caching the first
    time, and cached only when it comes back with its first tensor still the same live object (persistent
    gradients, ``set_to_none=False``). Fresh gradients that happen to reuse the ids and addresses of the
    previous step's (CPython and the allocator both recycle) do not count: that first tensor died.
    """
    key = ("unscale_", len(present), id(present[0]))  # the key jepa.ops._native.get_plan files it under
    cached = _native._PLANS.get(key)
    if cached is not None and cached.matches((present,)):
        if cached.device != device:  # validated against another inv_scale device
            _validate_grads(grads, device)
        return cached
    global _hint
    hint = _hint
    if hint is not None and hint[0] == key and hint[2]() is present[0] and hint[1].matches((present,)):
        _hint = None
        # validates afresh, then caches with weak references for the following calls
        return _native.get_plan("unscale_", (present,), lambda _lists: _validate_grads(grads, device))
    _validate_grads(grads, device)
    plan = _native.TensorListPlan((present,))
    _hint = None
    if plan.ptrs is not None:
        try:
            _hint = (key, plan, weakref.ref(present[0]))
        except TypeError:  # no weak reference support: never cached
            pass
    return plan


def unscale_(grads: Iterable[torch.Tensor | None], inv_scale: torch.Tensor, found_inf: torch.Tensor) -> None:
    """Unscale gradients in place and record whether any of them holds inf/NaN.

    Every element of every gradient is multiplied by ``inv_scale`` (in float32, rounded once to the
    gradient's dtype; ``inv_scale == 1`` leaves values untouched), and ``found_inf`` is set to 1.0 when
    some element was inf or NaN. ``found_inf`` is never reset to 0, so it accumulates over calls.
    Same semantics as ``torch._amp_foreach_non_finite_check_and_unscale_``, but with several dtypes in one call.

    Args:
        grads: gradients (None entries are skipped), dense floating-point tensors, any mix of dtypes,
            on the device of ``inv_scale``.
        inv_scale: 1-element float32 tensor (typically 0-d), the reciprocal of the loss scale.
        found_inf: 1-element float32 tensor on the same device, written in place.

    Raises:
        TypeError: a non-tensor, sparse or integer gradient, a gradient on another device,
            or ``inv_scale``/``found_inf`` that are not 1-element float32 tensors on one device.
        ValueError: the same checks, for a bad value rather than a bad type.
        BackendUnavailableError: a forced backend (``JEPA_BACKEND`` / :func:`jepa.ops.use_backend`) cannot
            run on these tensors.

    On CUDA nothing is read back to the host: the call is asynchronous on the current stream.
    """
    _check_scalar_tensor("unscale_", "inv_scale", inv_scale, torch.float32)
    _check_scalar_tensor("unscale_", "found_inf", found_inf, torch.float32)
    device = inv_scale.device
    if found_inf.device != device:
        raise ValueError(
            f"unscale_: found_inf is on {found_inf.device} but inv_scale is on {device}; expected the same device"
        )
    if isinstance(grads, torch.Tensor):
        raise TypeError("unscale_: grads must be an iterable of tensors (e.g. a list), got a single torch.Tensor")
    grads = list(grads)
    present = [g for g in grads if g is not None]
    if not present:
        _backend.choose(UNSCALE, device=device)  # a forced backend that cannot run raises here too
        _validate_grads(grads, device)
        return
    plan = _grad_plan(present, grads, device)
    backend = _backend.choose(UNSCALE, device=device)
    if backend == "torch":
        unscale_reference(present, inv_scale, found_inf)
        return
    want = device.type
    forced = _backend.requested_backend("unscale_") != "auto"

    if plan.route == want:  # one plain contiguous dtype: one native call
        increment_version(present + [found_inf])
        _run_native(want, plan, inv_scale, found_inf)
        return

    # Mixed dtypes or tensors the kernels cannot take: native per dtype, the reference for the rest.
    native_groups: dict[torch.dtype, list[torch.Tensor]] = defaultdict(list)
    rest: list[torch.Tensor] = []
    for i, g in enumerate(grads):
        if g is None:
            continue
        why = _native_reason(g)
        if not why:
            native_groups[g.dtype].append(g)
        elif forced:
            raise BackendUnavailableError(f"unscale_: backend {backend!r} cannot run: grads[{i}] {why}")
        else:
            rest.append(g)
    for dtype, group in native_groups.items():
        group_plan = _native.get_plan(f"unscale_/{dtype}", (group,), lambda _lists: None)
        if group_plan.route != want:  # pragma: no cover - the grouping above guarantees a native route
            raise RuntimeError(f"unscale_: internal error, no native route for a {dtype} group: {group_plan.reason}")
        increment_version(group + [found_inf])
        _run_native(want, group_plan, inv_scale, found_inf)
    if rest:
        unscale_reference(rest, inv_scale, found_inf)


# ----------------------------------------------------------------------------------------- update_scale_
def _check_factor(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"update_scale_: {name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not (math.isfinite(v) and v > 0.0):
        raise ValueError(f"update_scale_: {name} must be a finite number > 0, got {v!r}")
    return v


def update_scale_(
    scale: torch.Tensor,
    growth_tracker: torch.Tensor,
    found_inf: torch.Tensor,
    growth_factor: float,
    backoff_factor: float,
    growth_interval: int,
) -> torch.Tensor:
    """Update a dynamic loss scale in place after one iteration; returns ``scale``.

    With ``found_inf != 0`` the scale is multiplied by ``backoff_factor`` and the tracker reset to 0;
    otherwise the tracker counts the successful step and, when it reaches ``growth_interval``, the scale
    is multiplied by ``growth_factor`` (unless that overflows float32) and the tracker reset. Same
    arithmetic as ``torch._amp_update_scale_`` (products in double, rounded once to float32).

    Args:
        scale: 1-element float32 tensor, the current scale.
        growth_tracker: 1-element int32 tensor, consecutive successful steps so far.
        found_inf: 1-element float32 tensor (nonzero: a gradient held inf/NaN this iteration).
        growth_factor, backoff_factor: finite numbers > 0.
        growth_interval: int >= 1.

    All three tensors must be on one device; on CUDA the update runs on the device (no host sync).
    """
    fn = "update_scale_"
    _check_scalar_tensor(fn, "scale", scale, torch.float32)
    _check_scalar_tensor(fn, "growth_tracker", growth_tracker, torch.int32)
    _check_scalar_tensor(fn, "found_inf", found_inf, torch.float32)
    device = scale.device
    for name, t in (("growth_tracker", growth_tracker), ("found_inf", found_inf)):
        if t.device != device:
            raise ValueError(f"{fn}: {name} is on {t.device} but scale is on {device}; expected the same device")
    g = _check_factor("growth_factor", growth_factor)
    b = _check_factor("backoff_factor", backoff_factor)
    if isinstance(growth_interval, bool) or not isinstance(growth_interval, numbers.Integral):
        raise TypeError(f"{fn}: growth_interval must be an int, got {type(growth_interval).__name__} {growth_interval!r}")
    interval = int(growth_interval)
    if not 1 <= interval <= 2**31 - 1:
        raise ValueError(f"{fn}: growth_interval must be in [1, 2**31 - 1], got {interval}")

    backend = _backend.choose(UPDATE_SCALE, device=device)
    if backend == "torch":
        return update_scale_reference(scale, growth_tracker, found_inf, g, b, interval)

    mod = native_module()
    increment_version([scale, growth_tracker])
    if device.type == "cpu":
        mod.update_scale(scale.data_ptr(), growth_tracker.data_ptr(), found_inf.data_ptr(), g, b, interval)
    else:
        with _backend.device_guard(device):
            stream = torch.cuda.current_stream(device).cuda_stream
            mod.update_scale_cuda(
                scale.data_ptr(), growth_tracker.data_ptr(), found_inf.data_ptr(), g, b, interval, stream
            )
    return scale
