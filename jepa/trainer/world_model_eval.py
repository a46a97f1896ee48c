"""Offline evaluation of a world model (no environment needed): how far open-loop rollouts drift
from what really happened, on held-out trajectories.

From a window of ``H`` recorded transitions, the model encodes the first frame and rolls the
recorded actions forward without seeing the later frames (exactly what a planner does); step ``h``
of the rollout is compared with the encoding of frame ``h``:

* in latent space: the mean squared error per step, and the same relative to the spread of the
  target latents (1.0 = no better than predicting their mean);
* in state space, when true states are known (``states`` in the trajectory file, or the
  observations themselves when they are vectors): a linear probe from latents to states, fitted on
  training frames (:class:`StateProbe`), reads each predicted latent; the error is the Euclidean
  distance to the true state, next to the probe's own error on encoded frames (its floor).

:class:`WorldModelEvaluation` runs it after validation and logs it (``val/rollout_*``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from jepa.data import TrajectoryDataset
from jepa.trainer.callbacks import BaseCallback
from jepa.trainer.checks import check_int
from jepa.trainer.metrics import log_metrics
from jepa.trainer.modes import evaluating

__all__ = ["StateProbe", "WorldModelEvaluation", "rollout_errors", "sample_windows", "state_targets"]


def state_targets(arrays: Mapping[str, Any]) -> np.ndarray | None:
    """The true states of a trajectory dict: ``arrays["states"]`` ``(E, T, S)`` when present, else the
    observations when they are vectors ``(E, T, D)``; None for images without states."""
    if "states" in arrays:
        states = np.asarray(arrays["states"], dtype=np.float32)
        obs = np.asarray(arrays["observations"])
        if states.ndim != 3 or states.shape[:2] != obs.shape[:2]:
            raise ValueError(f"array 'states' must have shape (E, T, S) with the observations' (E, T) = {obs.shape[:2]}, got {states.shape}")
        return states
    obs = np.asarray(arrays["observations"])
    return obs.astype(np.float32) if obs.ndim == 3 else None


def sample_windows(
    arrays: Mapping[str, Any], horizon: int, count: int, *, frameskip: int = 1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``count`` windows (fewer if there are fewer) of ``horizon`` transitions drawn without
    replacement with ``seed``: ``(obs (N, H+1, ...), actions (N, H, A), states (N, H+1, S) or None)``."""
    data = TrajectoryDataset(arrays, horizon=horizon, frameskip=frameskip)
    if len(data) == 0:
        raise ValueError(f"no window of {horizon} transitions (frameskip {frameskip}) fits in the held-out episodes")
    pick = np.sort(np.random.default_rng(seed).permutation(len(data))[: min(count, len(data))])
    obs, act = zip(*(data[int(i)] for i in pick))
    states = state_targets(arrays)
    kept = None
    if states is not None:
        span = horizon * frameskip
        kept = torch.stack([
            torch.from_numpy(states[ep, s : s + span + 1 : frameskip]) for ep, s in (data.index[int(i)].tolist() for i in pick)
        ])
    return torch.stack(obs), torch.stack(act), kept


class StateProbe:
    """A linear map from latents to true states, fitted by ridge regression in float64.

    Args:
        ridge: L2 penalty on the weights (relative to the mean squared latent).
    """

    def __init__(self, ridge: float = 1e-4) -> None:
        self.ridge = float(ridge)
        self.weight: torch.Tensor | None = None  # (D + 1, S), last row the bias

    def fit(self, latents: torch.Tensor, states: torch.Tensor) -> "StateProbe":
        """Fit on ``latents`` ``(N, D)`` and ``states`` ``(N, S)``; returns self."""
        z = latents.detach().reshape(latents.shape[0], -1).double().cpu()
        s = states.detach().reshape(states.shape[0], -1).double().cpu()
        x = torch.cat([z, torch.ones(z.shape[0], 1, dtype=z.dtype)], 1)
        reg = self.ridge * float(z.pow(2).mean().clamp_min(1e-12)) * z.shape[0]
        eye = torch.eye(x.shape[1], dtype=x.dtype)
        eye[-1, -1] = 0.0  # the bias is not penalised
        self.weight = torch.linalg.solve(x.T @ x + reg * eye, x.T @ s)
        return self

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        """Predicted states ``(N, S)`` (float64, CPU) of latents ``(N, ...)``."""
        if self.weight is None:
            raise RuntimeError("StateProbe: call fit() first")
        z = latents.detach().reshape(latents.shape[0], -1).double().cpu()
        return z @ self.weight[:-1] + self.weight[-1]


def _encode(model: Any, obs: torch.Tensor, use_target: bool | None, batch_size: int) -> torch.Tensor:
    return torch.cat([model.encode(obs[i : i + batch_size], use_target=use_target) for i in range(0, obs.shape[0], batch_size)])


def rollout_errors(
    model: Any,
    obs: torch.Tensor,
    actions: torch.Tensor,
    states: torch.Tensor | None = None,
    probe: StateProbe | None = None,
    *,
    batch_size: int = 1024,
) -> dict[str, Any]:
    """Open-loop rollout errors of ``model`` (:class:`~jepa.models.WorldModel`) on recorded windows.

    Args:
        obs: ``(N, H+1, *obs_shape)`` observations; actions: ``(N, H, A)``.
        states: ``(N, H+1, S)`` true states (with ``probe``: the state-space errors).
        probe: a fitted :class:`StateProbe`.

    Returns:
        ``latent_mse`` and ``latent_relative`` (lists of ``H`` floats: step 1 to ``H``), and with a
        probe ``state_error`` (``H`` floats, mean Euclidean distance of the probe's reading of the
        predicted latent to the true state) and ``state_error_floor`` (the probe on encoded frames).
        The rollout starts from the online encoder's latent and is compared with the target
        encoder's, as in training.
    """
    n, h1 = obs.shape[:2]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with evaluating(model):
        obs, actions = obs.to(device), actions.to(device)
        z0 = _encode(model, obs[:, 0], False, batch_size)
        pred = torch.cat([model.rollout(z0[i : i + batch_size], actions[i : i + batch_size]) for i in range(0, n, batch_size)])
        target = _encode(model, obs[:, 1:].reshape(n * (h1 - 1), *obs.shape[2:]), None, batch_size).reshape(pred.shape)
    pred, target = pred.double().flatten(2), target.double().flatten(2)  # (N, H, F)
    mse = (pred - target).pow(2).mean(dim=(0, 2))
    spread = target.reshape(-1, target.shape[-1]).var(dim=0, unbiased=False).mean().clamp_min(1e-12)
    out: dict[str, Any] = {"latent_mse": mse.tolist(), "latent_relative": (mse / spread).tolist()}
    if probe is not None and states is not None:
        true = states[:, 1:].double().reshape(n * (h1 - 1), -1)
        read = probe(pred.reshape(n * (h1 - 1), -1))
        out["state_error"] = (read - true).norm(dim=-1).reshape(n, h1 - 1).mean(0).tolist()
        out["state_error_floor"] = float((probe(target.reshape(n * (h1 - 1), -1)) - true).norm(dim=-1).mean())
    return out


class WorldModelEvaluation(BaseCallback):
    """Offline evaluation during training: :func:`rollout_errors` on held-out windows after every
    ``every_n_epochs``-th validation (and after the last epoch), logged as ``val/rollout_latent_mse``,
    ``val/rollout_latent_relative``, ``val/rollout_state_error`` (means over the steps) and the
    same at the last step (``..._final``); added to the epoch's metrics and to ``trainer.history``.
    Full per-step curves are kept in :attr:`records`.

    Args:
        heldout: trajectory dict of the held-out episodes (the layout of :class:`~jepa.data.TrajectoryDataset`).
        train: trajectory dict of training episodes to fit the state probe on (None: no state space).
        horizon: rollout length (may exceed the training horizon: errors compound).
        windows: held-out windows evaluated (a fixed sample).
        probe_frames: training frames the probe is fitted on.
        frameskip: as the training data's.
        every_n_epochs: evaluation period in epochs.
        seed: seed of the fixed samples.
    """

    def __init__(
        self,
        heldout: Mapping[str, Any],
        train: Mapping[str, Any] | None = None,
        *,
        horizon: int = 10,
        windows: int = 512,
        probe_frames: int = 4096,
        frameskip: int = 1,
        every_n_epochs: int = 1,
        seed: int = 0,
    ) -> None:
        self.horizon = check_int("horizon", horizon, minimum=1, owner="WorldModelEvaluation")
        check_int("windows", windows, minimum=1, owner="WorldModelEvaluation")
        check_int("probe_frames", probe_frames, minimum=2, owner="WorldModelEvaluation")
        self.every_n_epochs = check_int("every_n_epochs", every_n_epochs, minimum=1, owner="WorldModelEvaluation")
        self.obs, self.actions, self.states = sample_windows(heldout, self.horizon, windows, frameskip=frameskip, seed=seed)
        self.probe_obs = self.probe_states = None
        train_states = state_targets(train) if train is not None else None
        if train_states is not None and self.states is not None:
            obs = np.asarray(train["observations"])
            lengths = np.asarray(train.get("episode_lengths", np.full(obs.shape[0], obs.shape[1])))
            frames = np.array([(e, t) for e in range(obs.shape[0]) for t in range(int(lengths[e]))])
            pick = frames[np.random.default_rng(seed + 1).permutation(len(frames))[:probe_frames]]
            probe_obs = obs[pick[:, 0], pick[:, 1]]
            self.probe_obs = torch.from_numpy(probe_obs.astype(np.float32) / 255.0 if probe_obs.dtype == np.uint8 else probe_obs.astype(np.float32))
            self.probe_states = torch.from_numpy(train_states[pick[:, 0], pick[:, 1]])
        #: ``(global_step, epoch, results)`` of every evaluation, results as :meth:`evaluate` returns them.
        self.records: list[tuple[int, int, dict[str, Any]]] = []

    def evaluate(self, model: Any) -> dict[str, Any]:
        """The errors of ``model`` now (see :func:`rollout_errors`)."""
        probe = None
        if self.probe_obs is not None:
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            with evaluating(model):
                latents = _encode(model, self.probe_obs.to(device), None, 1024)
            probe = StateProbe().fit(latents, self.probe_states)
        return rollout_errors(model, self.obs, self.actions, self.states, probe)

    @staticmethod
    def summary(results: Mapping[str, Any]) -> dict[str, float]:
        """Scalars of one evaluation: means over the steps and the last step's values."""
        out = {}
        for key in ("latent_mse", "latent_relative", "state_error"):
            if key in results:
                out[f"rollout_{key}"] = float(np.mean(results[key]))
                out[f"rollout_{key}_final"] = float(results[key][-1])
        if "state_error_floor" in results:
            out["rollout_state_error_floor"] = float(results["state_error_floor"])
        return out

    def on_validation_end(self, trainer: Any, model: Any, metrics: dict[str, Any]) -> None:
        epoch = int(metrics.get("epoch", getattr(trainer, "current_epoch", 0)))
        last = getattr(trainer, "max_epochs", None) is not None and epoch >= trainer.max_epochs
        if epoch % self.every_n_epochs != 0 and not last:
            return
        results = self.evaluate(model)
        self.records.append((int(trainer.global_step), epoch, results))
        scalars = self.summary(results)
        if not all(math.isfinite(v) for v in scalars.values()):
            scalars = {k: (v if math.isfinite(v) else float("nan")) for k, v in scalars.items()}
        metrics.update(scalars)
        history = getattr(trainer, "history", None)
        if isinstance(history, dict):
            for key, value in scalars.items():
                history.setdefault(key, []).append(value)
        if getattr(trainer, "is_global_zero", True) and getattr(trainer, "logger", None) is not None:
            log_metrics({f"val/{k}": v for k, v in scalars.items()}, int(trainer.global_step), trainer.logger)
