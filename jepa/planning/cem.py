"""Cross-entropy method planner."""

from __future__ import annotations

from typing import Any

import torch

from jepa.planning._base import LatentPlanner, _count, _positive


class CEM(LatentPlanner):
    """Cross-entropy method over action sequences in a world model's latent space.

    Each iteration samples ``samples`` sequences from a Gaussian per step and action dimension
    (clipped to the action box; the current mean is always one of them), rolls all of them out in
    one batched forward, and refits the Gaussian to the ``elites`` cheapest. :meth:`~jepa.planning.LatentPlanner.plan` returns
    the final mean. See :class:`~jepa.planning.LatentPlanner` for the model protocol and the cost.

    Args:
        model: ``encode`` / ``rollout`` model (e.g. :class:`jepa.models.WorldModel`).
        action_low, action_high: action bounds, one value per action dimension.
        horizon: planned steps ``H``.
        samples: candidate sequences per iteration.
        iterations: refits per :meth:`~jepa.planning.LatentPlanner.plan` call.
        elites: candidates the Gaussian is refitted to.
        init_std: initial standard deviation, as a fraction of the half-width of the action box.
        min_std: floor of the standard deviation (same unit), so the search never freezes early.
        momentum: weight of the previous mean/std in each refit (0 = plain CEM).
        cost, warm_start, seed, device: see :class:`~jepa.planning.LatentPlanner`.
    """

    def __init__(
        self,
        model: Any,
        action_low: Any,
        action_high: Any,
        horizon: int,
        samples: int = 300,
        iterations: int = 30,
        elites: int = 30,
        *,
        init_std: float = 1.0,
        min_std: float = 0.02,
        momentum: float = 0.0,
        cost: str = "sum",
        warm_start: bool = True,
        seed: int | None = 0,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__(model, action_low, action_high, horizon, samples, iterations, cost=cost, warm_start=warm_start, seed=seed, device=device)
        self.elites = _count("CEM", "elites", elites)
        if self.elites > self.samples:
            raise ValueError(f"CEM: elites must be <= samples={self.samples}, got {elites!r}")
        self.init_std = _positive("CEM", "init_std", init_std)
        if not 0.0 <= float(min_std) <= self.init_std:
            raise ValueError(f"CEM: min_std must be in [0, init_std={self.init_std}], got {min_std!r}")
        self.min_std = float(min_std)
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"CEM: momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)

    def _optimize(self, z0: torch.Tensor, z_goal: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        half = (self.high - self.low) / 2
        std = (self.init_std * half).expand_as(mean).clone()
        floor = self.min_std * half
        for _ in range(self.iterations):
            eps = self._noise((self.samples - 1, *mean.shape))
            cand = torch.cat([mean.unsqueeze(0), mean + std * eps])
            cand = torch.maximum(torch.minimum(cand, self.high), self.low)
            costs = self.candidate_costs(z0, z_goal, cand)
            elite = cand[torch.topk(costs, self.elites, largest=False).indices]
            new_mean = elite.mean(0)
            new_std = elite.std(0, unbiased=False) if self.elites > 1 else std
            mean = self.momentum * mean + (1 - self.momentum) * new_mean
            std = torch.maximum(self.momentum * std + (1 - self.momentum) * new_std, floor)
        return mean
