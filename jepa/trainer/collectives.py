"""Collectives that autograd differentiates through, for losses that reduce statistics over ranks.

A leaf module of :mod:`jepa.trainer` (it imports only torch), so losses can use it without importing
:mod:`jepa.trainer.distributed`, which imports the trainer.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["all_reduce_sum_autograd", "multi_process"]


def multi_process(group: dist.ProcessGroup | None = None) -> bool:
    """True when a process group with more than one process is initialised (``group`` or the default)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:  # type: ignore[override]
        ctx.group = group
        out = x.detach().clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


def all_reduce_sum_autograd(x: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """``sum_r x_r`` over the ranks of ``group``, on every rank, differentiable; ``x`` itself when not
    running with more than one process.

    Forward: ``y = sum_r x_r`` (a new tensor; ``x`` is unchanged). Backward: the incoming gradients
    are summed over ranks too, ``dx_r = sum_s dL_s/dy``: the exact gradient of ``sum_s L_s``, the sum
    of every rank's loss. When every rank computes the same ``L`` from ``y`` (a statistic of the
    global batch), rank ``r`` so receives ``world_size * dL/dx_r``, and DistributedDataParallel's
    averaging of parameter gradients over ranks (a division by ``world_size``) turns it into exactly
    ``dL/dtheta`` of one process holding the whole batch: the convention of
    :func:`jepa.trainer.distributed.gather_rows` and of ``torch.distributed.nn.all_reduce``.

    Every rank must call it, and run the backward, in the same order (both are collectives).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"all_reduce_sum_autograd: x must be a tensor, got {type(x).__name__}")
    if not multi_process(group):
        return x
    return _AllReduceSum.apply(x, group)
