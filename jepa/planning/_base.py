"""What CEM and MPPI share: the model protocol, the batched cost of candidate action sequences,
action bounds on the model's device, warm starts and the per-call timing."""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
from torch import nn

COSTS = ("sum", "final")


def _count(owner: str, name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _positive(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def model_device(model: Any) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a model without tensors)."""
    if isinstance(model, nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return torch.device("cpu")


class LatentPlanner(ABC):
    """Base class of the sampling planners: minimises the latent distance to a goal over action sequences.

    ``model`` needs ``encode(obs) -> z`` (``obs``: ``(N, *obs_shape)``, ``z``: ``(N, *latent_shape)``)
    and ``rollout(z0, actions) -> (N, H, *latent_shape)`` (``actions``: ``(N, H, A)``): the predicted
    latents after each of the ``H`` actions, e.g. :class:`jepa.models.WorldModel`.

    Cost of a candidate: the Euclidean distance between each predicted latent and the goal's
    latent, summed over every planned step (``cost="sum"``, the default) or taken at the last step
    only (``cost="final"``). A final-step cost leaves the first actions nearly unconstrained, and
    MPC, which executes only the first one, then wanders.
    """

    def __init__(
        self,
        model: Any,
        action_low: Any,
        action_high: Any,
        horizon: int,
        samples: int,
        iterations: int,
        *,
        cost: str = "sum",
        warm_start: bool = True,
        seed: int | None = 0,
        device: str | torch.device | None = None,
    ) -> None:
        owner = type(self).__name__
        for attr in ("encode", "rollout"):
            if not callable(getattr(model, attr, None)):
                raise TypeError(f"{owner}: model must have an {attr}() method, {type(model).__name__} has none")
        self.model = model
        self.horizon = _count(owner, "horizon", horizon)
        self.samples = _count(owner, "samples", samples, 2)
        self.iterations = _count(owner, "iterations", iterations)
        if cost not in COSTS:
            raise ValueError(f"{owner}: cost must be one of {COSTS}, got {cost!r}")
        self.cost = cost
        self.warm_start = bool(warm_start)
        self.device = torch.device(device) if device is not None else model_device(model)
        low = torch.as_tensor(np.asarray(action_low, dtype=np.float32)).reshape(-1)
        high = torch.as_tensor(np.asarray(action_high, dtype=np.float32)).reshape(-1)
        if low.shape != high.shape or not torch.isfinite(low).all() or not torch.isfinite(high).all() or (low >= high).any():
            raise ValueError(f"{owner}: action_low and action_high must be finite, of one shape, with low < high; got {low.tolist()} and {high.tolist()}")
        self.action_dim = int(low.numel())
        self.low, self.high = low.to(self.device), high.to(self.device)
        self.generator = torch.Generator(device=self.device)
        if seed is not None:
            self.generator.manual_seed(int(seed))
        self._previous: torch.Tensor | None = None
        #: Seconds taken by each :meth:`~LatentPlanner.plan` call since the last :meth:`~LatentPlanner.reset`.
        self.plan_seconds: list[float] = []

    def reset(self) -> None:
        """Forget the warm start and the timings (call at the start of an episode)."""
        self._previous = None
        self.plan_seconds = []

    # ------------------------------------------------------------------ cost
    def _as_batch(self, obs: Any, name: str) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(obs) if not isinstance(obs, torch.Tensor) else obs)
        if not torch.is_floating_point(x):
            x = x.float()
        if not torch.isfinite(x).all():
            raise ValueError(f"{type(self).__name__}.plan: {name} contains NaN or inf")
        return x.to(self.device, torch.float32).unsqueeze(0)

    def candidate_costs(self, z0: torch.Tensor, z_goal: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``(N,)`` costs of ``actions`` ``(N, H, A)`` from latent ``z0`` ``(1, ...)``: one batched rollout."""
        n = actions.shape[0]
        z = self.model.rollout(z0.expand(n, *z0.shape[1:]), actions)
        if z.shape[:2] != (n, actions.shape[1]):
            raise ValueError(
                f"{type(self).__name__}: model.rollout returned shape {tuple(z.shape)}, expected ({n}, {actions.shape[1]}, ...)"
            )
        diff = (z - z_goal.unsqueeze(1)).flatten(2)
        dist = diff.float().pow(2).sum(-1).sqrt()  # (N, H)
        return dist.sum(1) if self.cost == "sum" else dist[:, -1]

    def _initial_mean(self) -> torch.Tensor:
        zero = ((self.low + self.high) / 2).expand(self.horizon, self.action_dim).clone()
        if self.warm_start and self._previous is not None:
            # Receding horizon: the rest of the last plan, then the middle of the action box.
            zero[:-1] = self._previous[1:]
        return zero

    # ------------------------------------------------------------------ plan
    def plan(self, obs: Any, goal_obs: Any) -> torch.Tensor:
        """Best action sequence ``(horizon, A)`` (CPU float32) from observation ``obs`` toward ``goal_obs``.

        Both observations are single ones (no batch axis), numpy arrays or tensors.
        """
        t0 = time.perf_counter()
        model = self.model
        was_training = isinstance(model, nn.Module) and model.training
        if was_training:
            model.eval()  # candidates must not be normalised with each other's batch statistics
        try:
            with torch.inference_mode():
                x = torch.cat([self._as_batch(obs, "obs"), self._as_batch(goal_obs, "goal_obs")])
                z = model.encode(x)
                z0, z_goal = z[:1], z[1:]
                best = self._optimize(z0, z_goal, self._initial_mean())
        finally:
            if was_training:
                model.train()
        self._previous = best
        out = best.detach().to("cpu", torch.float32).clone()
        self.plan_seconds.append(time.perf_counter() - t0)
        return out

    @abstractmethod
    def _optimize(self, z0: torch.Tensor, z_goal: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """The planner's search from the initial mean ``(H, A)``; returns the chosen sequence."""

    def _noise(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, device=self.device)
