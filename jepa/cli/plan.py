"""``jepa plan --checkpoint runs/wm/best_model.pt [--episodes N] [--planner cem|mppi]``: model-predictive
control with a trained world model in the embedded environment.

Without ``--episodes`` the episodes are the fixed start/goal pairs (``jepa.envs.EVAL_PAIRS``: 10 in
one room, 10 across the wall), the ones ``jepa train --task world_model`` reports; ``--episodes N``
draws N random pairs instead (``--seed``). The planner settings are the run's (``config.yaml`` next
to the checkpoint), or the defaults; flags override them. Prints the success table (the planner
and, unless ``--no-baselines``, random actions and a straight line to the goal on the same
episodes) and writes it as JSON (``--output``, default ``<checkpoint dir>/plan.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_plan_parser", "cmd_plan"]


def add_plan_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``plan`` command on the ``jepa`` sub-command parsers."""
    from jepa.cli.main import _positive_int  # noqa: PLC0415

    plan = sub.add_parser("plan", help="plan with a trained world model (MPC in the embedded environment)")
    plan.add_argument("--checkpoint", required=True, help="checkpoint of a world-model run (e.g. runs/wm/best_model.pt)")
    plan.add_argument("--episodes", type=_positive_int, help="random start/goal pairs to run (default: the 20 fixed pairs)")
    plan.add_argument("--planner", choices=("cem", "mppi"), help="planner (default: the run's first)")
    plan.add_argument("--horizon", type=_positive_int, help="planned steps")
    plan.add_argument("--samples", type=_positive_int, help="candidate action sequences per iteration")
    plan.add_argument("--iterations", type=_positive_int, help="planner iterations per MPC step")
    plan.add_argument("--max-steps", type=_positive_int, help="step budget of an episode")
    plan.add_argument("--cost", choices=("sum", "final"), help="latent distance summed over the plan, or at its end only")
    plan.add_argument("--seed", type=int, default=0, help="seed of the random pairs and of the planner")
    plan.add_argument("--no-baselines", action="store_true", help="skip the random and straight-line baselines")
    plan.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    plan.add_argument("--output", help="write the results as JSON here (default: <checkpoint dir>/plan.json)")
    return plan


def cmd_plan(args: argparse.Namespace) -> int:
    """Run ``jepa plan``; returns the exit code."""
    import torch  # noqa: PLC0415

    from jepa.cli.main import CLIError, _table  # noqa: PLC0415
    from jepa.cli.world_model import planning_table  # noqa: PLC0415
    from jepa.config import PlanningConfig  # noqa: PLC0415
    from jepa.envs import make_env  # noqa: PLC0415
    from jepa.io import CheckpointError  # noqa: PLC0415
    from jepa.trainer.batches import resolve_device  # noqa: PLC0415
    from jepa.trainer.world_model_builders import world_env  # noqa: PLC0415
    from jepa.trainer.world_model_planning import load_world_model, planning_report, random_pairs  # noqa: PLC0415

    path = Path(args.checkpoint)
    if not path.is_file():
        raise CLIError(f"--checkpoint: file not found: {str(path)!r}")
    try:
        device = resolve_device(args.device)
        model, config = load_world_model(path, device)
    except (CheckpointError, ValueError, TypeError, RuntimeError) as exc:
        raise CLIError(f"--checkpoint: {exc}") from None
    settings = config.world_model.planning if config is not None else PlanningConfig()
    env_name = config.world_model.env if config is not None else "two_rooms"
    for flag, key in (("horizon", "horizon"), ("samples", "samples"), ("iterations", "iterations"), ("max_steps", "max_steps"), ("cost", "cost")):
        if getattr(args, flag) is not None:
            setattr(settings, key, getattr(args, flag))
    if settings.samples < 2:
        raise CLIError(f"--samples: need at least 2 candidates, got {settings.samples}")
    settings.seed = args.seed
    settings.baselines = not args.no_baselines
    planners = [args.planner] if args.planner else list(settings.planners or ["cem"])
    try:
        env = world_env(config) if config is not None else make_env(env_name)
    except ValueError as exc:
        raise CLIError(f"--checkpoint: the run's config: {exc}") from None
    probe = torch.as_tensor(env.observe()).unsqueeze(0).to(device)
    try:
        with torch.no_grad():
            model.encode(probe)
    except (RuntimeError, ValueError) as exc:
        raise CLIError(f"--checkpoint: the model does not take {env_name} observations of shape {tuple(env.observation_shape)}: {exc}") from None
    pairs = random_pairs(env, args.episodes, seed=args.seed) if args.episodes else None
    with torch.no_grad():
        report = planning_report(model, env, settings, pairs=pairs, planners=planners)
    report["checkpoint"] = str(path)
    report["episodes"] = "random" if args.episodes else "fixed"
    what = f"{args.episodes} random start/goal pairs (seed {args.seed})" if args.episodes else f"the {report['pairs']} fixed start/goal pairs"
    print(f"MPC with {path} in {env_name} over {what}; success: the goal reached within {settings.max_steps} steps; "
          f"planner: {settings.samples} samples, horizon {settings.horizon}, {settings.iterations} iterations, cost {settings.cost}")
    print(planning_table(report, _table))
    out = Path(args.output) if args.output else path.parent / "plan.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0
