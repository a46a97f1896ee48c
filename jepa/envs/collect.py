"""Collect trajectories from an environment into the ``.npz`` layout of :class:`jepa.data.TrajectoryDataset`."""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from jepa.envs.policies import action_bounds
from jepa.io import atomic_write

POLICIES = ("random",)


def _state(info: Any) -> np.ndarray | None:
    """``info["state"]`` as float32, or None when the environment does not report it."""
    if isinstance(info, dict) and info.get("state") is not None:
        return np.asarray(info["state"], dtype=np.float32)
    return None


def collect(
    env: Any,
    episodes: int,
    steps: int,
    policy: str | Callable[[np.ndarray, np.random.Generator], Any] = "random",
    seed: int = 0,
    *,
    path: str | os.PathLike | None = None,
    action_repeat: int = 1,
) -> dict[str, np.ndarray]:
    """Roll out ``episodes`` episodes of ``steps`` actions each.

    Args:
        env: ``reset(seed=...) -> (obs, info)`` and ``step(action) -> (obs, ...)`` (Gymnasium style),
            with action bounds (``action_low``/``action_high`` or a box ``action_space``).
        episodes: number of episodes ``E``.
        steps: actions per episode; every episode has ``T = steps + 1`` observations (episodes are
            not cut when the environment reports termination).
        policy: ``"random"`` (uniform in the action box) or a callable ``policy(obs, rng) -> action``.
        seed: episode ``e`` is reset with seed ``seed + e``; actions come from a generator seeded
            with ``seed`` (the same arguments give the same arrays).
        path: when given, the arrays are also written there (``np.savez``, atomically).
        action_repeat: hold each random action for this many steps (longer, straighter moves;
            only with ``policy="random"``).

    Returns:
        ``{"observations": (E, T, *obs_shape) float32, "actions": (E, T-1, A) float32,
        "episode_lengths": (E,) int64}``, and ``"states": (E, T, S) float32`` when the environment
        reports its true state as ``info["state"]`` on every reset and step (as
        :class:`~jepa.envs.TwoRooms` does): what the offline evaluation of a world model trained on
        images reads positions from.
    """
    for name, value in (("episodes", episodes), ("steps", steps), ("action_repeat", action_repeat)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"collect: {name} must be an int >= 1, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"collect: seed must be an int, got {type(seed).__name__} {seed!r}")
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise ValueError(f"collect: policy must be one of {POLICIES} or a callable, got {policy!r}")
    elif not callable(policy):
        raise TypeError(f"collect: policy must be a string or a callable, got {type(policy).__name__}")
    elif action_repeat != 1:
        raise ValueError(f"collect: action_repeat applies to policy='random' only, got action_repeat={action_repeat!r}")
    low, high = action_bounds(env)
    rng = np.random.default_rng(seed)
    observations, actions, states = [], [], []
    for e in range(int(episodes)):
        obs, info = env.reset(seed=int(seed) + e)
        ep_obs, ep_act, ep_states = [np.asarray(obs, dtype=np.float32)], [], [_state(info)]
        action = None
        for t in range(int(steps)):
            if isinstance(policy, str):
                if t % action_repeat == 0:
                    action = rng.uniform(low, high).astype(np.float32)
            else:
                action = np.asarray(policy(ep_obs[-1], rng), dtype=np.float32).reshape(low.shape)
            result = env.step(action)
            obs, info = result[0], (result[-1] if len(result) > 1 else None)
            ep_act.append(action)
            ep_obs.append(np.asarray(obs, dtype=np.float32))
            ep_states.append(_state(info))
        observations.append(np.stack(ep_obs))
        actions.append(np.stack(ep_act))
        states.append(None if any(s is None for s in ep_states) else np.stack(ep_states))
    out = {
        "observations": np.stack(observations),
        "actions": np.stack(actions),
        "episode_lengths": np.full(int(episodes), int(steps) + 1, dtype=np.int64),
    }
    if all(s is not None for s in states):
        out["states"] = np.stack(states)
    if path is not None:
        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.savez must not append ".npz" to the temporary name
                np.savez(fh, **out)

        atomic_write(path, write)
    return out
