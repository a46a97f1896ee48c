"""MixedPrecisionTrainer: JEPATrainer with autocast (bf16 or fp16 + loss scaling)."""

from __future__ import annotations

from typing import Any

import torch

from jepa.trainer.trainer import JEPATrainer

__all__ = ["MixedPrecisionTrainer"]


class MixedPrecisionTrainer(JEPATrainer):
    """Train under autocast.

    Args:
        config: a :class:`~jepa.config.Config`, YAML path or shipped config name.
        use_amp: run forward passes under autocast.
        grad_scaler: with ``True`` the forward runs in float16 and the loss is scaled (a
            ``GradScaler``: steps with inf/NaN gradients are skipped and the scale backs off);
            with ``False`` it runs in bfloat16, which has float32's exponent range and needs no
            scaler (building one anyway, as some reference code does, only costs time).
        dtype: force ``"bf16"`` or ``"fp16"`` instead of deriving it from ``grad_scaler``.
        **kwargs: passed to :class:`~jepa.trainer.JEPATrainer` (``callbacks``, ...).
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
