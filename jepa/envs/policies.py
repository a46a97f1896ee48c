"""Baseline controllers: a random policy and straight-line-to-goal.

A controller is a callable ``controller(obs, goal_obs) -> action`` with an optional ``reset()``
called at the start of every episode; :func:`jepa.planning.evaluate` runs any of them (and the MPC
planners) over the same start/goal pairs.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def action_bounds(env: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` float32 action bounds of ``env``: ``env.action_low``/``action_high``, or a
    Gymnasium ``env.action_space`` box."""
    if hasattr(env, "action_low") and hasattr(env, "action_high"):
        low, high = env.action_low, env.action_high
    elif hasattr(env, "action_space") and hasattr(env.action_space, "low"):
        low, high = env.action_space.low, env.action_space.high
    else:
        raise TypeError(
            f"{type(env).__name__} has no action bounds: expected action_low/action_high or a box action_space"
        )
    low, high = np.asarray(low, dtype=np.float32).reshape(-1), np.asarray(high, dtype=np.float32).reshape(-1)
    if low.shape != high.shape or not np.all(np.isfinite(low)) or not np.all(np.isfinite(high)) or np.any(low >= high):
        raise ValueError(f"{type(env).__name__}: action bounds must be finite with low < high, got {low} and {high}")
    return low, high


class RandomPolicy:
    """Uniform random actions in ``[action_low, action_high]`` (ignores observations).

    Args:
        action_low, action_high: bounds, one value per action dimension.
        seed: seed of the generator; :meth:`reset` does not reseed, so episodes differ.
    """

    def __init__(self, action_low: Any, action_high: Any, seed: int | None = None) -> None:
        self.low = np.asarray(action_low, dtype=np.float32).reshape(-1)
        self.high = np.asarray(action_high, dtype=np.float32).reshape(-1)
        if self.low.shape != self.high.shape or np.any(self.low >= self.high):
            raise ValueError(f"RandomPolicy: need action_low < action_high elementwise, got {self.low} and {self.high}")
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Nothing to forget between episodes."""

    def __call__(self, obs: Any = None, goal_obs: Any = None) -> np.ndarray:
        return self.rng.uniform(self.low, self.high).astype(np.float32)


class StraightLinePolicy:
    """Moves straight toward the goal at full speed, ignoring the wall (a privileged baseline: it
    reads the true position and goal from the environment, not from the observations).

    Args:
        env: an environment with ``position``, ``goal`` and ``max_step`` (e.g. :class:`~jepa.envs.TwoRooms`).
    """

    def __init__(self, env: Any) -> None:
        for name in ("position", "goal", "max_step"):
            if not hasattr(env, name):
                raise TypeError(f"StraightLinePolicy: env must have a {name!r} attribute, {type(env).__name__} has none")
        self.env = env

    def reset(self) -> None:
        """Nothing to forget between episodes."""

    def __call__(self, obs: Any = None, goal_obs: Any = None) -> np.ndarray:
        delta = np.asarray(self.env.goal, dtype=np.float64) - np.asarray(self.env.position, dtype=np.float64)
        # Largest step along the line that stays in the action box and does not overshoot the goal.
        scale = max(float(self.env.max_step), float(np.abs(delta).max()))
        return (delta / scale).astype(np.float32)
