"""Judge a trained world model by planning with it: MPC (CEM / MPPI in its latent space) over
start/goal pairs of the embedded environment, next to the baselines (random actions, a straight
line to the goal), by pair kind (same room, across the wall), with the planning time per step.

What ``jepa train --task world_model`` reports at the end and ``jepa plan`` runs on a checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jepa import io as jio
from jepa.config import Config, PlanningConfig, load_config
from jepa.envs import EVAL_PAIRS, EvalPair, RandomPolicy, StraightLinePolicy
from jepa.planning import CEM, MPPI, evaluate
from jepa.trainer.checkpoints import model_from_checkpoint_state
from jepa.trainer.checks import check_choice, check_int

__all__ = ["PLANNERS", "load_world_model", "make_planner", "planning_report", "random_pairs"]

#: Planners :func:`make_planner` builds.
PLANNERS = ("cem", "mppi")


def make_planner(name: str, model: Any, env: Any, settings: PlanningConfig) -> CEM | MPPI:
    """The planner ``name`` (``"cem"`` or ``"mppi"``) over ``model`` with ``env``'s action bounds."""
    check_choice("planner", name, PLANNERS)
    common = {"horizon": settings.horizon, "samples": settings.samples, "iterations": settings.iterations,
              "cost": settings.cost, "seed": settings.seed}
    if name == "cem":
        return CEM(model, env.action_low, env.action_high, elites=min(settings.elites, settings.samples), **common)
    return MPPI(model, env.action_low, env.action_high, **common)


def random_pairs(env: Any, count: int, seed: int = 0, margin: float = 0.05) -> list[EvalPair]:
    """``count`` random start/goal pairs of free positions (at least ``margin`` from walls and border,
    at least ``4 * goal_radius`` apart), labelled ``same_room`` / ``cross_wall`` by ``env.room``."""
    check_int("count", count, minimum=1, owner="random_pairs")
    rng = np.random.default_rng(seed)
    pairs = []
    while len(pairs) < count:
        start, goal = env.sample_free(rng, margin=margin), env.sample_free(rng, margin=margin)
        if np.linalg.norm(goal - start) < 4 * env.goal_radius:
            continue
        kind = "same_room" if env.room(start) == env.room(goal) else "cross_wall"
        pairs.append(EvalPair(tuple(float(v) for v in start), tuple(float(v) for v in goal), kind))
    return pairs


def _summary(result: Mapping[str, Any], kinds: Sequence[str]) -> dict[str, Any]:
    per_kind = {}
    for kind in dict.fromkeys(kinds):
        hits = [s for s, k in zip(result["successes"], kinds) if k == kind]
        per_kind[kind] = {"success": int(sum(hits)), "episodes": len(hits), "rate": float(np.mean(hits))}
    return {
        "success_rate": result["success_rate"],
        "by_kind": {k: v["rate"] for k, v in per_kind.items()},
        "counts": per_kind,
        "ms_per_step": result["ms_per_step"],
        "steps": result["steps"],
        "successes": result["successes"],
    }


def planning_report(
    model: Any,
    env: Any,
    settings: PlanningConfig | None = None,
    pairs: Sequence[Any] | None = None,
    planners: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Success of MPC with ``model`` in ``env`` over ``pairs`` (default :data:`jepa.envs.EVAL_PAIRS`).

    Returns ``{"success_rate", "by_kind", "ms_per_step", "planner"}`` of the first planner (the
    headline numbers), ``"planners": {name: {...}}`` for each of ``planners`` (default
    ``settings.planners``), ``"baselines": {"straight_line": {...}, "random": {...}}`` when
    ``settings.baselines``, and ``"pairs"``, ``"max_steps"``, ``"settings"``. Each entry holds
    ``success_rate``, ``by_kind`` (rate per pair kind), ``counts`` (successes and episodes per kind),
    ``ms_per_step`` (mean time to choose an action), and per-episode ``steps`` and ``successes``.
    """
    settings = settings if settings is not None else PlanningConfig()
    pairs = list(EVAL_PAIRS if pairs is None else pairs)
    planners = list(settings.planners if planners is None else planners)
    if not planners:
        raise ValueError("planning_report: no planner to run (planners is empty)")
    kinds = [p[2] for p in pairs]
    was_training = isinstance(model, torch.nn.Module) and model.training
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        results = {name: _summary(evaluate(env, make_planner(name, model, env, settings), pairs, settings.max_steps), kinds) for name in planners}
    finally:
        if was_training:
            model.train()
    first = results[planners[0]]
    report: dict[str, Any] = {
        "planner": planners[0],
        "success_rate": first["success_rate"],
        "by_kind": first["by_kind"],
        "ms_per_step": first["ms_per_step"],
        "planners": results,
        "pairs": len(pairs),
        "max_steps": settings.max_steps,
        "settings": {k: getattr(settings, k) for k in ("horizon", "samples", "iterations", "elites", "cost", "seed")},
    }
    if settings.baselines:
        report["baselines"] = {
            "straight_line": _summary(evaluate(env, StraightLinePolicy(env), pairs, settings.max_steps), kinds),
            "random": _summary(evaluate(env, RandomPolicy(env.action_low, env.action_high, seed=settings.seed), pairs, settings.max_steps), kinds),
        }
    return report


def load_world_model(checkpoint: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Config | None]:
    """The world model of a trainer checkpoint (rebuilt from the class and config it records) in eval
    mode on ``device``, and the run's config when a ``config.yaml`` lies next to the checkpoint (what
    ``jepa train --task world_model`` writes), else None.

    Raises:
        FileNotFoundError: no such file.
        jepa.io.CheckpointError: a damaged file or one that records no rebuildable model.
        TypeError: the model cannot plan (no ``encode``/``rollout``).
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    state = jio.load(path, map_location="cpu")
    if not isinstance(state, Mapping) or "model" not in state:
        raise jio.CheckpointError(f"{str(path)!r} is not a jepa trainer checkpoint (no 'model' entry)")
    model = model_from_checkpoint_state(state, source=str(path))
    if not (callable(getattr(model, "encode", None)) and callable(getattr(model, "rollout", None))):
        raise TypeError(f"{str(path)!r} holds a {type(model).__name__}, which cannot plan (no encode/rollout); train one with --task world_model")
    config = None
    for candidate in (path.parent / "config.yaml", path.parent.parent / "config.yaml"):
        if candidate.is_file():
            loaded = load_config(candidate)
            if loaded.task == "world_model":
                config = loaded
                break
    return model.to(device).eval(), config
