"""Config -> objects for ``task: world_model``: trajectories (collected from the embedded
environment or read from an ``.npz`` file) split by episode, the :class:`~jepa.models.WorldModel`,
its loss and the offline evaluation callback (``config.world_model``, see
:class:`jepa.config.WorldModelConfig`).

:func:`jepa.trainer.builders.trainer_kwargs` calls :func:`world_model_objects` for a world-model
config; the rest of the trainer (optimizer, schedule, checkpoints, DDP, AMP, callbacks) is shared
with every other task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jepa.config import Config
from jepa.data import TrajectoryDataset
from jepa.envs import ENVS, collect, make_env
from jepa.models import WorldModel
from jepa.models.world_model import WORLD_TARGETS
from jepa.trainer.checks import check_choice, check_int, check_number
from jepa.trainer.world_model_eval import WorldModelEvaluation
from jepa.trainer.world_model_loss import WORLD_MODEL_DISTANCES, WORLD_MODEL_REGULARIZERS, WorldModelLoss

__all__ = ["TASKS", "WorldModelData", "check_world_model", "load_trajectories", "world_env", "world_model_data",
           "world_model_from_config", "world_model_loss_from_config", "world_model_objects"]

#: What ``config.task`` may name.
TASKS = ("jepa", "world_model")


@dataclass
class WorldModelData:
    """Trajectories of a world-model run, split by episode.

    Attributes:
        train, val: window datasets of the training and held-out episodes (``val`` None without held-out episodes).
        train_arrays, val_arrays: the arrays they were built from (what the offline evaluation reads).
        source: where the trajectories came from, in words.
        env: the embedded environment they were collected in (None for a file).
    """

    train: TrajectoryDataset
    val: TrajectoryDataset | None
    train_arrays: dict[str, np.ndarray]
    val_arrays: dict[str, np.ndarray] | None
    source: str
    env: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


def check_world_model(config: Config) -> None:
    """Refuse ``config.world_model`` values that cannot run, naming the key."""
    wm = config.world_model
    check_choice("world_model.env", wm.env, tuple(ENVS))
    for name in ("episodes", "episode_steps", "action_repeat", "horizon", "frameskip", "latent_dim", "hidden_dim",
                 "encoder_layers", "predictor_layers", "eval_horizon", "eval_windows", "eval_every_n_epochs", "sigreg_slices"):
        check_int(f"world_model.{name}", getattr(wm, name), minimum=1, noun="")
    for i, c in enumerate(wm.conv_channels):
        check_int(f"world_model.conv_channels[{i}]", c, minimum=1, noun="")
    if not wm.conv_channels:
        raise ValueError("world_model.conv_channels must name at least one convolution, got []")
    check_number("world_model.val_fraction", wm.val_fraction, low=0, high=1, high_open=True, noun="")
    check_choice("world_model.target_encoder", wm.target_encoder, WORLD_TARGETS)
    check_choice("world_model.distance", wm.distance, WORLD_MODEL_DISTANCES)
    check_choice("world_model.regularizer", wm.regularizer, WORLD_MODEL_REGULARIZERS)
    check_number("world_model.ema_momentum", wm.ema_momentum, low=0, high=1, noun="")
    check_number("world_model.ema_momentum_end", wm.ema_momentum_end, low=0, high=1, noun="")
    for name in ("teacher_forcing_weight", "rollout_weight", "regularizer_weight", "cov_weight", "smoothness_weight"):
        check_number(f"world_model.{name}", getattr(wm, name), low=0, noun="")
    p = wm.planning
    for name in p.planners:
        check_choice("world_model.planning.planners[]", name, ("cem", "mppi"))
    for name in ("horizon", "iterations", "elites", "max_steps"):
        check_int(f"world_model.planning.{name}", getattr(p, name), minimum=1, noun="")
    check_int("world_model.planning.samples", p.samples, minimum=2, noun="")
    check_choice("world_model.planning.cost", p.cost, ("sum", "final"))


def world_env(config: Config) -> Any:
    """The embedded environment ``world_model.env`` built with ``world_model.env_options``."""
    wm = config.world_model
    try:
        return make_env(wm.env, **wm.env_options)
    except TypeError as exc:  # an option the environment does not take
        raise ValueError(f"world_model.env_options {wm.env_options!r} do not fit {wm.env!r}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"world_model.env_options: {exc}") from None


def load_trajectories(config: Config) -> tuple[dict[str, np.ndarray], str, Any]:
    """``(arrays, source, env)``: the ``.npz`` file of ``world_model.data`` (checked by
    :class:`~jepa.data.TrajectoryDataset`), or random episodes collected from ``world_model.env``."""
    wm = config.world_model
    if wm.data:
        path = Path(wm.data)
        data = TrajectoryDataset(path, horizon=1)  # refuses bad files, naming the array
        arrays = {"observations": data.observations.numpy(), "actions": data.actions.numpy(), "episode_lengths": data.episode_lengths.numpy()}
        with np.load(path, allow_pickle=False) as f:
            if "states" in f.files:
                arrays["states"] = np.asarray(f["states"], dtype=np.float32)
        return arrays, f"{path} ({arrays['observations'].shape[0]} episodes)", None
    env = world_env(config)
    arrays = collect(env, wm.episodes, wm.episode_steps, seed=wm.collect_seed, action_repeat=wm.action_repeat)
    source = f"{type(env).__name__} ({wm.episodes} random episodes x {wm.episode_steps} steps, actions held {wm.action_repeat} steps)"
    return arrays, source, env


def _episodes(arrays: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    e = arrays["observations"].shape[0]
    return {k: (v[index] if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == e else v) for k, v in arrays.items()}


def world_model_data(config: Config) -> WorldModelData:
    """The trajectories of ``config.world_model``, ``val_fraction`` of the episodes held out
    (a random choice seeded by ``world_model.collect_seed``; at least one episode each side)."""
    wm = config.world_model
    check_world_model(config)
    arrays, source, env = load_trajectories(config)
    e = arrays["observations"].shape[0]
    n_val = min(e - 1, max(1, math.ceil(wm.val_fraction * e))) if wm.val_fraction > 0 and e > 1 else 0
    order = np.random.default_rng(wm.collect_seed).permutation(e)
    train_arrays = _episodes(arrays, np.sort(order[n_val:]))
    val_arrays = _episodes(arrays, np.sort(order[:n_val])) if n_val else None
    train = TrajectoryDataset(train_arrays, horizon=wm.horizon, frameskip=wm.frameskip)
    if len(train) == 0:
        raise ValueError(
            f"world_model.horizon={wm.horizon} x frameskip={wm.frameskip} leaves no training window: episodes have at most "
            f"{int(train_arrays['episode_lengths'].max()) if 'episode_lengths' in train_arrays else train_arrays['observations'].shape[1]} observations"
        )
    val = TrajectoryDataset(val_arrays, horizon=wm.horizon, frameskip=wm.frameskip) if val_arrays is not None else None
    if val is not None and len(val) == 0:
        val, val_arrays = None, None
    return WorldModelData(train, val, train_arrays, val_arrays, source, env)


def world_model_from_config(config: Config, obs_shape: tuple[int, ...], action_dim: int) -> WorldModel:
    """The :class:`~jepa.models.WorldModel` of ``config.world_model`` for observations of ``obs_shape``:
    :meth:`~jepa.models.WorldModel.mlp` for vectors, :meth:`~jepa.models.WorldModel.conv` for images."""
    wm = config.world_model
    common = {"latent_dim": wm.latent_dim, "hidden_dim": wm.hidden_dim, "predictor_layers": wm.predictor_layers,
              "target_encoder": wm.target_encoder, "momentum": wm.ema_momentum, "momentum_end": wm.ema_momentum_end}
    if len(obs_shape) == 1:
        return WorldModel.mlp(int(obs_shape[0]), int(action_dim), encoder_layers=wm.encoder_layers, **common)
    if len(obs_shape) == 3:
        return WorldModel.conv(tuple(int(v) for v in obs_shape), int(action_dim), channels=tuple(wm.conv_channels), **common)
    raise NotImplementedError(
        f"jepa train --task world_model builds world models for vectors (D,) and images (C, H, W); got observations of shape {obs_shape}. "
        "Build a WorldModel with your own state encoder in Python (see the world-models guide) and train it with JEPATrainer"
    )


def world_model_loss_from_config(config: Config) -> WorldModelLoss:
    """The :class:`~jepa.trainer.world_model_loss.WorldModelLoss` of ``config.world_model``."""
    wm = config.world_model
    return WorldModelLoss(
        distance=wm.distance, teacher_forcing_weight=wm.teacher_forcing_weight, rollout_weight=wm.rollout_weight,
        regularizer=wm.regularizer, regularizer_weight=wm.regularizer_weight, cov_weight=wm.cov_weight,
        smoothness_weight=wm.smoothness_weight, sigreg_slices=wm.sigreg_slices, seed=max(0, int(config.training.seed)),
    )


def world_model_objects(config: Config, device: torch.device) -> dict[str, Any]:
    """Everything task-specific a world-model trainer needs: ``train_set``, ``val_set``, ``model``
    (on ``device``, built after ``torch.manual_seed(training.seed)``), ``loss_fn``, ``callbacks``
    (the offline evaluation when there are held-out episodes) and ``data`` (:class:`WorldModelData`)."""
    wm = config.world_model
    data = world_model_data(config)
    torch.manual_seed(config.training.seed)
    model = world_model_from_config(config, data.train.obs_shape, data.train.action_dim).to(device)
    callbacks = []
    if data.val_arrays is not None:
        longest = int(np.max(data.val_arrays.get("episode_lengths", data.val_arrays["observations"].shape[1])))
        horizon = min(wm.eval_horizon, (longest - 1) // wm.frameskip)  # rollouts as long as the held-out episodes allow
        callbacks.append(WorldModelEvaluation(
            data.val_arrays, data.train_arrays, horizon=horizon, windows=wm.eval_windows,
            frameskip=wm.frameskip, every_n_epochs=wm.eval_every_n_epochs, seed=config.training.seed,
        ))
    return {"train_set": data.train, "val_set": data.val, "model": model, "loss_fn": world_model_loss_from_config(config),
            "callbacks": callbacks, "data": data}
