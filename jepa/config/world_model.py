"""The ``world_model:`` block of a config: trajectories, the WorldModel, its loss, offline evaluation
and planning (read when ``task: world_model``; the ``model:``, ``loss:`` and ``data:`` blocks are
for the JEPA of ``task: jepa`` and are ignored then; ``training:`` and ``logging:`` apply to both)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PlanningConfig:
    """``world_model.planning``: MPC in the embedded environment after training, over its fixed
    start/goal pairs (``jepa.envs.EVAL_PAIRS``), for each planner in ``planners`` (``cem``, ``mppi``)
    and the baselines (random actions, straight line to the goal). ``enabled: false`` skips it."""

    enabled: bool = True
    planners: list[str] = field(default_factory=lambda: ["cem", "mppi"])
    horizon: int = 10
    samples: int = 300
    iterations: int = 10
    elites: int = 30  # CEM only
    cost: str = "sum"  # "sum" (latent distance over every planned step) | "final"
    max_steps: int = 60
    baselines: bool = True
    seed: int = 0


@dataclass
class WorldModelConfig:
    """``world_model``: what ``jepa train --task world_model`` trains and how it is judged.

    Data: ``data`` names an ``.npz`` file of trajectories (the layout of
    :class:`jepa.data.TrajectoryDataset`); without one, ``episodes`` random episodes of
    ``episode_steps`` actions (each held ``action_repeat`` steps) are collected from the embedded
    environment ``env``, built with ``env_options`` (``TwoRooms``: e.g. ``observation: image``,
    ``image_size: 32`` for rendered observations). ``val_fraction`` of the episodes are held out: the validation loss, the
    offline evaluation and nothing else see them.

    Model: :meth:`jepa.models.WorldModel.mlp` (``latent_dim``, ``hidden_dim``, layers) for vector
    observations, :meth:`jepa.models.WorldModel.conv` (convolutions of ``conv_channels``, then the
    same latent, hidden width and predictor) for images ``(C, H, W)``; ``target_encoder`` ``ema`` (EMA target, ``ema_momentum``), ``shared``
    (stop-gradient) or ``online`` (no EMA, no stop-gradient: LeWorldModel, pair it with a regularizer).

    Loss (:class:`jepa.trainer.world_model_loss.WorldModelLoss`): teacher-forced + rollout over
    ``horizon`` steps, ``regularizer`` ``vc`` (variance + ``cov_weight`` x covariance), ``sigreg``
    (SIGReg on ``sigreg_slices`` directions) or ``none``, and ``smoothness_weight`` x the squared
    latent step.

    Offline evaluation: every ``eval_every_n_epochs`` validations, open-loop rollouts of
    ``eval_horizon`` steps from ``eval_windows`` held-out windows (error in latent space, and in
    state space through a linear probe fitted on the training episodes).
    """

    data: str | None = None
    env: str = "two_rooms"
    env_options: dict[str, Any] = field(default_factory=dict)
    episodes: int = 1000
    episode_steps: int = 50
    action_repeat: int = 3
    collect_seed: int = 1000
    val_fraction: float = 0.1
    horizon: int = 4
    frameskip: int = 1
    latent_dim: int = 8
    hidden_dim: int = 128
    encoder_layers: int = 3
    predictor_layers: int = 3
    conv_channels: list[int] = field(default_factory=lambda: [16, 32])
    target_encoder: str = "ema"  # "ema" | "shared" | "online"
    ema_momentum: float = 0.99
    ema_momentum_end: float = 1.0
    distance: str = "mse"  # "mse" | "l1" | "smooth_l1"
    teacher_forcing_weight: float = 1.0
    rollout_weight: float = 1.0
    regularizer: str = "vc"  # "vc" | "sigreg" | "none"
    regularizer_weight: float = 1.0
    cov_weight: float = 0.04
    sigreg_slices: int = 32  # random directions per SIGReg call (its CPU time grows linearly; a small latent needs few)
    smoothness_weight: float = 1.0
    eval_horizon: int = 10
    eval_windows: int = 512
    eval_every_n_epochs: int = 1
    planning: PlanningConfig = field(default_factory=PlanningConfig)
