"""Model-predictive path integral planner."""

from __future__ import annotations

from typing import Any

import torch

from jepa.planning._base import LatentPlanner, _positive


class MPPI(LatentPlanner):
    """Model-predictive path integral control over action sequences in a world model's latent space.

    Each iteration perturbs the nominal sequence with Gaussian noise (``samples`` candidates,
    clipped to the action box; the nominal itself is one of them), rolls all of them out in one
    batched forward, and moves the nominal to the average of the candidates weighted by
    ``softmax(-cost / (temperature * std(cost)))``. Costs are divided by their spread over the
    candidates, so ``temperature`` does not depend on the scale of the latent space. See
    :class:`~jepa.planning.LatentPlanner` for the model protocol and the cost.

    Args:
        model: ``encode`` / ``rollout`` model (e.g. :class:`jepa.models.WorldModel`).
        action_low, action_high: action bounds, one value per action dimension.
        horizon: planned steps ``H``.
        samples: candidate sequences per iteration.
        iterations: weighted updates per :meth:`~jepa.planning.LatentPlanner.plan` call.
        temperature: softmax temperature in units of the costs' standard deviation (smaller = greedier).
        noise_std: perturbation standard deviation, as a fraction of the half-width of the action box.
        noise_decay: the noise is multiplied by this after every iteration (1 = constant).
        cost, warm_start, seed, device: see :class:`~jepa.planning.LatentPlanner`.
    """

    def __init__(
        self,
        model: Any,
        action_low: Any,
        action_high: Any,
        horizon: int,
        samples: int = 300,
        iterations: int = 10,
        *,
        temperature: float = 0.1,
        noise_std: float = 0.5,
        noise_decay: float = 0.9,
        cost: str = "sum",
        warm_start: bool = True,
        seed: int | None = 0,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__(model, action_low, action_high, horizon, samples, iterations, cost=cost, warm_start=warm_start, seed=seed, device=device)
        self.temperature = _positive("MPPI", "temperature", temperature)
        self.noise_std = _positive("MPPI", "noise_std", noise_std)
        if not 0.0 < float(noise_decay) <= 1.0:
            raise ValueError(f"MPPI: noise_decay must be in (0, 1], got {noise_decay!r}")
        self.noise_decay = float(noise_decay)

    def _optimize(self, z0: torch.Tensor, z_goal: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        std = self.noise_std * (self.high - self.low) / 2
        for _ in range(self.iterations):
            eps = self._noise((self.samples - 1, *mean.shape))
            cand = torch.cat([mean.unsqueeze(0), mean + std * eps])
            cand = torch.maximum(torch.minimum(cand, self.high), self.low)
            costs = self.candidate_costs(z0, z_goal, cand)
            spread = costs.std().clamp_min(1e-12)
            weights = torch.softmax(-(costs - costs.min()) / (self.temperature * spread), dim=0)
            mean = (weights[:, None, None] * cand).sum(0)
            std = std * self.noise_decay
        return mean
