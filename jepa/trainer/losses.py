"""JEPA objectives: the I-JEPA prediction loss plus an anti-collapse regularizer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PREDICTION_LOSSES = ("smooth_l1", "mse", "l1")


def jepa_prediction_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    *,
    loss: str = "smooth_l1",
    normalize_target: bool = True,
    beta: float = 1.0,
) -> torch.Tensor:
    """Distance between predicted and target embeddings, averaged over all elements.

    With ``normalize_target`` the target rows are layer-normed (no affine) first, as in I-JEPA.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
    target = target.detach()
    if normalize_target:
        target = F.layer_norm(target, target.shape[-1:])
    if loss == "smooth_l1":
        return F.smooth_l1_loss(prediction, target, beta=beta)
    if loss == "mse":
        return F.mse_loss(prediction, target)
    if loss == "l1":
        return F.l1_loss(prediction, target)
    raise ValueError(f"loss must be one of {PREDICTION_LOSSES}, got {loss!r}")


def variance_covariance(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg variance and covariance terms of embeddings ``z`` of shape ``(N, D)``.

    variance: mean over dimensions of ``relu(gamma - std)``; covariance: sum of squared
    off-diagonal covariances divided by ``D``.
    """
    if z.dim() != 2:
        raise ValueError(f"variance_covariance expects (N, D) embeddings, got {tuple(z.shape)}")
    n, d = z.shape
    if n < 2:
        zero = z.sum() * 0.0
        return zero, zero
    z = z.float()
    z = z - z.mean(dim=0)
    std = torch.sqrt(z.var(dim=0) + eps)
    var_loss = F.relu(gamma - std).mean()
    cov = (z.T @ z) / (n - 1)
    off = cov - torch.diag(torch.diagonal(cov))
    cov_loss = off.pow(2).sum() / d
    return var_loss, cov_loss


class JEPALoss(nn.Module):
    """I-JEPA prediction loss + VICReg-style variance/covariance regularizer (anti-collapse).

    ``forward(prediction, target, context=None)`` returns the total loss; :meth:`terms` returns
    every term (``loss``, ``pred_loss``, ``var_loss``, ``cov_loss``) for logging. The regularizer
    acts on the context embeddings, mean-pooled over tokens (one row per sample), so it keeps the
    per-sample representation spread out: plain EMA-JEPA collapses on small datasets.

    Args:
        loss: ``"smooth_l1"`` (I-JEPA), ``"mse"`` or ``"l1"``.
        normalize_target: layer-norm target rows before the distance.
        beta: smooth-L1 transition point.
        var_weight: weight of the variance term (0 disables it).
        cov_weight: weight of the covariance term (0 disables it).
    """

    uses_context = True

    def __init__(
        self,
        loss: str = "smooth_l1",
        normalize_target: bool = True,
        beta: float = 1.0,
        var_weight: float = 1.0,
        cov_weight: float = 0.04,
    ) -> None:
        super().__init__()
        if loss not in PREDICTION_LOSSES:
            raise ValueError(f"JEPALoss: loss must be one of {PREDICTION_LOSSES}, got {loss!r}")
        if var_weight < 0 or cov_weight < 0:
            raise ValueError(f"JEPALoss: var_weight and cov_weight must be >= 0, got {var_weight!r}, {cov_weight!r}")
        self.loss = loss
        self.normalize_target = normalize_target
        self.beta = beta
        self.var_weight = var_weight
        self.cov_weight = cov_weight

    def terms(self, prediction: torch.Tensor, target: torch.Tensor, context: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """All loss terms; ``loss`` is the weighted total."""
        pred_loss = jepa_prediction_loss(prediction, target, loss=self.loss, normalize_target=self.normalize_target, beta=self.beta)
        out = {"pred_loss": pred_loss}
        total = pred_loss
        if context is not None and (self.var_weight > 0 or self.cov_weight > 0):
            pooled = context.mean(dim=1) if context.dim() == 3 else context
            var_loss, cov_loss = variance_covariance(pooled)
            total = total + self.var_weight * var_loss + self.cov_weight * cov_loss
            out["var_loss"], out["cov_loss"] = var_loss, cov_loss
        out["loss"] = total
        return out

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.terms(prediction, target, context)["loss"]
