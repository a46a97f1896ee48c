"""The world-model objective: teacher-forced one-step prediction + autoregressive rollout
(V-JEPA 2-AC), plus an optional anti-collapse regularizer on the online latents (LeWorldModel) and
an optional temporal-smoothness term (PLDM)."""

from __future__ import annotations

from typing import Callable

import torch

from jepa.ops import jepa_loss

WORLD_MODEL_DISTANCES = ("mse", "l1", "smooth_l1")


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
