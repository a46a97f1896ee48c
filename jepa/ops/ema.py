"""EMA target update: ``target <- m * target + (1 - m) * online`` over lists of tensors.

Backends (see :mod:`jepa.ops._backend`):

- ``torch``: :func:`ema_update_reference`, ``torch._foreach_lerp_`` (any device, dtype, layout).
- ``cpp``: jepa._C's multi-threaded CPU kernel, one call for the whole list (csrc/ema_cpu.cpp).
- ``cuda``: jepa._C's CUDA kernel, one launch for the whole list (kernels/cuda/ema_update.cu).
- ``triton``: a multi-tensor Triton kernel (kernels/triton/ema.py), one launch per dtype over a
  device-side table of addresses and chunks; it runs on CUDA tensors (or CPU tensors under
  ``TRITON_INTERPRET=1``), contiguous float32/float16/bfloat16 on one device (mixed dtypes are fine).

``auto`` uses the C++ kernel for CPU tensors and, for CUDA tensors, the CUDA kernel of jepa._C when it
was built, else the Triton kernel, else the reference; the native kernels need every tensor to be a
plain contiguous tensor of one dtype (float32, float16 or bfloat16) on one device, the Triton kernel
accepts mixed dtypes; anything else (mixed devices, float64, strided views, tensor subclasses) runs the
torch reference. The kernels compute in float32 and round once, like the reference.

``momentum`` may be a 0-d tensor. On the CPU it is read once (free). On a GPU it is not read by the
host at all where possible, so a momentum schedule kept on the device never forces a host sync:
the Triton kernel and the torch reference read it on the device (``auto`` then prefers Triton over
the CUDA kernel of jepa._C, whose launcher takes a host float); only the ``cuda``/``cpp`` backends
convert it with ``float()``. A device momentum is not range-checked (that would need a sync).
"""

from __future__ import annotations

import numbers
import weakref
from typing import Iterable, Sequence

import torch
from torch.autograd.graph import increment_version

from jepa.ops import _native
from jepa.ops._backend import (
    BackendUnavailableError,
    cpp_available,
    cuda_kernels_available,
    cuda_unavailable_reason,
    native_module,
    requested_backend,
    triton_available,
    triton_can_run,
    triton_unavailable_reason,
)

__all__ = ["ema_update", "ema_update_reference"]


def ema_update_reference(
    targets: Sequence[torch.Tensor], onlines: Sequence[torch.Tensor], momentum: float | torch.Tensor
) -> None:
    """Torch reference: ``torch._foreach_lerp_(targets, onlines, 1 - momentum)`` (without autograd).

    A tensor ``momentum`` is used on its device as a tensor weight (no host sync)."""
    targets, onlines = list(targets), list(onlines)
    with torch.no_grad():
        if not isinstance(momentum, torch.Tensor):
            torch._foreach_lerp_(targets, onlines, 1.0 - float(momentum))
            return
        m = momentum.detach().reshape(())
        weights: dict[tuple, torch.Tensor] = {}
        for t in targets:
            key = (t.device, t.dtype == torch.float64)
            if key not in weights:
                wdtype = torch.float64 if key[1] else torch.float32
                weights[key] = 1.0 - m.to(device=t.device, dtype=wdtype)
        torch._foreach_lerp_(targets, onlines, [weights[(t.device, t.dtype == torch.float64)] for t in targets])


def _check_momentum(momentum: object) -> float | torch.Tensor:
    """A float in [0, 1], or a 0-d float32 tensor on a non-CPU device (not range-checked: no sync)."""
    if isinstance(momentum, bool) or not isinstance(momentum, (numbers.Real, torch.Tensor)):
        raise TypeError(f"ema_update: momentum must be a real number in [0, 1], got {type(momentum).__name__} {momentum!r}")
    if isinstance(momentum, torch.Tensor):
        if momentum.numel() != 1 or momentum.is_complex():
            raise TypeError(
                f"ema_update: momentum must be a real number in [0, 1], got a tensor of shape {tuple(momentum.shape)}"
            )
        if momentum.device.type != "cpu" and not momentum.is_meta:
            return momentum.detach().reshape(()).to(torch.float32)
    m = float(momentum)
    if not 0.0 <= m <= 1.0:  # also refuses NaN
        raise ValueError(f"ema_update: momentum must be in [0, 1], got {m!r}")
    return m


def _validate(lists: Sequence[list[torch.Tensor]]) -> None:
    targets, onlines = lists
    for i, (t, o) in enumerate(zip(targets, onlines)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"ema_update: targets[{i}] must be a torch.Tensor, got {type(t).__name__}")
        if not isinstance(o, torch.Tensor):
            raise TypeError(f"ema_update: onlines[{i}] must be a torch.Tensor, got {type(o).__name__}")
        if t.shape != o.shape:
            raise ValueError(
                f"ema_update: targets[{i}] has shape {tuple(t.shape)} but onlines[{i}] has shape {tuple(o.shape)}; "
                "expected equal shapes"
            )
        if not t.is_floating_point():
            raise TypeError(f"ema_update: targets[{i}] has dtype {t.dtype}; expected a floating-point dtype")
        if t.dtype != o.dtype:
            raise TypeError(
                f"ema_update: onlines[{i}] has dtype {o.dtype} but targets[{i}] has dtype {t.dtype}; "
                "expected the same dtype"
            )
        if t.device != o.device:
            raise ValueError(
                f"ema_update: onlines[{i}] is on {o.device} but targets[{i}] is on {t.device}; expected the same device"
            )


def _run_cpp(plan: _native.TensorListPlan, momentum: float) -> None:
    native_module().ema_update(plan.table(), momentum, torch.get_num_threads())


def _run_cuda(plan: _native.TensorListPlan, momentum: float) -> None:
    device = plan.device
    with torch.cuda.device(device):
        stream = torch.cuda.current_stream(device).cuda_stream
        native_module().ema_update_cuda(plan.table(), momentum, stream)


def _host_momentum(m: float | torch.Tensor) -> float:
    # The jepa._C launchers take a host float: a device momentum costs a sync here.
    return float(m)


def _device_momentum(m: float | torch.Tensor, device: torch.device) -> float | torch.Tensor:
    # The Triton kernel reads a momentum tensor on the tensors' own device; anything else becomes a float.
    if isinstance(m, torch.Tensor) and m.device == device:
        return m.contiguous()
    return float(m)


# Triton launch tables, kept while the plan they were built for is alive (plans are reused while the
# same tensors keep the same addresses, see jepa.ops._native).
_TRITON_TABLES: "weakref.WeakKeyDictionary[_native.TensorListPlan, list]" = weakref.WeakKeyDictionary()
_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _triton_reason(targets: list[torch.Tensor], onlines: list[torch.Tensor], plan: _native.TensorListPlan) -> str:
    """Why the Triton kernel cannot run on these lists ("" when it can)."""
    if plan.route is None:  # the native kernels refused; Triton also takes mixed dtypes, so look closer
        device = targets[0].device
        for name, lst in (("targets", targets), ("onlines", onlines)):
            for i, t in enumerate(lst):
                if type(t) not in _PLAIN_TYPES:
                    return f"{name}[{i}] is a {type(t).__name__}, not a plain torch.Tensor"
                if t.device != device:
                    return f"mixed devices ({device} and {t.device} at {name}[{i}])"
                if not t.is_contiguous():
                    return f"{name}[{i}] is not contiguous"
                if t.dtype not in _TRITON_DTYPES:
                    return f"{name}[{i}] has dtype {t.dtype}; the Triton kernel takes float32, float16, bfloat16"
    return triton_unavailable_reason(targets[0]) if not triton_can_run(targets[0]) else ""


def _run_triton(plan: _native.TensorListPlan, targets, onlines, m: float | torch.Tensor) -> None:
    from jepa.kernels.triton import ema as kernels  # noqa: PLC0415  (optional dependency)

    groups = _TRITON_TABLES.get(plan) if plan.ptrs is not None else None
    if groups is None:
        groups = kernels.build_groups(targets, onlines)
        if plan.ptrs is not None:
            _TRITON_TABLES[plan] = groups
    device = targets[0].device
    if device.type == "cuda":
        with torch.cuda.device(device):
            kernels.ema_update(groups, _device_momentum(m, device))
    else:
        kernels.ema_update(groups, _device_momentum(m, device))


def _mark_modified(targets: list[torch.Tensor]) -> None:
    # The kernels write through raw pointers; bump the version counters as torch's in-place ops do,
    # so autograd still refuses to backpropagate through a value saved before the update. Done just
    # before the kernel, while the plan check has the tensors' metadata in cache (a spurious bump,
    # should the kernel fail, is harmless).
    increment_version(targets)


def ema_update(
    targets: Iterable[torch.Tensor], onlines: Iterable[torch.Tensor], momentum: float | torch.Tensor
) -> None:
    """In-place EMA of ``targets`` toward ``onlines``: ``t <- momentum * t + (1 - momentum) * o``.

    Args:
        targets: tensors updated in place (e.g. the target encoder's parameters).
        onlines: tensors of the same shapes, dtypes and devices (e.g. the online encoder's parameters).
        momentum: a real number in [0, 1] (or a 1-element tensor holding one; on a GPU it is read
            on the device, see the module docstring); 1 keeps the targets, 0 copies the onlines.

    Raises:
        TypeError / ValueError: mismatched lengths, shapes, dtypes or devices, non-tensors, or a
            momentum outside [0, 1].
        BackendUnavailableError: a forced backend (``JEPA_BACKEND`` / :func:`jepa.ops.use_backend`) cannot
            run on these tensors.

    Targets must not overlap each other or the onlines (as with ``torch._foreach_lerp_``).
    """
    m = _check_momentum(momentum)
    targets = list(targets)
    onlines = list(onlines)
    if len(targets) != len(onlines):
        raise ValueError(
            f"ema_update: got {len(targets)} targets but {len(onlines)} onlines; expected lists of equal length"
        )
    backend = requested_backend()
    if backend == "triton" and not triton_available():
        raise BackendUnavailableError(
            "ema_update: backend 'triton' is unavailable: triton is not installed (pip install triton)"
        )
    if backend == "cpp" and not cpp_available():
        raise BackendUnavailableError("ema_update: backend 'cpp' is unavailable: jepa._C is not built or failed to import")
    if backend == "cuda" and not cuda_kernels_available():
        raise BackendUnavailableError(f"ema_update: backend 'cuda' is unavailable: {cuda_unavailable_reason()}")
    if not targets:
        return
    plan = _native.get_plan("ema_update", (targets, onlines), _validate)

    if backend == "torch":
        ema_update_reference(targets, onlines, m)
    elif backend == "cpp":
        if plan.route != "cpu":
            why = plan.reason or f"the tensors are on {plan.device}, not the CPU"
            raise BackendUnavailableError(f"ema_update: backend 'cpp' cannot run on these tensors: {why}")
        _mark_modified(targets)
        _run_cpp(plan, _host_momentum(m))
    elif backend == "cuda":
        if plan.route != "cuda":
            why = plan.reason or f"the tensors are on {plan.device}, not a CUDA device"
            raise BackendUnavailableError(f"ema_update: backend 'cuda' cannot run on these tensors: {why}")
        _mark_modified(targets)
        _run_cuda(plan, _host_momentum(m))
    elif backend == "triton":
        why = _triton_reason(targets, onlines, plan)
        if why:
            raise BackendUnavailableError(f"ema_update: backend 'triton' cannot run on these tensors: {why}")
        _mark_modified(targets)
        _run_triton(plan, targets, onlines, m)
    elif plan.route == "cpu" and cpp_available():
        _mark_modified(targets)
        _run_cpp(plan, _host_momentum(m))
    elif targets[0].device.type == "cuda":
        _auto_cuda(plan, targets, onlines, m)
    else:
        ema_update_reference(targets, onlines, m)


def _auto_cuda(plan: _native.TensorListPlan, targets, onlines, m: float | torch.Tensor) -> None:
    """auto on CUDA tensors: jepa._C's CUDA kernel, else Triton, else the reference. A device momentum
    goes to Triton first (the CUDA kernel's launcher would need it on the host: a sync)."""
    native_ok = plan.route == "cuda" and cuda_kernels_available()
    if native_ok and not isinstance(m, torch.Tensor):
        _mark_modified(targets)
        _run_cuda(plan, m)
    elif triton_available() and not _triton_reason(targets, onlines, plan):
        _mark_modified(targets)
        _run_triton(plan, targets, onlines, m)
    elif native_ok:
        _mark_modified(targets)
        _run_cuda(plan, _host_momentum(m))
    else:
        ema_update_reference(targets, onlines, m)
