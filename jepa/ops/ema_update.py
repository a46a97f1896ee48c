"""EMA target update: ``target <- m * target + (1 - m) * online`` over lists of tensors.

Backends (chosen by :func:`jepa.ops._backend.choose`):

- ``torch``: :func:`ema_update_reference`, ``torch._foreach_lerp_`` (any device, dtype, layout).
- ``cpp``: jepa._C's multi-threaded CPU kernel, one call for the whole list (csrc/ema_cpu.cpp).
- ``cuda``: jepa._C's CUDA kernel, one launch for the whole list (kernels/cuda/ema_update.cu), 16-byte
  loads where the tensors are 16-byte aligned.
- ``triton``: a multi-tensor Triton kernel (kernels/triton/ema_update.py), one launch per dtype over a
  device-side table of addresses and chunks; it runs on CUDA tensors (or CPU tensors under
  ``TRITON_INTERPRET=1``), contiguous float32/float16/bfloat16 on one device (mixed dtypes are fine).

``auto`` uses the C++ kernel for CPU tensors and, for CUDA tensors, the CUDA kernel of jepa._C when it
was built, else the Triton kernel, else the reference; the native kernels need every tensor to be a
plain contiguous tensor of one dtype (float32, float16 or bfloat16) on one device, the Triton kernel
accepts mixed dtypes; anything else (mixed devices, float64, strided views, tensor subclasses) runs the
torch reference. The kernels compute in float32 and round once, like the reference.

No host sync on a GPU: the device tables of both kernels are built once per set of tensors (pinned host
memory, an asynchronous copy, memory from torch's caching allocator) and reused while the same tensors
keep their addresses (:mod:`jepa.ops._native`), mixed dtypes included. A call on another CUDA stream
waits for the table's copy (an event, no host sync). CUDA graphs: run ``ema_update`` once on the same
tensors before capturing it (a warm-up iteration); building a table inside a capture raises
``RuntimeError`` (:class:`jepa.ops._native.DeviceTable`).

``momentum`` may be a 0-d tensor. On the CPU it is read once (free). On a GPU it is not read by the
host at all where possible, so a momentum schedule kept on the device never forces a host sync:
the Triton kernel and the torch reference read it on the device (``auto`` then prefers Triton over
the CUDA kernel of jepa._C, whose launcher takes a host float); only the ``cuda``/``cpp`` backends
convert it with ``float()``. A device momentum is not range-checked (that would need a sync).
"""

from __future__ import annotations

import numbers
import weakref
from typing import Callable, Iterable, Sequence

import torch
from torch.autograd.graph import increment_version

from jepa.ops import _backend, _native
from jepa.ops._backend import native_module

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


_NATIVE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

EMA_UPDATE = _backend.register_op(
    "ema_update",
    backends=("torch", "cpp", "cuda", "triton"),
    dtypes={"cpp": _NATIVE_DTYPES, "cuda": _NATIVE_DTYPES, "triton": _NATIVE_DTYPES},
    auto={"cpu": ("cpp", "torch"), "cuda": ("cuda", "triton", "torch")},
)
# A momentum on the device goes to Triton first: the CUDA kernel's launcher takes a host float (a sync).
_AUTO_DEVICE_MOMENTUM = ("triton", "cuda", "torch")


def _run_cpp(plan: _native.TensorListPlan, momentum: float) -> None:
    native_module().ema_update(plan.table(), momentum, torch.get_num_threads())


def _run_cuda(plan: _native.TensorListPlan, momentum: float) -> None:
    device = plan.device
    with _backend.device_guard(device):
        stream = torch.cuda.current_stream(device).cuda_stream
        native_module().ema_update_cuda(plan.table(), momentum, stream, plan.device_table().data_ptr())


def _host_momentum(m: float | torch.Tensor) -> float:
    # The jepa._C launchers take a host float: a device momentum costs a sync here.
    return float(m)


def _device_momentum(m: float | torch.Tensor, device: torch.device) -> float | torch.Tensor:
    # The Triton kernel reads a momentum tensor on the tensors' own device; anything else becomes a float.
    if isinstance(m, torch.Tensor) and m.device == device:
        return m.contiguous()
    return float(m)


# Triton launch groups and their device tables (_native.DeviceTable: safe on any stream; built before a
# CUDA-graph capture), kept while the plan they were built for is alive (plans are reused while the
# same tensors keep the same addresses, mixed dtypes included; see jepa.ops._native).
_TRITON_TABLES: "weakref.WeakKeyDictionary[_native.TensorListPlan, list]" = weakref.WeakKeyDictionary()


def _check(plan: _native.TensorListPlan) -> Callable[[str], str]:
    """The op's own reasons, on top of availability, device and dtypes (checked by choose)."""

    def check(backend: str) -> str:
        if backend == "triton":
            return plan.layout_reason  # Triton takes mixed dtypes
        if backend in ("cpp", "cuda"):
            return plan.reason if plan.route is None else ""
        return ""

    return check


def _triton_tables(plan: _native.TensorListPlan, targets, onlines) -> tuple[list, list[_native.DeviceTable]]:
    """The Triton launch groups of ``plan`` and their device tables (built on first use, on the current
    stream; call inside the tensors' device guard)."""
    from jepa.kernels.triton import ema_update as kernels  # noqa: PLC0415  (optional dependency)

    staged = _TRITON_TABLES.get(plan) if plan.ptrs is not None else None
    if staged is None:
        groups = kernels.build_groups(targets, onlines)
        staged = (groups, [_native.DeviceTable(g.layout, targets[0].device, "ema_update") for g in groups])
        if plan.ptrs is not None:
            _TRITON_TABLES[plan] = staged
    return staged


def _run_triton(plan: _native.TensorListPlan, targets, onlines, m: float | torch.Tensor) -> None:
    from jepa.kernels.triton import ema_update as kernels  # noqa: PLC0415  (optional dependency)

    device = targets[0].device
    with _backend.device_guard(device):
        groups, tables = _triton_tables(plan, targets, onlines)
        kernels.ema_update(groups, [t.get() for t in tables], _device_momentum(m, device))


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
        TypeError: mismatched lengths, shapes, dtypes or devices, non-tensors, or a
            momentum outside [0, 1].
        ValueError: the same checks, for a bad value rather than a bad type.
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
    if not targets:
        _backend.choose(EMA_UPDATE)  # a forced backend that is unavailable raises even for empty lists
        return
    plan = _native.get_plan("ema_update", (targets, onlines), _validate)
    device = plan.device
    device_m = isinstance(m, torch.Tensor) and device.type == "cuda"
    backend = _backend.choose(
        EMA_UPDATE, device=device, dtypes=plan.dtypes, check=_check(plan),
        auto=_AUTO_DEVICE_MOMENTUM if device_m else None,
    )
    if backend == "torch":
        ema_update_reference(targets, onlines, m)
        return
    _mark_modified(targets)
    if backend == "cpp":
        _run_cpp(plan, _host_momentum(m))
    elif backend == "cuda":
        _run_cuda(plan, _host_momentum(m))
    else:
        _run_triton(plan, targets, onlines, m)
