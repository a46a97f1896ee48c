"""The JEPA prediction loss: distance between predicted and (normalized) target embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jepa.ops._backend import BackendUnavailableError, requested_backend

JEPA_LOSS_KINDS = ("smooth_l1", "mse", "l1")
REDUCTIONS = ("mean", "sum", "none")


def _elementwise(pred: torch.Tensor, target: torch.Tensor, loss: str, beta: float, reduction: str) -> torch.Tensor:
    if loss == "smooth_l1":
        return F.smooth_l1_loss(pred, target, beta=beta, reduction=reduction)
    if loss == "mse":
        return F.mse_loss(pred, target, reduction=reduction)
    return F.l1_loss(pred, target, reduction=reduction)


def jepa_loss_reference(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    loss: str = "smooth_l1",
    normalize_target: bool = True,
    beta: float = 1.0,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Torch reference of :func:`jepa_loss` (no input checks; call :func:`jepa_loss` for those)."""
    if normalize_target:
        target = F.layer_norm(target, target.shape[-1:])
    if mask is None:
        return _elementwise(pred, target, loss, beta, reduction)
    per_elem = _elementwise(pred, target, loss, beta, "none")
    weights = mask.unsqueeze(-1).to(per_elem.dtype)
    masked = per_elem * weights
    if reduction == "none":
        return masked
    total = masked.sum()
    if reduction == "sum":
        return total
    count = mask.sum().clamp(min=1) * pred.shape[-1]
    return total / count.to(total.dtype)


def jepa_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    loss: str = "smooth_l1",
    normalize_target: bool = True,
    beta: float = 1.0,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Distance between predicted embeddings ``pred`` and target embeddings ``target`` (``(..., D)``).

    Args:
        pred: predicted embeddings, floating point, shape ``(..., D)``.
        target: target embeddings, same shape as ``pred``. Gradients flow into it too; detach it
            first for the I-JEPA stop-gradient.
        loss: ``"smooth_l1"`` (I-JEPA), ``"mse"`` or ``"l1"``.
        normalize_target: layer-norm every target row over its last dimension (no affine) first.
        beta: smooth-L1 transition point (> 0); used only by ``"smooth_l1"``.
        mask: optional bool tensor of shape ``pred.shape[:-1]``; True marks the tokens that count.
            ``"mean"`` is then the mean over selected tokens x features (0 when none is selected),
            ``"sum"`` the sum over them, and ``"none"`` the elementwise loss with the unselected
            tokens set to 0.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (elementwise, the shape of ``pred``).

    Returns:
        The loss: a scalar, or a tensor shaped like ``pred`` for ``reduction="none"``.

    Raises:
        ValueError / TypeError: on bad shapes, dtypes or option values.
        BackendUnavailableError: when a backend other than ``auto``/``torch`` is forced.
    """
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(f"jepa_loss: pred and target must be tensors, got {type(pred).__name__} and {type(target).__name__}")
    if not pred.is_floating_point():
        raise TypeError(f"jepa_loss: pred must be a floating-point tensor, got dtype {pred.dtype}")
    if not target.is_floating_point():
        raise TypeError(f"jepa_loss: target must be a floating-point tensor, got dtype {target.dtype}")
    if pred.dim() < 1:
        raise ValueError(f"jepa_loss: pred must have at least 1 dimension (..., D), got shape {tuple(pred.shape)}")
    if pred.shape != target.shape:
        raise ValueError(f"jepa_loss: pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}; expected equal shapes")
    if pred.device != target.device:
        raise ValueError(f"jepa_loss: pred is on {pred.device} but target is on {target.device}; expected one device")
    if loss not in JEPA_LOSS_KINDS:
        raise ValueError(f"jepa_loss: loss must be one of {JEPA_LOSS_KINDS}, got {loss!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"jepa_loss: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if loss == "smooth_l1" and not beta > 0:
        raise ValueError(f"jepa_loss: beta must be > 0 for smooth_l1, got {beta!r}")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise TypeError(f"jepa_loss: mask must be a bool tensor, got {got}")
        if mask.shape != pred.shape[:-1]:
            raise ValueError(
                f"jepa_loss: mask must have shape pred.shape[:-1]={tuple(pred.shape[:-1])}, got {tuple(mask.shape)}"
            )
        if mask.device != pred.device:
            raise ValueError(f"jepa_loss: mask is on {mask.device} but pred is on {pred.device}; expected one device")
    backend = requested_backend()
    if backend not in ("auto", "torch"):
        raise BackendUnavailableError(
            f"jepa_loss: backend {backend!r} is not implemented yet for jepa_loss (available: torch)"
        )
    return jepa_loss_reference(
        pred, target, loss=loss, normalize_target=normalize_target, beta=beta, mask=mask, reduction=reduction
    )
