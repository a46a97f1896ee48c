"""EMA target update: ``target <- m * target + (1 - m) * online`` over lists of tensors."""

from __future__ import annotations

from typing import Sequence

import torch

from jepa.ops._backend import BackendUnavailableError, requested_backend


def ema_update_reference(targets: Sequence[torch.Tensor], onlines: Sequence[torch.Tensor], momentum: float) -> None:
    """Torch reference: ``torch._foreach_lerp_(targets, onlines, 1 - momentum)``."""
    torch._foreach_lerp_(list(targets), list(onlines), 1.0 - float(momentum))


@torch.no_grad()
def ema_update(targets: Sequence[torch.Tensor], onlines: Sequence[torch.Tensor], momentum: float) -> None:
    """In-place EMA of ``targets`` toward ``onlines`` with momentum ``momentum`` in [0, 1]."""
    targets, onlines = list(targets), list(onlines)
    if len(targets) != len(onlines):
        raise ValueError(f"ema_update: got {len(targets)} targets but {len(onlines)} onlines")
    if not 0.0 <= float(momentum) <= 1.0:
        raise ValueError(f"ema_update: momentum must be in [0, 1], got {momentum}")
    if not targets:
        return
    backend = requested_backend()
    if backend not in ("auto", "torch"):
        raise BackendUnavailableError(f"ema_update: backend {backend!r} is not available")
    ema_update_reference(targets, onlines, momentum)
