"""MixedPrecisionTrainer: JEPATrainer with autocast (bf16 or fp16 + loss scaling)."""

from __future__ import annotations

from typing import Any

import torch

from jepa.amp import GradScaler
from jepa.trainer.trainer import JEPATrainer

__all__ = ["MixedPrecisionTrainer"]


class MixedPrecisionTrainer(JEPATrainer):
    """Train under autocast: float16 with dynamic loss scaling, or bfloat16 without.

    float16 (``grad_scaler=True``, the default) scales the loss with a :class:`jepa.amp.GradScaler`
    (``self.scaler``; torch.amp.GradScaler's API and state dict, with the unscale/inf check and the scale
    update in jepa's C++/CUDA kernels): steps whose gradients hold inf/NaN are skipped and the scale
    backs off, and it grows again after 2000 good steps. Parameters and optimizer state stay float32.
    bfloat16 (``grad_scaler=False``) has float32's exponent range, so it needs no scaler and builds none.
    Works on CPU too (torch's CPU autocast supports both dtypes).

    Args:
        config: a :class:`~jepa.config.Config`, YAML path or shipped config name.
        use_amp: run forward passes under autocast (``False``: plain float32 training, no scaler).
        grad_scaler: with ``True`` the forward runs in float16 and the loss is scaled (a
            ``GradScaler``: steps with inf/NaN gradients are skipped and the scale backs off);
            with ``False`` it runs in bfloat16, which has float32's exponent range and needs no
            scaler (building one anyway, as some reference code does, only costs time).
        dtype: force ``"bf16"`` or ``"fp16"`` instead of deriving it from ``grad_scaler``
            (``"fp16"`` requires ``grad_scaler=True``).
        **kwargs: passed to :class:`~jepa.trainer.JEPATrainer` (``callbacks``, ...).

    The scaler's state is saved in and restored from checkpoints (key ``grad_scaler``).
    """

    def __init__(self, config: Any, use_amp: bool = True, grad_scaler: bool = True, dtype: str | None = None, **kwargs: Any) -> None:
        if dtype not in (None, "bf16", "fp16"):
            raise ValueError(f"MixedPrecisionTrainer: dtype must be None, 'bf16' or 'fp16', got {dtype!r}")
        precision = None
        if use_amp:
            precision = dtype or ("fp16" if grad_scaler else "bf16")
        if precision == "fp16" and not grad_scaler:
            raise ValueError("MixedPrecisionTrainer: fp16 without a grad scaler underflows small gradients; use grad_scaler=True or dtype='bf16'")
        super().__init__(config, mixed_precision=precision, **kwargs)
        self.use_amp = use_amp

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype (None when amp is off)."""
        return self.autocast_dtype

    @property
    def grad_scaler(self) -> GradScaler | None:
        """The loss scaler (a :class:`jepa.amp.GradScaler` for float16, None for bfloat16 or without amp)."""
        return self.scaler
