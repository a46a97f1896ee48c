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


REGULARIZED_EMBEDDINGS = ("pooled", "tokens", "prediction")
TARGET_NORMS = ("layer", "batch", "none")


def _normalize(x: torch.Tensor, how: str, eps: float = 1e-5) -> torch.Tensor:
    """Normalize embeddings ``x`` (``(B, [T,] D)``): ``"layer"`` per row, ``"batch"`` per feature over the batch."""
    if how == "layer":
        return F.layer_norm(x, x.shape[-1:])
    if how == "batch":
        mean = x.mean(dim=0, keepdim=True)
        std = x.var(dim=0, unbiased=False, keepdim=True).add(eps).sqrt()
        return (x - mean) / std
    return x


class JEPALoss(nn.Module):
    """I-JEPA prediction loss + VICReg-style variance/covariance regularizer (anti-collapse).

    ``forward(prediction, target, context=None)`` returns the total loss; :meth:`terms` returns
    every term (``loss``, ``pred_loss``, ``global_loss``, ``var_loss``, ``cov_loss``) for logging.

    Plain EMA-JEPA collapses on small datasets; the regularizer keeps embeddings spread out.
    ``regularize`` picks which embeddings it acts on:

    * ``"pooled"``: the context embeddings mean-pooled over tokens (one row per sample);
    * ``"tokens"``: every context token as a row (``(B*T, D)``);
    * ``"prediction"``: the predictor output mean-pooled over tokens.

    Args:
        loss: ``"smooth_l1"`` (I-JEPA), ``"mse"`` or ``"l1"``.
        normalize_target: normalize targets before the distance (see ``target_norm``).
        beta: smooth-L1 transition point.
        var_weight: weight of the variance term (0 disables it).
        cov_weight: weight of the covariance term (0 disables it).
        var_gamma: target standard deviation of the variance hinge.
        regularize: embeddings the variance/covariance terms act on (see above).
        global_weight: weight of an extra term matching the token-averaged prediction to the
            token-averaged target (each normalized like the targets); 0 disables it.
        target_norm: ``"layer"`` (I-JEPA: per token over features) or ``"batch"`` (per feature
            and token position over the batch, which removes what all samples share and so cannot
            be matched by a collapsed predictor; needs batches of more than one sample); used
            when ``normalize_target`` is true.
        token_weight: weight of the per-token prediction term (``pred_loss``).
    """

    uses_context = True

    def __init__(
        self,
        loss: str = "smooth_l1",
        normalize_target: bool = True,
        beta: float = 1.0,
        var_weight: float = 1.0,
        cov_weight: float = 0.04,
        var_gamma: float = 1.0,
        regularize: str = "pooled",
        global_weight: float = 0.0,
        target_norm: str = "layer",
        token_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if loss not in PREDICTION_LOSSES:
            raise ValueError(f"JEPALoss: loss must be one of {PREDICTION_LOSSES}, got {loss!r}")
        for name, value in (("var_weight", var_weight), ("cov_weight", cov_weight), ("global_weight", global_weight), ("token_weight", token_weight)):
            if value < 0:
                raise ValueError(f"JEPALoss: {name} must be >= 0, got {value!r}")
        if var_gamma <= 0:
            raise ValueError(f"JEPALoss: var_gamma must be > 0, got {var_gamma!r}")
        if regularize not in REGULARIZED_EMBEDDINGS:
            raise ValueError(f"JEPALoss: regularize must be one of {REGULARIZED_EMBEDDINGS}, got {regularize!r}")
        if target_norm not in TARGET_NORMS:
            raise ValueError(f"JEPALoss: target_norm must be one of {TARGET_NORMS}, got {target_norm!r}")
        self.loss = loss
        self.normalize_target = normalize_target
        self.beta = beta
        self.var_weight = var_weight
        self.cov_weight = cov_weight
        self.var_gamma = var_gamma
        self.regularize = regularize
        self.global_weight = global_weight
        self.target_norm = target_norm if normalize_target else "none"
        self.token_weight = token_weight

    def _distance(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The configured distance to an already-normalized target."""
        return jepa_prediction_loss(prediction, target, loss=self.loss, normalize_target=False, beta=self.beta)

    def terms(
        self,
        prediction: torch.Tensor,
        target: torch.Tensor,
        context: torch.Tensor | None = None,
        projection: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """All loss terms; ``loss`` is the weighted total.

        ``projection`` (the output of the model's projector, when it has one) replaces the pooled
        context embeddings as what the variance/covariance terms act on.
        """
        if prediction.shape != target.shape:
            raise ValueError(f"JEPALoss: prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
        target = target.detach()  # no gradient through the target (stop-gradient), whatever the encoder mode
        pred_loss = self._distance(prediction, _normalize(target, self.target_norm))
        out = {"pred_loss": pred_loss}
        total = self.token_weight * pred_loss
        if self.global_weight > 0 and prediction.dim() == 3:
            global_loss = self._distance(prediction.mean(dim=1), _normalize(target.mean(dim=1), self.target_norm))
            total = total + self.global_weight * global_loss
            out["global_loss"] = global_loss
        if self.var_weight > 0 or self.cov_weight > 0:
            z = projection if (projection is not None and self.regularize == "pooled") else self._regularized(prediction, context)
            if z is not None:
                var_loss, cov_loss = variance_covariance(z, gamma=self.var_gamma)
                total = total + self.var_weight * var_loss + self.cov_weight * cov_loss
                out["var_loss"], out["cov_loss"] = var_loss, cov_loss
        out["loss"] = total
        return out

    def _regularized(self, prediction: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor | None:
        """The ``(N, D)`` rows the variance/covariance terms act on (None: nothing to regularize)."""
        if self.regularize == "prediction":
            z = prediction
        elif context is None:
            return None
        else:
            z = context
        if z.dim() != 3:
            return z
        if self.regularize == "tokens":
            return z.reshape(-1, z.shape[-1])
        return z.mean(dim=1)

    def forward(
        self, prediction: torch.Tensor, target: torch.Tensor, context: torch.Tensor | None = None, projection: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.terms(prediction, target, context, projection)["loss"]
