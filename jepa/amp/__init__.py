"""jepa.amp: mixed-precision helpers. :class:`GradScaler` is a drop-in for ``torch.amp.GradScaler`` whose
unscale/inf-check and scale update run in jepa's kernels (see ``jepa.ops.amp``)."""

from jepa.amp.grad_scaler import GradScaler, OptState

__all__ = ["GradScaler", "OptState"]
