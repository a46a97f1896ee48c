"""``jepa train --task world_model``: collect (or read) trajectories, train a world model with the
trainer, evaluate it offline and by planning in the embedded environment, print the table and write
``metrics.json``.

The shipped ``world_model`` config is the recipe (``--config`` replaces it); flags override it:
``--data my_trajectories.npz`` (train on a file instead of collecting), ``--horizon`` (rollout
steps of the loss), ``--epochs``, ``--batch-size``, ``--lr``, ``--seed``, ``--device``,
``--output-dir``, ``--resume``, ``--distributed``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

__all__ = ["add_train_arguments", "planning_table", "train_world_model"]


def add_train_arguments(train: argparse.ArgumentParser) -> None:
    """The flags ``jepa train`` gains for world models (``--data`` only if no one added it yet)."""
    from jepa.cli.main import _positive_int  # noqa: PLC0415

    train.add_argument("--task", choices=("jepa", "world_model"),
                       help="jepa (default: representations of the digits) or world_model (trajectories, planning)")
    if "--data" not in train._option_string_actions:
        train.add_argument("--data", help="data to train on (--task world_model: an .npz of trajectories)")
    train.add_argument("--horizon", type=_positive_int, help="--task world_model: rollout steps of the training loss")


def _is_world_model_run(args: argparse.Namespace) -> tuple[bool, Any]:
    """Whether ``args`` ask for a world-model run, and its config (None when they do not)."""
    from jepa.cli.main import CLIError  # noqa: PLC0415
    from jepa.config import ConfigError, load_config  # noqa: PLC0415

    task = getattr(args, "task", None)
    if task == "jepa":
        return False, None
    name = args.config or ("world_model" if task == "world_model" else None)
    if name is None:
        return False, None
    try:
        config = load_config(name)
    except (FileNotFoundError, ConfigError) as exc:
        raise CLIError(str(exc)) from None
    if task == "world_model":
        config.task = "world_model"
    return config.task == "world_model", config


def _apply_flags(config: Any, args: argparse.Namespace) -> None:
    from jepa.cli.main import CLIError  # noqa: PLC0415

    t, wm = config.training, config.world_model
    for flag, obj, key in (("epochs", t, "epochs"), ("batch_size", t, "batch_size"), ("lr", t, "learning_rate"),
                           ("device", t, "device"), ("seed", t, "seed"), ("horizon", wm, "horizon")):
        value = getattr(args, flag, None)
        if value is not None:
            setattr(obj, key, value)
    data = getattr(args, "data", None)
    if data is not None:
        if not Path(data).is_file():
            raise CLIError(f"--data: trajectory file not found: {data!r} (an .npz with observations (E, T, ...) and actions (E, T-1, A))")
        wm.data = str(data)
    if args.output_dir is not None:
        config.logging.output_dir = args.output_dir
    if args.no_progress:
        config.logging.progress_bar = False


def _fraction(counts: dict, kind: str) -> str:
    c = counts.get(kind)
    return f"{c['success']}/{c['episodes']}" if c else "-"


def planning_table(report: dict, table: Any) -> str:
    """The success table of a :func:`~jepa.trainer.world_model_planning.planning_report`:
    one row per controller, success by pair kind, overall, and planning ms per MPC step."""
    rows = [["controller", "same room", "across the wall", "all", "ms / MPC step"]]
    named = [(f"world model + {name.upper()}", r) for name, r in report["planners"].items()]
    names = {"straight_line": "straight line to the goal", "random": "random actions"}
    named += [(names.get(k, k), r) for k, r in report.get("baselines", {}).items()]
    for label, r in named:
        rows.append([label, _fraction(r["counts"], "same_room"), _fraction(r["counts"], "cross_wall"),
                     f"{100 * r['success_rate']:.0f}%", f"{r['ms_per_step']:.1f}"])
    return table(rows)


def _offline_lines(results: dict) -> list[str]:
    steps = len(results["latent_relative"])
    picks = sorted({0, steps // 2 - 1, steps - 1} - {-1})
    parts = [f"latent error (relative to the latents' spread) at step {', '.join(str(i + 1) for i in picks)}: "
             + ", ".join(f"{results['latent_relative'][i]:.3f}" for i in picks)]
    if "state_error" in results:
        errors = ", ".join(f"{results['state_error'][i]:.3f}" for i in picks)
        parts.append(f"state error through a linear probe at the same steps: {errors} (probe floor {results['state_error_floor']:.3f})")
    return parts


def train_world_model(args: argparse.Namespace) -> int | None:
    """Run ``jepa train`` for a world model; None when ``args`` do not ask for one (the caller runs
    the default task)."""
    import torch  # noqa: PLC0415

    from jepa.cli.main import CLIError, _table  # noqa: PLC0415
    from jepa.config import save_config  # noqa: PLC0415
    from jepa.trainer import JEPATrainer  # noqa: PLC0415
    from jepa.trainer.world_model_builders import world_env  # noqa: PLC0415
    from jepa.trainer.world_model_eval import WorldModelEvaluation  # noqa: PLC0415
    from jepa.trainer.world_model_planning import planning_report  # noqa: PLC0415

    wanted, config = _is_world_model_run(args)
    if not wanted:
        if getattr(args, "horizon", None) is not None:
            raise CLIError("--horizon applies to world models: add --task world_model (or a config with task: world_model)")
        return None
    _apply_flags(config, args)
    out_dir = Path(config.logging.output_dir)
    if args.resume and args.resume != "auto" and not Path(args.resume).is_file():
        raise CLIError(f"--resume: checkpoint not found: {args.resume!r}")
    setup_start = time.perf_counter()
    try:
        trainer = JEPATrainer(config, distributed=bool(args.distributed))
    except (NotImplementedError, ValueError) as exc:  # bad settings or data, named by the message
        raise CLIError(str(exc)) from None
    setup_seconds = time.perf_counter() - setup_start  # collecting the trajectories, mostly
    if args.resume:
        resumed = trainer.resume_from(args.resume)
        if trainer.is_global_zero:
            print(f"resumed from {resumed} at epoch {trainer.current_epoch}, step {trainer.global_step}" if resumed is not None
                  else f"--resume auto: no checkpoint in {trainer.save_dir}, starting from scratch")
    if not trainer.is_global_zero:  # other ranks train; rank 0 reports
        try:
            trainer.train()
        finally:
            trainer.close()
        return 0
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / "config.yaml")
    wm, model = config.world_model, trainer.model
    data = trainer.train_loader.dataset
    n_val = len(trainer.val_loader.dataset) if trainer.val_loader is not None else 0
    source = f"{wm.data} " if wm.data else f"{wm.env} ({wm.episodes} random episodes x {wm.episode_steps} steps) "
    world = f" x {trainer.dist.world_size} processes" if trainer.dist is not None else ""
    print(
        f"jepa: training a world model on {source}({len(data)} train / {n_val} held-out windows of {wm.horizon} steps, "
        f"{sum(p.numel() for p in model.parameters() if p.requires_grad):,} trainable parameters) on {trainer.device}{world}"
    )
    steps_before = trainer.global_step
    start = time.perf_counter()
    try:
        history = trainer.train()
    finally:
        if trainer.logger is not None and hasattr(trainer.logger, "close"):
            trainer.logger.close()
        trainer.close()
    train_seconds = time.perf_counter() - start
    steps = trainer.global_step - steps_before
    report: dict[str, Any] = {
        "task": "world_model",
        "data": source.strip(),
        "setup_seconds": round(setup_seconds, 2),
        "train_seconds": round(train_seconds, 2),
        "train_steps": steps,
        "ms_per_train_step": round(1e3 * train_seconds / steps, 3) if steps else None,
        "final_train_loss": history["train_loss"][-1] if history["train_loss"] else None,
        "final_val_loss": history["val_loss"][-1] if history["val_loss"] else None,
    }
    evaluation = next((cb for cb in trainer.callbacks if isinstance(cb, WorldModelEvaluation)), None)
    best = Path(trainer.save_dir) / "best_model.pt"
    if best.is_file():  # judge the weights `jepa plan --checkpoint .../best_model.pt` will load
        from jepa import io as jio  # noqa: PLC0415

        model.load_state_dict(jio.load(best, map_location=trainer.device)["model"])
        report["judged_checkpoint"] = str(best)
    model.eval()
    if evaluation is not None:
        offline = evaluation.evaluate(model)
        report["offline"] = {"horizon": evaluation.horizon, "windows": int(evaluation.obs.shape[0]), **offline,
                             **WorldModelEvaluation.summary(offline)}
    table = None
    env = world_env(config)
    obs_ok = tuple(data.obs_shape) == tuple(env.observation_shape) and data.action_dim == len(env.action_low)
    if wm.planning.enabled and obs_ok:
        plan_start = time.perf_counter()
        with torch.no_grad():
            report["planning"] = planning_report(model, env, wm.planning)
        report["planning_seconds"] = round(time.perf_counter() - plan_start, 2)
        table = planning_table(report["planning"], _table)
    elif wm.planning.enabled:
        report["planning"] = None
        print(f"jepa: planning skipped: the data's observations {data.obs_shape} / actions ({data.action_dim},) are not those of "
              f"the embedded {wm.env} environment {env.observation_shape} / ({len(env.action_low)},)")
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=2, default=_plain))
    (out_dir / "history.json").write_text(json.dumps(history, indent=2, default=_plain))
    try:
        from jepa.trainer.utils import plot_training_history  # noqa: PLC0415

        plot_training_history(history, out_dir / "history.png")
    except ImportError:
        print("jepa: matplotlib not installed, skipping history.png")
    print()
    if table is not None:
        p = report["planning"]
        print(f"MPC over {p['pairs']} fixed start/goal pairs of {wm.env} (success: the goal reached within {p['max_steps']} steps); "
              f"planners: {p['settings']['samples']} samples, horizon {p['settings']['horizon']}, {p['settings']['iterations']} iterations")
        print(table)
    if "offline" in report:
        o = report["offline"]
        print(f"\noffline, {o['windows']} held-out windows, open-loop rollouts of {o['horizon']} steps:")
        for line in _offline_lines(o):
            print(f"  {line}")
    per_step = f" ({report['ms_per_train_step']:.1f} ms/step)" if steps else ""
    planned = f", planning {report['planning_seconds']:.1f}s" if "planning_seconds" in report else ""
    print(f"\ntrained {steps} steps in {train_seconds:.1f}s{per_step} (data {setup_seconds:.1f}s{planned}); "
          f"metrics: {out_dir / 'metrics.json'}; checkpoints: {trainer.save_dir}")
    return 0


def _plain(value: Any) -> Any:
    """JSON for numpy scalars/bools in reports."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
