"""Training objectives.

* :class:`JEPALoss`: the I-JEPA prediction loss plus an anti-collapse regularizer (the default);
* :class:`IJEPALoss`: I-JEPA on images: the predicted target-block tokens against the layer-normed
  target-encoder tokens (:class:`~jepa.models.IJEPA` outputs), optionally + variance/covariance;
* :class:`ContrastiveLoss`: InfoNCE between pooled prediction and target embeddings;
* :class:`ReconstructionLoss`: a direct distance (MSE, L1, smooth-L1 or cosine);
* :class:`VICRegLoss`: the VICReg objective between two embeddings;
* :class:`SIGRegLoss`: LeJEPA's SIGReg regularizer (embeddings towards an isotropic Gaussian);
* :func:`get_loss`: one of the above by name; :func:`default_loss` the one a model trains with by default.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from jepa.models import IJEPA
from jepa.ops import info_nce, jepa_loss, sigreg, sigreg_ecf, sigreg_from_ecf
from jepa.trainer.checks import check_choice, check_int, check_number
from jepa.trainer.collectives import all_reduce_sum_autograd, multi_process

PREDICTION_LOSSES = ("smooth_l1", "mse", "l1")


def jepa_prediction_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    *,
    loss: str = "smooth_l1",
    normalize_target: bool = True,
    beta: float = 1.0,
    mask: torch.Tensor | None = None,
    stop_gradient: bool = True,
) -> torch.Tensor:
    """Distance between predicted and target embeddings, averaged over all elements.

    With ``normalize_target`` the target rows are layer-normed (no affine) first, as in I-JEPA.
    The target is detached (stop-gradient) unless ``stop_gradient=False``. ``mask`` (bool,
    ``prediction.shape[:-1]``, True = counts) restricts the mean to the selected tokens. Computed by
    :func:`jepa.ops.jepa_loss`.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
    if stop_gradient:
        target = target.detach()
    return jepa_loss(prediction, target, loss=loss, normalize_target=normalize_target, beta=beta, mask=mask)


def _variance_covariance(
    z: torch.Tensor, gamma: float, eps: float, variance: bool, covariance: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The VICReg terms of ``z`` that are asked for (None for the others)."""
    if z.dim() != 2:
        raise ValueError(f"variance_covariance expects (N, D) embeddings, got {tuple(z.shape)}")
    n, d = z.shape
    if n < 2:
        zero = z.sum() * 0.0
        return (zero if variance else None), (zero if covariance else None)
    z = z.float()
    z = z - z.mean(dim=0)
    var_loss = cov_loss = None
    if variance:
        std = torch.sqrt(z.var(dim=0) + eps)
        var_loss = F.relu(gamma - std).mean()
    if covariance:
        cov = (z.T @ z) / (n - 1)
        off = cov - torch.diag(torch.diagonal(cov))
        cov_loss = off.pow(2).sum() / d
    return var_loss, cov_loss


def variance_covariance(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg variance and covariance terms of embeddings ``z`` of shape ``(N, D)``.

    variance: mean over dimensions of ``relu(gamma - std)``; covariance: sum of squared
    off-diagonal covariances divided by ``D``.
    """
    return _variance_covariance(z, gamma, eps, True, True)  # type: ignore[return-value]


REGULARIZED_EMBEDDINGS = ("pooled", "tokens", "prediction")
TARGET_NORMS = ("layer", "batch", "none")
#: Anti-collapse regularizers of :class:`JEPALoss`: variance/covariance (VICReg-style), LeJEPA's SIGReg, none.
REGULARIZERS = ("vc", "sigreg", "none")


def _resolve_regularizer(regularizer: Any, owner: str, distributed: bool = True) -> tuple[str, "SIGRegLoss | None"]:
    """``(name, sigreg)`` of a loss's ``regularizer`` argument: a :class:`SIGRegLoss` instance is used
    as given; ``"sigreg"`` builds one (``distributed``: it reduces over ranks itself)."""
    if isinstance(regularizer, SIGRegLoss):
        return "sigreg", regularizer
    check_choice("regularizer", regularizer, REGULARIZERS, owner=owner)
    return regularizer, (SIGRegLoss(distributed=distributed) if regularizer == "sigreg" else None)


def _regularizer_terms(loss: Any, z: torch.Tensor, out: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The weighted regularizer terms of ``loss`` (a :class:`JEPALoss` or :class:`IJEPALoss`) on the
    rows ``z``; the unweighted ones go into ``out`` (``sigreg_loss``, or ``var_loss``/``cov_loss``)."""
    w = loss.regularizer_weight
    if loss.sigreg is not None:
        out["sigreg_loss"] = loss.sigreg(z)
        return [w * out["sigreg_loss"]]
    weighted = []
    var_loss, cov_loss = _variance_covariance(z, loss.var_gamma, 1e-4, loss.var_weight > 0, loss.cov_weight > 0)
    if var_loss is not None:
        out["var_loss"] = var_loss
        weighted.append(w * loss.var_weight * var_loss)
    if cov_loss is not None:
        out["cov_loss"] = cov_loss
        weighted.append(w * loss.cov_weight * cov_loss)
    return weighted


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
        regularizer: the anti-collapse term: ``"vc"`` (the variance/covariance terms above),
            ``"sigreg"`` (LeJEPA's SIGReg, :class:`~jepa.trainer.losses.SIGRegLoss` with its defaults; pass a
            :class:`~jepa.trainer.losses.SIGRegLoss` to choose its slices, knots and seed) or ``"none"``. SIGReg acts on
            the same rows as the variance/covariance terms (the projection, else ``regularize``'s
            rows) and is logged as ``sigreg_loss``.
        regularizer_weight: multiplies the regularizer's terms (``var_weight``/``cov_weight`` for
            ``"vc"``, the SIGReg statistic for ``"sigreg"``).
        stop_gradient: detach the target (I-JEPA's stop-gradient). ``False`` lets gradients flow
            through the target as well, for LeJEPA-style training where the target is the online
            encoder's embedding of another view (``JEPA(target_encoder="none")``) and the regularizer
            alone prevents collapse.

    **Distributed.** :attr:`reduces_over_ranks` names the outputs whose statistics the loss reduces
    over ranks itself (SIGReg on the projection or the context: one all-reduce of its characteristic
    function); the trainer does not gather those (:func:`jepa.trainer.objective.gathered_inputs`).
    With ``regularize="prediction"`` SIGReg acts on the prediction the trainer gathers, so it must
    not reduce again: a :class:`~jepa.trainer.losses.SIGRegLoss` passed with ``distributed=True`` is refused.
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
        *,
        regularizer: "str | SIGRegLoss" = "vc",
        regularizer_weight: float = 1.0,
        stop_gradient: bool = True,
    ) -> None:
        super().__init__()
        owner = "JEPALoss"
        check_choice("loss", loss, PREDICTION_LOSSES, owner=owner)
        for name, value in (("var_weight", var_weight), ("cov_weight", cov_weight), ("global_weight", global_weight),
                            ("token_weight", token_weight), ("regularizer_weight", regularizer_weight)):
            check_number(name, value, low=0, owner=owner)
        if not isinstance(stop_gradient, bool):
            raise TypeError(f"JEPALoss: stop_gradient must be a bool, got {type(stop_gradient).__name__}")
        # rows of the gathered prediction are already global: a SIGReg built here does not reduce over ranks again
        regularizer, self.sigreg = _resolve_regularizer(regularizer, owner, distributed=regularize != "prediction")
        if self.sigreg is not None and self.sigreg.distributed and regularize == "prediction":
            raise ValueError(
                "JEPALoss: regularize='prediction' with a SIGRegLoss(distributed=True): the trainer gathers the prediction "
                "from every rank, so SIGReg must not reduce over ranks again; pass SIGRegLoss(..., distributed=False)"
            )
        self.regularizer = regularizer
        self.regularizer_weight = float(regularizer_weight)
        self.stop_gradient = stop_gradient
        check_number("var_gamma", var_gamma, low=0, low_open=True, owner=owner)
        check_choice("regularize", regularize, REGULARIZED_EMBEDDINGS, owner=owner)
        check_choice("target_norm", target_norm, TARGET_NORMS, owner=owner)
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
        """The configured distance to ``target`` normalized per ``target_norm``: layer norm is fused
        into :func:`jepa.ops.jepa_loss`; batch norm needs statistics over the batch, computed here."""
        sg = self.stop_gradient
        if self.target_norm == "layer":
            return jepa_prediction_loss(prediction, target, loss=self.loss, normalize_target=True, beta=self.beta, stop_gradient=sg)
        return jepa_prediction_loss(prediction, _normalize(target, self.target_norm), loss=self.loss, normalize_target=False, beta=self.beta,
                                    stop_gradient=sg)

    def terms(
        self,
        prediction: torch.Tensor,
        target: torch.Tensor,
        context: torch.Tensor | None = None,
        projection: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """All loss terms; ``loss`` is the weighted total.

        A term whose weight is 0 is not computed (and not returned). ``projection`` (the output of
        the model's projector, when it has one) replaces the pooled context embeddings as what the
        variance/covariance terms act on.
        """
        if prediction.shape != target.shape:
            raise ValueError(f"JEPALoss: prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
        if self.stop_gradient:
            target = target.detach()  # no gradient through the target (stop-gradient), whatever the encoder mode
        out: dict[str, torch.Tensor] = {}
        weighted: list[torch.Tensor] = []
        if self.token_weight > 0:
            out["pred_loss"] = self._distance(prediction, target)
            weighted.append(self.token_weight * out["pred_loss"])
        if self.global_weight > 0 and prediction.dim() == 3:
            out["global_loss"] = self._distance(prediction.mean(dim=1), target.mean(dim=1))
            weighted.append(self.global_weight * out["global_loss"])
        vc = self.regularizer == "vc" and (self.var_weight > 0 or self.cov_weight > 0)
        if (vc or self.regularizer == "sigreg") and self.regularizer_weight > 0:
            z = projection if (projection is not None and self.regularize == "pooled") else self._regularized(prediction, context)
            if z is not None:
                weighted += _regularizer_terms(self, z, out)
        # every weight 0 (or no term applies to these shapes): a zero that still has a graph
        out["loss"] = sum(weighted[1:], weighted[0]) if weighted else prediction.sum() * 0.0
        return out

    @property
    def reduces_over_ranks(self) -> frozenset[str]:
        """The outputs whose statistics this loss reduces over ranks itself, which are therefore not
        gathered: the projection and the context when a distributed SIGReg regularizes them; else none."""
        if self.sigreg is None or not self.sigreg.distributed or self.regularizer_weight == 0:
            return frozenset()
        return frozenset({"projection", "context"})

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
        """The weighted total loss (``terms(...)["loss"]``)."""
        return self.terms(prediction, target, context, projection)["loss"]


def _common_dtype(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``a`` and ``b`` in their promoted dtype: under autocast the predictor ends in a bf16/fp16
    linear layer while the target encoder ends in a layer norm (fp32); the loss is computed in the
    wider type (as I-JEPA's ``smooth_l1_loss`` of the two does), the gradient flows back in ``a``'s."""
    if a.dtype == b.dtype:
        return a, b
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype)


class IJEPALoss(nn.Module):
    """I-JEPA's objective on images, over the outputs of :class:`~jepa.models.IJEPA`.

    The target encoder's tokens of the full images ``target_tokens`` ``(B, N, D)`` are layer-normed
    (no affine) and compared with the predictions ``prediction`` ``(B, M, D)`` at the patches
    ``target_index`` ``(B, M)``; padded rows (``target_valid`` False) do not count. The gather is
    fused into :func:`jepa.ops.jepa_loss` (``target_index=``): the gathered targets are never
    materialised on the Triton path. The target gets no gradient (stop-gradient) unless
    ``stop_gradient=False``.

    An anti-collapse regularizer (``regularizer``) acts on ``projection`` (the model's projector on
    the pooled context) or, without a projector, on ``pooled``: the variance/covariance terms of
    :class:`JEPALoss` (``"vc"``, weighted by ``var_weight``/``cov_weight``), LeJEPA's SIGReg
    (``"sigreg"``, :class:`SIGRegLoss`) or nothing (``"none"``). The four recipes of the objectives
    guide are then: I-JEPA (``regularizer="none"``, EMA target), I-JEPA + VC, I-JEPA + SIGReg, and
    LeJEPA-style (``IJEPA(target_encoder="none")``, ``regularizer="sigreg"``, ``stop_gradient=False``).

    Under DDP the token outputs are not gathered (each rank's masks have their own sizes; the
    prediction term is the mean over the rank's valid tokens, as in I-JEPA, and DDP averages the
    gradients); ``projection``/``pooled`` are gathered for the variance/covariance terms, so they see
    the global batch. A distributed :class:`SIGRegLoss` reduces its characteristic function over
    ranks itself, so with SIGReg :attr:`reduces_over_ranks` names ``projection``/``pooled`` and the
    trainer passes each rank its own rows (:func:`jepa.trainer.objective.gathered_inputs`).

    ``terms(...)`` returns ``loss``, ``pred_loss`` and, when enabled, ``var_loss``/``cov_loss`` or
    ``sigreg_loss``.

    Args:
        loss: ``"smooth_l1"`` (I-JEPA), ``"mse"`` (L2) or ``"l1"``.
        beta: smooth-L1 transition point.
        normalize_target: layer-norm the target tokens first (I-JEPA: True).
        var_weight: weight of the variance hinge (0: off, plain I-JEPA).
        cov_weight: weight of the covariance term (0: off).
        var_gamma: target standard deviation of the variance hinge.
        regularizer: ``"vc"`` (the variance/covariance terms; with both weights 0, none),
            ``"sigreg"`` (a :class:`SIGRegLoss` with its defaults; pass a :class:`SIGRegLoss` to choose
            its slices, knots, seed and whether it reduces over ranks) or ``"none"``.
        regularizer_weight: multiplies the regularizer's terms (>= 0; 0 disables it).
        stop_gradient: detach the target tokens (I-JEPA). ``False`` for LeJEPA-style training, where
            the target tokens are the online encoder's on the full image
            (``IJEPA(target_encoder="none")``) and the regularizer alone prevents collapse.
    """

    def __init__(
        self,
        loss: str = "smooth_l1",
        beta: float = 1.0,
        normalize_target: bool = True,
        var_weight: float = 0.0,
        cov_weight: float = 0.0,
        var_gamma: float = 1.0,
        *,
        regularizer: "str | SIGRegLoss" = "vc",
        regularizer_weight: float = 1.0,
        stop_gradient: bool = True,
    ) -> None:
        super().__init__()
        owner = "IJEPALoss"
        check_choice("loss", loss, PREDICTION_LOSSES, owner=owner)
        check_number("beta", beta, low=0, low_open=True, owner=owner)
        check_number("var_weight", var_weight, low=0, owner=owner)
        check_number("cov_weight", cov_weight, low=0, owner=owner)
        check_number("var_gamma", var_gamma, low=0, low_open=True, owner=owner)
        check_number("regularizer_weight", regularizer_weight, low=0, owner=owner)
        if not isinstance(normalize_target, bool):
            raise TypeError(f"IJEPALoss: normalize_target must be a bool, got {normalize_target!r}")
        if not isinstance(stop_gradient, bool):
            raise TypeError(f"IJEPALoss: stop_gradient must be a bool, got {type(stop_gradient).__name__}")
        regularizer, self.sigreg = _resolve_regularizer(regularizer, owner)
        self.loss, self.beta, self.normalize_target = loss, float(beta), normalize_target
        self.var_weight, self.cov_weight, self.var_gamma = float(var_weight), float(cov_weight), float(var_gamma)
        self.regularizer, self.regularizer_weight, self.stop_gradient = regularizer, float(regularizer_weight), stop_gradient

    @property
    def regularizes(self) -> bool:
        """Whether a regularizer term is computed (``"vc"`` with a weight > 0, or ``"sigreg"``, and
        ``regularizer_weight > 0``): the model then needs ``projection`` or ``pooled``."""
        if self.regularizer_weight == 0 or self.regularizer == "none":
            return False
        return self.regularizer == "sigreg" or self.var_weight > 0 or self.cov_weight > 0

    @property
    def reduces_over_ranks(self) -> frozenset[str]:
        """Outputs this loss reduces over ranks itself (not gathered by the trainer): ``projection``
        and ``pooled`` when a distributed SIGReg regularizes them; else none."""
        if not self.regularizes or self.sigreg is None or not self.sigreg.distributed:
            return frozenset()
        return frozenset({"projection", "pooled"})

    def terms(
        self,
        prediction: torch.Tensor,
        target_tokens: torch.Tensor,
        target_index: torch.Tensor,
        target_valid: torch.Tensor | None = None,
        projection: torch.Tensor | None = None,
        pooled: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Every term; ``loss`` is the weighted total (see the class docstring for the shapes)."""
        for name, value in (("prediction", prediction), ("target_tokens", target_tokens), ("target_index", target_index)):
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"IJEPALoss: {name} must be a tensor, got {type(value).__name__}")
        pred, target = _common_dtype(prediction, target_tokens.detach() if self.stop_gradient else target_tokens)
        out = {
            "pred_loss": jepa_loss(
                pred, target, loss=self.loss, beta=self.beta, mask=target_valid,
                normalize_target=self.normalize_target, target_index=target_index,
            )
        }
        total = out["pred_loss"]
        if self.regularizes:
            z = projection if projection is not None else pooled
            if z is None:
                raise TypeError(
                    f"IJEPALoss: regularizer={self.regularizer!r} needs the model's 'projection' or 'pooled' output; "
                    "the model returned neither"
                )
            for term in _regularizer_terms(self, z, out):
                total = total + term
        out["loss"] = total
        return out

    def forward(
        self,
        prediction: torch.Tensor,
        target_tokens: torch.Tensor,
        target_index: torch.Tensor,
        target_valid: torch.Tensor | None = None,
        projection: torch.Tensor | None = None,
        pooled: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The weighted total loss (``terms(...)["loss"]``)."""
        return self.terms(prediction, target_tokens, target_index, target_valid, projection, pooled)["loss"]

    def extra_repr(self) -> str:
        return (f"loss={self.loss!r}, beta={self.beta}, regularizer={self.regularizer!r}, regularizer_weight={self.regularizer_weight}, "
                f"var_weight={self.var_weight}, cov_weight={self.cov_weight}, stop_gradient={self.stop_gradient}")


def default_loss(model: nn.Module) -> nn.Module:
    """The loss a model trains and is evaluated with when none is given: :class:`IJEPALoss` for an
    :class:`~jepa.models.IJEPA`, else :class:`JEPALoss`."""
    return IJEPALoss() if isinstance(model, IJEPA) else JEPALoss()


def _pooled(x: torch.Tensor, name: str, owner: str) -> torch.Tensor:
    """``x`` as ``(B, D)`` rows: unchanged when 2-D, mean over tokens when ``(B, T, D)``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{owner}: {name} must be a tensor, got {type(x).__name__}")
    if x.dim() == 3:
        return x.mean(dim=1)
    if x.dim() != 2:
        raise ValueError(f"{owner}: {name} must be (B, D) or (B, T, D), got shape {tuple(x.shape)}")
    return x


def _check_pair(prediction: torch.Tensor, target: torch.Tensor, owner: str) -> None:
    if not isinstance(prediction, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(
            f"{owner}: prediction and target must be tensors, got {type(prediction).__name__} and {type(target).__name__}"
        )
    if prediction.shape != target.shape:
        raise ValueError(
            f"{owner}: prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}; expected equal shapes"
        )


NEGATIVE_SAMPLING = ("random", "in_batch", "hard")


class ContrastiveLoss(nn.Module):
    """InfoNCE between pooled prediction and target embeddings.

    Row ``i`` of the prediction is pulled towards row ``i`` of the target (its positive) and pushed
    from other target rows (its negatives). Rows are L2-normalized and similarities divided by
    ``temperature``. ``(B, T, D)`` inputs are mean-pooled over ``T`` first.

    Args:
        temperature: softmax temperature (> 0).
        negative_sampling: which other rows are negatives of a row:

            * ``"in_batch"``: every other row of the batch (computed by :func:`jepa.ops.info_nce`);
            * ``"random"``: ``num_negatives`` other rows drawn uniformly at random without
              replacement, independently for each row (uses torch's global RNG);
            * ``"hard"``: the ``num_negatives`` other rows most similar to the row.
        num_negatives: negatives per row for ``"random"``/``"hard"``; default ``min(B - 1, 16)``;
            a value above ``B - 1`` is capped at ``B - 1`` for that batch. Must be ``None`` for
            ``"in_batch"``.
        symmetric: also compute the target -> prediction direction and average the two.
    """

    uses_context = False

    def __init__(
        self,
        temperature: float = 0.1,
        negative_sampling: str = "random",
        num_negatives: int | None = None,
        symmetric: bool = False,
    ) -> None:
        super().__init__()
        check_number("temperature", temperature, low=0, low_open=True, owner="ContrastiveLoss")
        check_choice("negative_sampling", negative_sampling, NEGATIVE_SAMPLING, owner="ContrastiveLoss")
        if num_negatives is not None:
            check_int("num_negatives", num_negatives, minimum=1, optional=True, owner="ContrastiveLoss")
            if negative_sampling == "in_batch":
                raise ValueError(
                    f"ContrastiveLoss: num_negatives={num_negatives!r} has no effect with negative_sampling='in_batch' "
                    "(every other row is a negative); expected None"
                )
        self.temperature = float(temperature)
        self.negative_sampling = negative_sampling
        self.num_negatives = num_negatives
        self.symmetric = bool(symmetric)

    def _negatives(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` indices of the negatives (rows of ``k``) of each row of ``q`` (both normalized)."""
        b = q.shape[0]
        n = min(b - 1, 16 if self.num_negatives is None else self.num_negatives)
        eye = torch.eye(b, dtype=torch.bool, device=q.device)
        if self.negative_sampling == "hard":
            with torch.no_grad():
                scores = (q @ k.T).float()
        else:
            scores = torch.rand(b, b, device=q.device)
        scores = scores.masked_fill(eye, float("-inf"))
        return scores.topk(n, dim=1).indices

    def _sampled(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """InfoNCE of ``q`` against its positive and its sampled negatives in ``k``."""
        q = F.normalize(q, dim=1)
        k = F.normalize(k, dim=1)
        idx = self._negatives(q, k)  # (B, K)
        pos = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
        neg = torch.einsum("bd,bkd->bk", q, k[idx])  # (B, K)
        logits = torch.cat([pos, neg], dim=1) / self.temperature
        labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, labels)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar InfoNCE loss of ``prediction`` against ``target`` (``(B, D)`` or ``(B, T, D)``)."""
        _check_pair(prediction, target, "ContrastiveLoss")
        a = _pooled(prediction, "prediction", "ContrastiveLoss")
        b = _pooled(target, "target", "ContrastiveLoss")
        if self.negative_sampling == "in_batch":
            return info_nce(a, b, temperature=self.temperature, symmetric=self.symmetric)
        if not a.is_floating_point():
            raise TypeError(f"ContrastiveLoss: prediction must be floating point, got dtype {a.dtype}")
        loss = self._sampled(a, b)
        if self.symmetric:
            loss = 0.5 * (loss + self._sampled(b, a))
        return loss


RECONSTRUCTION_LOSSES = ("mse", "l1", "smooth_l1", "cosine")
REDUCTIONS = ("mean", "sum", "none")


class ReconstructionLoss(nn.Module):
    """Direct distance between a prediction and its target (no target normalization).

    Args:
        loss_type: ``"mse"``, ``"l1"``, ``"smooth_l1"`` (beta 1) or ``"cosine"``
            (``1 - cosine_similarity`` over the last dimension).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``. For ``"cosine"`` it acts on the per-row
            values (shape ``prediction.shape[:-1]``); otherwise on elementwise values.
    """

    uses_context = False

    def __init__(self, loss_type: str = "mse", reduction: str = "mean") -> None:
        super().__init__()
        check_choice("loss_type", loss_type, RECONSTRUCTION_LOSSES, owner="ReconstructionLoss")
        check_choice("reduction", reduction, REDUCTIONS, owner="ReconstructionLoss")
        self.loss_type = loss_type
        self.reduction = reduction

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss between ``prediction`` and ``target`` (same shape, ``(..., D)``)."""
        _check_pair(prediction, target, "ReconstructionLoss")
        if self.loss_type != "cosine":
            return jepa_loss(prediction, target, loss=self.loss_type, normalize_target=False, reduction=self.reduction)
        if prediction.dim() < 1 or not prediction.is_floating_point() or not target.is_floating_point():
            raise TypeError(
                f"ReconstructionLoss: cosine needs floating-point (..., D) tensors, got {prediction.dtype} {tuple(prediction.shape)}"
            )
        per_row = 1.0 - F.cosine_similarity(prediction, target, dim=-1)
        if self.reduction == "mean":
            return per_row.mean()
        if self.reduction == "sum":
            return per_row.sum()
        return per_row


class VICRegLoss(nn.Module):
    """VICReg (Bardes et al., 2022) between two embeddings ``z_a`` and ``z_b``.

    ``loss = sim_weight * mse(z_a, z_b) + var_weight * (var(z_a) + var(z_b)) / 2
    + cov_weight * (cov(z_a) + cov(z_b))`` with the variance hinge and covariance terms of
    :func:`~jepa.trainer.losses.variance_covariance` (gamma 1, eps 1e-4). ``(B, T, D)`` inputs are mean-pooled over ``T``.

    Args:
        sim_weight: weight of the invariance (MSE) term (>= 0).
        var_weight: weight of the variance term (>= 0).
        cov_weight: weight of the covariance term (>= 0).
    """

    uses_context = False

    def __init__(self, sim_weight: float = 25.0, var_weight: float = 25.0, cov_weight: float = 1.0) -> None:
        super().__init__()
        for name, value in (("sim_weight", sim_weight), ("var_weight", var_weight), ("cov_weight", cov_weight)):
            check_number(name, value, low=0, owner="VICRegLoss")
        self.sim_weight = float(sim_weight)
        self.var_weight = float(var_weight)
        self.cov_weight = float(cov_weight)

    def terms(self, z_a: torch.Tensor, z_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every term (``sim_loss``, ``var_loss``, ``cov_loss``) and the weighted total ``loss``."""
        _check_pair(z_a, z_b, "VICRegLoss")
        a = _pooled(z_a, "z_a", "VICRegLoss")
        b = _pooled(z_b, "z_b", "VICRegLoss")
        sim = F.mse_loss(a, b)
        var_a, cov_a = variance_covariance(a)
        var_b, cov_b = variance_covariance(b)
        var = 0.5 * (var_a + var_b)
        cov = cov_a + cov_b
        total = self.sim_weight * sim + self.var_weight * var + self.cov_weight * cov
        return {"loss": total, "sim_loss": sim, "var_loss": var, "cov_loss": cov}

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        """The weighted VICReg loss (a scalar)."""
        return self.terms(z_a, z_b)["loss"]


_LOSSES = {
    "jepa": JEPALoss,
    "ijepa": IJEPALoss,
    "contrastive": ContrastiveLoss,
    "infonce": ContrastiveLoss,
    "reconstruction": ReconstructionLoss,
    "vicreg": VICRegLoss,
}


def get_loss(name: str, **kwargs) -> nn.Module:
    """The loss module called ``name`` (case-insensitive), built with ``kwargs``.

    Names: ``"jepa"`` (:class:`JEPALoss`), ``"ijepa"`` (:class:`IJEPALoss`), ``"contrastive"`` / ``"infonce"``
    (:class:`ContrastiveLoss`), ``"reconstruction"`` (:class:`ReconstructionLoss`),
    ``"vicreg"`` (:class:`VICRegLoss`).
    """
    key = name.lower() if isinstance(name, str) else None
    if key not in _LOSSES:
        raise ValueError(f"get_loss: unknown loss name {name!r}; expected one of {', '.join(sorted(_LOSSES))}")
    return _LOSSES[key](**kwargs)


_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """One step of SplitMix64 (a bijective 64-bit mixer)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class SIGRegLoss(nn.Module):
    """SIGReg (LeJEPA, Balestriero & LeCun 2025): pushes embeddings towards an isotropic standard Gaussian.

    ``forward(z)`` with ``z`` of shape ``(N, D)`` returns :func:`jepa.ops.sigreg` of ``z`` on
    ``num_slices`` random unit directions: the Epps–Pulley statistic of each 1-D projection, averaged
    over the directions (about 1 for Gaussian samples, growing with ``N`` for collapsed or anisotropic
    ones).

    **Directions.** Every call draws fresh ``(D, num_slices)`` float32 unit columns on ``z``'s device from
    a generator seeded by ``(seed, call index)``; the call index counts the calls of this module. So
    every rank draws the same directions at the same call, and a run is reproducible. The call index
    is saved by ``state_dict()`` and restored by ``load_state_dict()``: a resumed run continues the
    same sequence of directions. (The CPU and CUDA generators differ, so the directions depend on the
    device type.) :meth:`directions` returns those of any call.

    **Distributed** (``distributed=True`` and ``torch.distributed`` initialised with more than one
    process): each rank computes the empirical characteristic function of its own rows
    (:func:`jepa.ops.sigreg_ecf`) times its row count, plus the row count; one autograd-aware
    all-reduce (:func:`jepa.trainer.collectives.all_reduce_sum_autograd`) adds them over ranks; every
    rank then evaluates the statistic of the global ECF of all ``sum_r N_r`` rows.

    * Value: on every rank, exactly the one-process value on the concatenation of all ranks' rows
      (per-rank row counts may differ).
    * Gradient, DDP's convention: the all-reduce's backward sums the gradients over ranks, so rank
      ``r`` receives ``world_size * dL/dz_r`` for its own rows ``z_r``, where ``L`` is the
      one-process statistic on the concatenation. DistributedDataParallel (and FSDP) average the
      parameter gradients over ranks, dividing by ``world_size``: the update is exactly the gradient
      of one process holding the whole batch, and adding per-rank mean losses (which that averaging
      turns into global means) keeps the total right. Without that averaging (a hand-written
      all-reduce of gradients with SUM), divide by ``world_size`` yourself.
    * Every rank must call forward and backward together (the backward is a collective too).
    * Only ``2 * num_slices * knots + 1`` numbers cross the network, whatever ``N`` and ``D``.

    With ``distributed=False``, or rows already gathered from every rank, each rank's statistic is
    that of its own rows.

    Args:
        num_slices: number of random directions ``M`` per call (>= 1).
        t_max: last knot of the characteristic function (> 0).
        knots: number of knots on ``[0, t_max]`` (>= 2).
        seed: seed of the direction sequence (an int >= 0).
        distributed: average over ranks as above when running with more than one process.
    """

    def __init__(self, num_slices: int = 1024, t_max: float = 3.0, knots: int = 17, seed: int = 0, *,
                 distributed: bool = True) -> None:
        super().__init__()
        if isinstance(num_slices, bool) or not isinstance(num_slices, int) or num_slices < 1:
            raise ValueError(f"SIGRegLoss: num_slices must be an int >= 1, got {num_slices!r}")
        if isinstance(t_max, bool) or not isinstance(t_max, (int, float)) or not (math.isfinite(t_max) and t_max > 0):
            raise ValueError(f"SIGRegLoss: t_max must be a finite number > 0, got {t_max!r}")
        if isinstance(knots, bool) or not isinstance(knots, int) or knots < 2:
            raise ValueError(f"SIGRegLoss: knots must be an int >= 2, got {knots!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MASK64:
            raise ValueError(f"SIGRegLoss: seed must be an int in [0, 2**64), got {seed!r}")
        if not isinstance(distributed, bool):
            raise TypeError(f"SIGRegLoss: distributed must be a bool, got {type(distributed).__name__}")
        self.num_slices = num_slices
        self.t_max = float(t_max)
        self.knots = knots
        self.seed = seed
        self.distributed = distributed
        self._calls = 0

    @property
    def reduces_over_ranks(self) -> bool:
        """True when the loss reduces over ranks itself (``distributed=True``): the trainer then passes
        it each rank's own rows instead of gathering them (:func:`jepa.trainer.objective.gathered_inputs`)."""
        return self.distributed

    @property
    def calls(self) -> int:
        """The number of calls so far, which is the index of the next call's directions."""
        return self._calls

    def directions(self, dim: int, device: torch.device | str = "cpu", call: int | None = None) -> torch.Tensor:
        """The ``(dim, num_slices)`` float32 unit directions of call ``call`` (default: the next call)."""
        call = self._calls if call is None else call
        if isinstance(call, bool) or not isinstance(call, int) or call < 0:
            raise ValueError(f"SIGRegLoss: call must be an int >= 0, got {call!r}")
        gen = torch.Generator(device=device)
        gen.manual_seed(_splitmix64(_splitmix64(self.seed) ^ call))
        a = torch.randn(dim, self.num_slices, generator=gen, device=device, dtype=torch.float32)
        return a / a.norm(dim=0, keepdim=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """The SIGReg statistic of the rows of ``z`` (``(N, D)``, floating point), a scalar tensor."""
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"SIGRegLoss: z must be a tensor, got {type(z).__name__}")
        if not z.is_floating_point():
            raise TypeError(f"SIGRegLoss: z must be a floating-point tensor, got dtype {z.dtype}")
        if z.dim() != 2 or z.shape[0] < 1 or z.shape[1] < 1:
            raise ValueError(
                f"SIGRegLoss: z must be (N, D) embeddings with N >= 1 and D >= 1, got shape {tuple(z.shape)}; "
                "pool or flatten token dimensions first"
            )
        a = self.directions(z.shape[1], z.device)
        self._calls += 1
        if not (self.distributed and multi_process()):
            return sigreg(z, a, self.t_max, self.knots)
        ecf = sigreg_ecf(z, a, self.t_max, self.knots)
        n_local = z.shape[0]
        count = torch.full((1,), float(n_local), dtype=ecf.dtype, device=ecf.device)
        total = all_reduce_sum_autograd(torch.cat([ecf.reshape(-1) * n_local, count]))
        n_total = total[-1]
        return sigreg_from_ecf((total[:-1] / n_total).view_as(ecf), n_total, self.t_max)

    def get_extra_state(self) -> dict:
        """The call index (saved in ``state_dict()`` so a resumed run draws the same directions)."""
        return {"calls": self._calls}

    def set_extra_state(self, state: dict) -> None:
        """Restore the call index saved by :meth:`get_extra_state`."""
        calls = state.get("calls") if isinstance(state, dict) else None
        if isinstance(calls, bool) or not isinstance(calls, int) or calls < 0:
            raise ValueError(f"SIGRegLoss: state must be a dict with an int 'calls' >= 0, got {state!r}")
        self._calls = calls

    def extra_repr(self) -> str:
        return (f"num_slices={self.num_slices}, t_max={self.t_max}, knots={self.knots}, seed={self.seed}, "
                f"distributed={self.distributed}")
