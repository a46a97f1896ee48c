"""Model-predictive control: replan every step, execute the first action."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from jepa.planning._base import _count


@dataclass
class MPCResult:
    """One closed-loop episode.

    Attributes:
        observations: ``(T + 1, *obs_shape)``: the start observation and one after every step.
        actions: ``(T, A)`` executed actions.
        reached: whether the environment reported success (``info["is_success"]`` or termination).
        steps: ``T``, the number of executed actions.
        plan_seconds: seconds taken to choose each action (planning time per MPC step).
        info: the ``info`` dict of the last environment step (None when no step was taken).
    """

    observations: np.ndarray
    actions: np.ndarray
    reached: bool
    steps: int
    plan_seconds: list[float] = field(default_factory=list)
    info: dict[str, Any] | None = None

    @property
    def ms_per_step(self) -> float:
        """Mean planning time per MPC step in milliseconds (0 when no step was taken)."""
        return 1e3 * float(np.mean(self.plan_seconds)) if self.plan_seconds else 0.0


def _step(env: Any, action: np.ndarray) -> tuple[Any, bool, bool, Any]:
    """Step a Gymnasium (5 values) or classic gym (4 values) environment; returns
    ``(obs, success, episode_over, info)``."""
    out = env.step(action)
    truncated = False
    if len(out) == 5:
        obs, _, terminated, truncated, info = out
    elif len(out) == 4:
        obs, _, terminated, info = out
    else:
        raise ValueError(f"env.step must return 4 or 5 values, got {len(out)}")
    success = info.get("is_success") if isinstance(info, dict) else None
    success = bool(terminated if success is None else success)
    return obs, success, bool(success or terminated or truncated), info


def run_controller(
    env: Any,
    controller: Callable[[Any, Any], Any],
    goal: Any,
    max_steps: int,
    *,
    obs: Any = None,
) -> MPCResult:
    """Run ``controller(obs, goal) -> action`` (a policy, or an MPC planner wrapped by :func:`~jepa.planning.mpc`)
    in ``env`` from its current state until success or ``max_steps``."""
    max_steps = _count("mpc", "max_steps", max_steps)
    if obs is None:
        if not callable(getattr(env, "observe", None)):
            raise TypeError("mpc: pass obs= (the observation after env.reset) for an environment without observe()")
        obs = env.observe()
    if callable(getattr(controller, "reset", None)):
        controller.reset()
    observations, actions, seconds = [np.asarray(obs, dtype=np.float32)], [], []
    reached, info = False, None
    for _ in range(max_steps):
        t0 = time.perf_counter()
        action = np.asarray(controller(obs, goal), dtype=np.float32)
        seconds.append(time.perf_counter() - t0)
        obs, reached, over, info = _step(env, action)
        observations.append(np.asarray(obs, dtype=np.float32))
        actions.append(action)
        if over:
            break
    act = np.stack(actions) if actions else np.zeros((0, 0), dtype=np.float32)
    return MPCResult(np.stack(observations), act, reached, len(actions), seconds, info)


class _FirstAction:
    """Controller that replans with ``planner`` and returns the first planned action."""

    def __init__(self, planner: Any) -> None:
        self.planner = planner

    def reset(self) -> None:
        self.planner.reset()

    def __call__(self, obs: Any, goal: Any) -> np.ndarray:
        return np.asarray(self.planner.plan(obs, goal)[0])


def mpc(env: Any, planner: Any, goal: Any, max_steps: int, *, obs: Any = None) -> MPCResult:
    """Closed-loop model-predictive control: plan from the current observation, execute the first
    action, observe, replan, until the environment reports success, ends the episode
    (terminated/truncated) or ``max_steps`` actions were taken.

    Args:
        env: an environment already reset to the start state; ``step(action)`` returns Gymnasium's
            ``(obs, reward, terminated, truncated, info)`` (or gym's 4 values); success is
            ``info["is_success"]`` when present, else ``terminated``.
        planner: :class:`~jepa.planning.CEM`, :class:`~jepa.planning.MPPI` or anything with
            ``plan(obs, goal_obs) -> (H, A)`` and ``reset()``.
        goal: the goal observation.
        max_steps: most actions to execute.
        obs: the current observation (default: ``env.observe()``).

    Returns:
        :class:`~jepa.planning.MPCResult` (trajectory, success, planning time per step).
    """
    if not callable(getattr(planner, "plan", None)):
        raise TypeError(f"mpc: planner must have a plan(obs, goal_obs) method, {type(planner).__name__} has none")
    return run_controller(env, _FirstAction(planner), goal, max_steps, obs=obs)


def evaluate(
    env: Any,
    controller: Any,
    pairs: Sequence[Any],
    max_steps: int,
) -> dict[str, Any]:
    """Success rate of a planner or a policy over fixed start/goal pairs.

    Args:
        env: an environment with ``reset(start=..., goal=...)`` and ``goal_observation()``
            (e.g. :class:`jepa.envs.TwoRooms`).
        controller: a planner (``plan``, run through :func:`~jepa.planning.mpc`) or a policy ``(obs, goal_obs) -> action``.
        pairs: ``(start, goal, kind)`` triples, e.g. :data:`jepa.envs.EVAL_PAIRS`.
        max_steps: step budget of each episode.

    Returns:
        ``{"success_rate", "by_kind": {kind: rate}, "successes": [bool per pair], "steps": [int per pair],
        "final_distance": [float or None per pair], "ms_per_step"}`` (``final_distance``: the last
        step's ``info["distance"]`` when the environment reports one; ``ms_per_step``: mean time to
        choose an action, over all steps).
    """
    if len(pairs) == 0:
        raise ValueError("evaluate: pairs is empty")
    run = _FirstAction(controller) if callable(getattr(controller, "plan", None)) else controller
    if not callable(run):
        raise TypeError(f"evaluate: controller must have plan() or be callable, got {type(controller).__name__}")
    successes, steps, seconds, kinds, distances = [], [], [], [], []
    for start, goal, kind in pairs:
        obs, _ = env.reset(start=start, goal=goal)
        result = run_controller(env, run, env.goal_observation(), max_steps, obs=obs)
        successes.append(result.reached)
        steps.append(result.steps)
        seconds.extend(result.plan_seconds)
        kinds.append(kind)
        distances.append(result.info.get("distance") if isinstance(result.info, dict) else None)
    by_kind = {k: float(np.mean([s for s, kk in zip(successes, kinds) if kk == k])) for k in dict.fromkeys(kinds)}
    return {
        "success_rate": float(np.mean(successes)),
        "by_kind": by_kind,
        "successes": successes,
        "steps": steps,
        "final_distance": distances,
        "ms_per_step": 1e3 * float(np.mean(seconds)) if seconds else 0.0,
    }
