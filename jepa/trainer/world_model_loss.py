"""The world-model objective: teacher-forced one-step prediction + autoregressive rollout
(V-JEPA 2-AC), plus an optional anti-collapse regularizer on the online latents (LeWorldModel) and
an optional temporal-smoothness term (PLDM).

:func:`world_model_loss` computes the terms of a :meth:`~jepa.models.WorldModel.forward_trajectory`
dict; :class:`WorldModelLoss` is the same objective as a trainer loss, bound to the model's outputs
by name (``teacher_forcing``, ``rollout``, ``target``, ``context``; see :mod:`jepa.trainer.objective`).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from jepa.ops import jepa_loss
from jepa.trainer.checks import check_choice, check_int, check_number
from jepa.trainer.losses import SIGRegLoss, variance_covariance

__all__ = ["WORLD_MODEL_DISTANCES", "WORLD_MODEL_REGULARIZERS", "WorldModelLoss", "world_model_loss"]

WORLD_MODEL_DISTANCES = ("mse", "l1", "smooth_l1")
#: Regularizers :class:`WorldModelLoss` builds by name.
WORLD_MODEL_REGULARIZERS = ("vc", "sigreg", "none")


def world_model_loss(
    outputs: dict[str, torch.Tensor],
    *,
    distance: str = "mse",
    teacher_forcing_weight: float = 1.0,
    rollout_weight: float = 1.0,
    regularizer: Callable[[torch.Tensor], torch.Tensor] | None = None,
    regularizer_weight: float = 1.0,
    smoothness_weight: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Loss terms of :meth:`jepa.models.WorldModel.forward_trajectory` outputs.

    ``teacher_forcing = d(outputs["teacher_forcing"], outputs["target"])`` and
    ``rollout = d(outputs["rollout"], outputs["target"])``, each the mean over batch, steps and
    features of the elementwise distance ``d`` (``"mse"``, ``"l1"`` as in V-JEPA 2-AC, or
    ``"smooth_l1"``). ``regularizer`` (e.g. SIGReg or a variance-covariance penalty) receives the
    online latents of every frame flattened to ``(B * (H+1), features)`` and returns a scalar.
    ``smoothness`` is the squared Euclidean distance between the online latents of consecutive
    frames, averaged over batch and steps (PLDM's temporal similarity): with a variance term it
    keeps one step small against the spread of all states, so latent distance tracks how many steps
    apart two states are, the quantity a planner's latent cost stands for.

    Returns:
        ``{"loss", "teacher_forcing", "rollout"}`` plus ``"regularizer"`` and ``"smoothness"`` when
        used; ``loss = teacher_forcing_weight * teacher_forcing + rollout_weight * rollout
        + regularizer_weight * regularizer + smoothness_weight * smoothness``.
    """
    if distance not in WORLD_MODEL_DISTANCES:
        raise ValueError(f"world_model_loss: distance must be one of {WORLD_MODEL_DISTANCES}, got {distance!r}")
    missing = [k for k in ("teacher_forcing", "rollout", "target", "context") if k not in outputs]
    if missing:
        raise ValueError(f"world_model_loss: outputs lack {missing}; pass WorldModel.forward_trajectory(...)'s dict")
    weights = (
        ("teacher_forcing_weight", teacher_forcing_weight),
        ("rollout_weight", rollout_weight),
        ("regularizer_weight", regularizer_weight),
        ("smoothness_weight", smoothness_weight),
    )
    for name, w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
            raise ValueError(f"world_model_loss: {name} must be a number >= 0, got {w!r}")
    target = outputs["target"]
    terms = {}
    for key in ("teacher_forcing", "rollout"):
        pred = outputs[key]
        if pred.shape != target.shape:
            raise ValueError(f"world_model_loss: {key} has shape {tuple(pred.shape)} but target has {tuple(target.shape)}")
        terms[key] = jepa_loss(pred, target, loss=distance, normalize_target=False)
    loss = teacher_forcing_weight * terms["teacher_forcing"] + rollout_weight * terms["rollout"]
    if regularizer is not None:
        context = outputs["context"]
        terms["regularizer"] = regularizer(context.reshape(context.shape[0] * context.shape[1], -1))
        loss = loss + regularizer_weight * terms["regularizer"]
    if smoothness_weight:
        context = outputs["context"].flatten(2)
        terms["smoothness"] = (context[:, 1:] - context[:, :-1]).pow(2).sum(-1).mean()
        loss = loss + smoothness_weight * terms["smoothness"]
    return {"loss": loss, **terms}


class VarianceCovariance(nn.Module):
    """VICReg's anti-collapse terms of ``(N, D)`` latents: ``variance + cov_weight * covariance``
    (:func:`~jepa.trainer.losses.variance_covariance`: hinge on each dimension's std at ``gamma``,
    squared off-diagonal covariances)."""

    def __init__(self, cov_weight: float = 0.04, gamma: float = 1.0) -> None:
        super().__init__()
        self.cov_weight = check_number("cov_weight", cov_weight, low=0, owner="VarianceCovariance")
        self.gamma = check_number("gamma", gamma, low=0, low_open=True, owner="VarianceCovariance")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        var, cov = variance_covariance(z, gamma=self.gamma)
        return var + self.cov_weight * cov

    def extra_repr(self) -> str:
        return f"cov_weight={self.cov_weight}, gamma={self.gamma}"


class WorldModelLoss(nn.Module):
    """The world-model objective as a trainer loss: :func:`world_model_loss` of the outputs of
    :meth:`jepa.models.WorldModel.forward_batch` (``teacher_forcing``, ``rollout``, ``target``,
    ``context``, taken by name).

    Args:
        distance: ``"mse"``, ``"l1"`` or ``"smooth_l1"`` between predicted and target latents.
        teacher_forcing_weight, rollout_weight: weights of the one-step and the autoregressive term.
        regularizer: anti-collapse term on the online latents of every frame: ``"vc"``
            (:class:`VarianceCovariance`), ``"sigreg"`` (:class:`~jepa.trainer.losses.SIGRegLoss`,
            LeWorldModel's choice), ``"none"``, or any module/callable ``(N, D) -> scalar``.
        regularizer_weight: its weight.
        cov_weight: covariance weight inside ``"vc"``.
        smoothness_weight: weight of the squared latent distance between consecutive frames.
        sigreg_slices, seed: directions per call and seed of ``"sigreg"`` (its time grows linearly with
            the directions; a latent of a few dimensions needs few).

    Distributed runs need no care here: the trainer gathers these outputs from every rank before
    calling the loss, so the regularizer sees the global batch (SIGReg is built with
    ``distributed=False`` for that reason).

    ``terms(...)`` returns ``{"loss", "teacher_forcing", "rollout"[, "regularizer"][, "smoothness"]}``
    (all logged by the trainer); ``forward(...)`` returns ``terms(...)["loss"]``.
    """

    def __init__(
        self,
        distance: str = "mse",
        teacher_forcing_weight: float = 1.0,
        rollout_weight: float = 1.0,
        regularizer: str | Callable[[torch.Tensor], torch.Tensor] | None = "vc",
        regularizer_weight: float = 1.0,
        cov_weight: float = 0.04,
        smoothness_weight: float = 0.0,
        *,
        sigreg_slices: int = 32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.distance = check_choice("distance", distance, WORLD_MODEL_DISTANCES, owner="WorldModelLoss")
        for name, value in (
            ("teacher_forcing_weight", teacher_forcing_weight),
            ("rollout_weight", rollout_weight),
            ("regularizer_weight", regularizer_weight),
            ("smoothness_weight", smoothness_weight),
        ):
            check_number(name, value, low=0, owner="WorldModelLoss")
        self.teacher_forcing_weight, self.rollout_weight = float(teacher_forcing_weight), float(rollout_weight)
        self.regularizer_weight, self.smoothness_weight = float(regularizer_weight), float(smoothness_weight)
        if regularizer is None or isinstance(regularizer, str):
            name = "none" if regularizer is None else check_choice("regularizer", regularizer, WORLD_MODEL_REGULARIZERS, owner="WorldModelLoss")
            self.regularizer = name
            if name == "vc":
                self.regularizer_fn: Callable[[torch.Tensor], torch.Tensor] | None = VarianceCovariance(cov_weight)
            elif name == "sigreg":
                check_int("sigreg_slices", sigreg_slices, minimum=1, owner="WorldModelLoss")
                self.regularizer_fn = SIGRegLoss(num_slices=sigreg_slices, seed=seed, distributed=False)
            else:
                self.regularizer_fn = None
        elif callable(regularizer):
            self.regularizer, self.regularizer_fn = "custom", regularizer
        else:
            raise TypeError(f"WorldModelLoss: regularizer must be one of {WORLD_MODEL_REGULARIZERS}, None or a callable, got {type(regularizer).__name__}")

    def terms(self, teacher_forcing: torch.Tensor, rollout: torch.Tensor, target: torch.Tensor, context: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every term of the objective (see :func:`world_model_loss`)."""
        outputs = {"teacher_forcing": teacher_forcing, "rollout": rollout, "target": target, "context": context}
        use_reg = self.regularizer_fn is not None and self.regularizer_weight > 0
        return world_model_loss(
            outputs,
            distance=self.distance,
            teacher_forcing_weight=self.teacher_forcing_weight,
            rollout_weight=self.rollout_weight,
            regularizer=self.regularizer_fn if use_reg else None,
            regularizer_weight=self.regularizer_weight,
            smoothness_weight=self.smoothness_weight,
        )

    def forward(self, teacher_forcing: torch.Tensor, rollout: torch.Tensor, target: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The minimised loss (``terms(...)["loss"]``)."""
        return self.terms(teacher_forcing, rollout, target, context)["loss"]

    def extra_repr(self) -> str:
        return (
            f"distance={self.distance!r}, teacher_forcing_weight={self.teacher_forcing_weight}, rollout_weight={self.rollout_weight}, "
            f"regularizer={self.regularizer!r}, regularizer_weight={self.regularizer_weight}, smoothness_weight={self.smoothness_weight}"
        )
