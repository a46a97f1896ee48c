"""EMA target update: ``target <- m * target + (1 - m) * online`` over lists of tensors.

Backends (see :mod:`jepa.ops._backend`):

- ``torch``: :func:`ema_update_reference`, ``torch._foreach_lerp_`` (any device, dtype, layout).
- ``cpp``: jepa._C's multi-threaded CPU kernel, one call for the whole list (csrc/ema_cpu.cpp).
- ``cuda``: jepa._C's CUDA kernel, one launch for the whole list (kernels/cuda/ema_update.cu).
- ``triton``: not implemented for this op yet; forcing it raises :class:`BackendUnavailableError`.

``auto`` uses the C++ kernel for CPU tensors and the CUDA kernel for CUDA tensors when jepa._C has
it, provided every tensor is a plain contiguous tensor of one dtype (float32, float16 or bfloat16) on
one device; anything else (mixed dtypes or devices, float64, strided views, tensor subclasses) runs
the torch reference. The native kernels compute in float32 and round once, like the reference.
"""

from __future__ import annotations

import numbers
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
)

__all__ = ["ema_update", "ema_update_reference"]


def ema_update_reference(targets: Sequence[torch.Tensor], onlines: Sequence[torch.Tensor], momentum: float) -> None:
    """Torch reference: ``torch._foreach_lerp_(targets, onlines, 1 - momentum)`` (without autograd)."""
    with torch.no_grad():
        torch._foreach_lerp_(list(targets), list(onlines), 1.0 - float(momentum))


def _check_momentum(momentum: object) -> float:
    if isinstance(momentum, bool) or not isinstance(momentum, (numbers.Real, torch.Tensor)):
        raise TypeError(f"ema_update: momentum must be a real number in [0, 1], got {type(momentum).__name__} {momentum!r}")
    if isinstance(momentum, torch.Tensor):
        if momentum.numel() != 1 or momentum.is_complex():
            raise TypeError(
                f"ema_update: momentum must be a real number in [0, 1], got a tensor of shape {tuple(momentum.shape)}"
            )
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


def _mark_modified(targets: list[torch.Tensor]) -> None:
    # The kernels write through raw pointers; bump the version counters as torch's in-place ops do,
    # so autograd still refuses to backpropagate through a value saved before the update. Done just
    # before the kernel, while the plan check has the tensors' metadata in cache (a spurious bump,
    # should the kernel fail, is harmless).
    increment_version(targets)


def ema_update(targets: Iterable[torch.Tensor], onlines: Iterable[torch.Tensor], momentum: float) -> None:
    """In-place EMA of ``targets`` toward ``onlines``: ``t <- momentum * t + (1 - momentum) * o``.

    Args:
        targets: tensors updated in place (e.g. the target encoder's parameters).
        onlines: tensors of the same shapes, dtypes and devices (e.g. the online encoder's parameters).
        momentum: a real number in [0, 1]; 1 keeps the targets, 0 copies the onlines.

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
    if backend == "triton":
        raise BackendUnavailableError(
            "ema_update: backend 'triton' does not implement ema_update yet (ema_update backends: torch, cpp, cuda)"
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
        _run_cpp(plan, m)
    elif backend == "cuda":
        if plan.route != "cuda":
            why = plan.reason or f"the tensors are on {plan.device}, not a CUDA device"
            raise BackendUnavailableError(f"ema_update: backend 'cuda' cannot run on these tensors: {why}")
        _mark_modified(targets)
        _run_cuda(plan, m)
    elif plan.route == "cpu" and cpp_available():
        _mark_modified(targets)
        _run_cpp(plan, m)
    elif plan.route == "cuda" and cuda_kernels_available():
        _mark_modified(targets)
        _run_cuda(plan, m)
    else:
        ema_update_reference(targets, onlines, m)
