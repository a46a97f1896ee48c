"""Command-line interface: ``jepa train | evaluate | config | plan`` (image flags: :mod:`jepa.cli.images`;
world models: :mod:`jepa.cli.world_model`).

Bad flags, paths or config values print one line ``jepa: error: ...`` and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from jepa.cli import images

USAGE_ERROR = 2


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def _positive_float(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}")
    return x


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jepa", description="Train and evaluate JEPA models.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    train = sub.add_parser("train", help="train a JEPA (no arguments: the default run on the embedded digits)")
    train.add_argument("--config", help="YAML config file or shipped config name (default: 'default')")
    train.add_argument("--epochs", type=_positive_int)
    train.add_argument("--batch-size", type=_positive_int)
    train.add_argument("--lr", type=_positive_float, help="learning rate")
    train.add_argument("--output-dir", help="where checkpoints, metrics.json and plots go")
    train.add_argument("--resume", help="checkpoint to continue from ('auto': the newest in <output-dir>/checkpoints)")
    train.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    train.add_argument("--distributed", type=_bool, default=False, help="true|false (torchrun)")
    train.add_argument("--strategy", choices=("ddp", "fsdp"), help="with --distributed true: ddp (replicated model, default) or fsdp (sharded)")
    train.add_argument("--seed", type=int)
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument("--init-from", help="continue pretraining: encoder weights from a checkpoint (.pt), a save_pretrained "
                       "folder or a Hugging Face IJepaModel folder (model.init_from)")
    images.add_train_flags(train, _positive_int)
    from jepa.cli.world_model import add_train_arguments  # noqa: PLC0415  (--task world_model, --horizon)

    add_train_arguments(train)

    ev = sub.add_parser("evaluate", help="evaluate a checkpoint")
    ev.add_argument("--checkpoint", required=True, help="trainer checkpoint (.pt)")
    ev.add_argument("--output", help="write the metrics as JSON here (default: <checkpoint dir>/evaluation.json)")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--task", choices=("classification", "regression"), help="also run downstream probes on the digits labels")
    ev.add_argument("--labels-per-class", type=_positive_int, help="train the probes on this many labels per class")
    ev.add_argument("--plots", help="folder for embeddings.png (PCA by label) and history.png")
    images.add_evaluate_flags(ev)

    cfg = sub.add_parser("config", help="write the default config as YAML")
    cfg.add_argument("--output", required=True, help="path of the YAML file to write")
    cfg.add_argument("--name", default="default", help="shipped config to write")
    from jepa.cli.plan import add_plan_parser  # noqa: PLC0415

    add_plan_parser(sub)
    return parser


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _cmd_config(args: argparse.Namespace) -> int:
    from jepa.config import load_config, save_config  # noqa: PLC0415

    try:
        config = load_config(args.name)
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from None
    path = save_config(config, args.output)
    print(f"wrote {path}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    if args.strategy == "fsdp" and not args.distributed:
        raise CLIError("--strategy fsdp shards the model over the processes of a distributed run: add --distributed true and "
                       "launch with torchrun --nproc_per_node=N -m jepa.cli train ...")
    if args.distributed:
        if "WORLD_SIZE" not in os.environ:
            raise CLIError(
                "--distributed true needs torchrun: torchrun --nproc_per_node=N -m jepa.cli train --distributed true "
                "(note: -m jepa.cli, not 'python -m jepa.cli')"
            )
        # torchrun reports the real error of a failed rank (error file) instead of a bare exit code.
        from torch.distributed.elastic.multiprocessing.errors import record  # noqa: PLC0415

        return record(_train)(args)
    return _train(args)


def _train(args: argparse.Namespace) -> int:
    import torch  # noqa: PLC0415

    from jepa.cli.world_model import train_world_model  # noqa: PLC0415

    code = train_world_model(args)  # None: not a world-model run
    if code is not None:
        return code

    from jepa.config import ConfigError, load_config, save_config  # noqa: PLC0415
    from jepa.data import ImageDecodeError  # noqa: PLC0415
    from jepa.trainer.experiment import build_probe_run, train_and_probe  # noqa: PLC0415

    try:
        config = load_config(args.config or (images.IMAGE_CONFIG if args.data is not None else "default"))
    except (FileNotFoundError, ConfigError) as exc:
        raise CLIError(str(exc)) from None
    images.apply_train_flags(config, args)
    t = config.training
    if args.epochs is not None:
        t.epochs = args.epochs
    if args.batch_size is not None:
        t.batch_size = args.batch_size
    if args.lr is not None:
        t.learning_rate = args.lr
    if args.device is not None:
        t.device = args.device
    if args.seed is not None:
        t.seed = args.seed
    if args.output_dir is not None:
        config.logging.output_dir = args.output_dir
    if args.no_progress:
        config.logging.progress_bar = False
    if args.strategy is not None:
        t.strategy = args.strategy
    if args.init_from is not None:
        config.model.init_from = args.init_from
    out_dir = Path(config.logging.output_dir)

    if args.resume and args.resume != "auto" and not Path(args.resume).is_file():
        raise CLIError(f"--resume: checkpoint not found: {args.resume!r}")
    try:
        trainer, random_init = build_probe_run(config, distributed=bool(args.distributed))
    except (ValueError, FileNotFoundError, NotADirectoryError, ImportError, NotImplementedError) as exc:
        raise CLIError(str(exc)) from None
    config = trainer.config  # an image run's sizes and model are resolved there
    model = trainer.model
    train_set, val_set = trainer.train_loader.dataset, trainer.val_loader.dataset
    ckpt_dir = Path(trainer.save_dir)
    if args.resume:
        # 'auto': the newest checkpoint of <output-dir>/checkpoints that loads and verifies
        resume = trainer.resume_from(args.resume)
        if resume is not None:
            if trainer.is_global_zero:
                print(f"resumed from {resume} at epoch {trainer.current_epoch}, step {trainer.global_step}")
        elif trainer.is_global_zero:
            print(f"--resume auto: no checkpoint in {ckpt_dir}, starting from scratch")

    if not trainer.is_global_zero:  # other ranks train; rank 0 reports
        torch.manual_seed(config.training.seed + 1)  # as train_and_probe does on rank 0
        try:
            trainer.train()
        except ImageDecodeError as exc:
            raise CLIError(images.decode_error_line(exc)) from None
        finally:
            trainer.close()
        return 0
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / "config.yaml")
    world = f" x {trainer.dist.world_size} processes" if trainer.dist is not None else ""
    params = f"{sum(p.numel() for p in model.parameters() if p.requires_grad):,} trainable parameters"
    if hasattr(model, "forward_batch"):
        print(f"{images.describe(trainer)}, {params}, on {trainer.device}{world}")
    else:
        print(
            f"jepa: training a JEPA on '{config.data.dataset}' ({len(train_set)} train / {len(val_set)} val pairs, "
            f"{params}) on {trainer.device}{world}"
        )
    if config.model.init_from:
        print(f"encoder initialised from {config.model.init_from} (model.init_from)")
    try:
        result = train_and_probe(trainer, random_init, labels_per_class=10)
    except ImageDecodeError as exc:  # raised in a loader worker, re-raised here with the worker's traceback
        raise CLIError(images.decode_error_line(exc)) from None
    finally:
        trainer.close()
    history, report, train_seconds = result["history"], result["report"], result["train_seconds"]
    report["train_seconds"] = round(train_seconds, 2)
    report["final_train_loss"] = history["train_loss"][-1] if history["train_loss"] else None
    report["final_val_loss"] = history["val_loss"][-1] if history["val_loss"] else None
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    (out_dir / "history.json").write_text(json.dumps(history, indent=2))
    try:
        from jepa.trainer.utils import plot_training_history  # noqa: PLC0415

        plot_training_history(history, out_dir / "history.png")
    except ImportError:
        print("jepa: matplotlib not installed, skipping history.png (a dependency of jepa-torch: pip install matplotlib)")

    probe = report["probe"]
    print()
    if probe is not None:
        rows = [["linear probe accuracy", "10 labels/class", "all labels"]]
        for name, label in (("pretrained", "pretrained encoder"), ("random_init", "same arch, random init"), ("raw_input", "raw input pixels")):
            rows.append([label, *(f"{100 * v:.1f}%" if v is not None else "n/a" for v in (probe[name]["10_per_class"], probe[name]["all"]))])
        print(_table(rows))
    for note in report.get("notes", []):
        print(f"note: {note}")
    print(f"\neffective rank of the embeddings: {report['effective_rank']:.1f} of {report['embedding_dim']}")
    print(_health_lines(report))
    print(f"trained {t.epochs} epochs in {train_seconds:.1f}s; metrics: {out_dir / 'metrics.json'}; checkpoints: {ckpt_dir}")
    return 0


def _health_lines(report: dict) -> str:
    """The recipe, what best_model.pt followed, and the run-health monitors' last values."""
    recipe, best, mon = report.get("recipe", {}), report.get("best_model", {}), report.get("monitors", {})
    lines = []
    if recipe:
        lines.append(f"recipe: {recipe['name']} (model.target_encoder: {recipe['target_encoder']}, "
                     f"loss.regularizer: {recipe['regularizer']} x {recipe['regularizer_weight']:g})")
    if best.get("value") is not None:
        why = "the online probe's accuracy on the validation split" if "acc" in best["monitor"] else "the loss"
        if best["monitor"].endswith("loss") and "val_accuracy" not in mon:
            why += " (no online probe: the validation data has no labels, or training.validation.probe is false)"
        lines.append(f"best_model.pt: kept by {best['monitor']} = {best['value']:.4g}, {why}")
    shown = [(k, f"{100 * mon[k]:.1f}%") for k in ("val_accuracy", "val_knn_accuracy") if k in mon]
    shown += [(name, f"{mon[k]:.1f}") for k, name in (("rankme", "RankMe"), ("lidar", "LiDAR")) if k in mon]
    if shown:
        lines.append("last monitors: " + ", ".join(f"{k} {v}" for k, v in shown))
    cost = report.get("probe_cost")
    if cost:
        lines.append(f"online probe: {cost['probe_seconds']:.3f}s per validation, {100 * cost['fraction_of_epoch']:.1f}% of an epoch "
                     f"({cost['epoch_seconds']:.2f}s)")
    return "\n".join(lines)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader  # noqa: PLC0415

    from jepa.data import DigitsPairs, load_digits_split  # noqa: PLC0415
    from jepa.io import CheckpointError  # noqa: PLC0415
    from jepa.io import load as load_checkpoint_file  # noqa: PLC0415
    from jepa.trainer.eval import JEPAEvaluator  # noqa: PLC0415

    path = Path(args.checkpoint)
    if not path.is_file():
        raise CLIError(f"--checkpoint: file not found: {str(path)!r}")
    if args.labels_per_class is not None and args.task != "classification" and args.data is None:
        raise CLIError("--labels-per-class needs --task classification")
    try:
        state = load_checkpoint_file(path)
        evaluator = JEPAEvaluator.from_checkpoint(path, device=args.device)
    except (CheckpointError, ValueError) as exc:
        raise CLIError(f"--checkpoint: {exc}") from None
    if args.data is not None:
        return _evaluate_images(args, path, evaluator, state)
    encoder = evaluator.model.encoder
    test = DigitsPairs("test", augment=False)
    if getattr(encoder, "input_dim", None) != test.token_dim:
        raise CLIError(
            f"--checkpoint: the model expects tokens of size {getattr(encoder, 'input_dim', '?')}, the digits test set has {test.token_dim}"
        )
    results: dict = {"checkpoint": str(path), "prediction": evaluator.evaluate(DataLoader(test, batch_size=256))}
    rows = [["metric", "value"]]
    for k, v in results["prediction"].items():
        rows.append([k, f"{v:.4f}" if isinstance(v, float) else str(v)])
    train_split, test_split = load_digits_split("train"), load_digits_split("test")
    if args.task:
        down = evaluator.evaluate_downstream(
            task=args.task,
            train_data=(train_split.tokens, train_split.labels),
            test_data=(test_split.tokens, test_split.labels),
            method="both",
            labels_per_class=args.labels_per_class,
        )
        results["downstream"] = {"task": args.task, "labels_per_class": args.labels_per_class, **down}
        for method, scores in down.items():
            for name, value in scores.items():
                rows.append([f"{args.task} {method} {name}", f"{value:.4f}"])
    if args.plots:
        plots = Path(args.plots)
        plots.mkdir(parents=True, exist_ok=True)
        try:
            results["plots"] = [str(evaluator.plot_embeddings(test_split.tokens, test_split.labels, plots / "embeddings.png"))]
            history = state.get("history") or {}
            if history.get("train_loss"):
                from jepa.trainer.utils import plot_training_history  # noqa: PLC0415

                plot_training_history(history, plots / "history.png")
                results["plots"].append(str(plots / "history.png"))
        except ImportError as exc:
            raise CLIError(str(exc)) from None
    print(_table(rows))
    out = Path(args.output) if args.output else path.parent / "evaluation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {out}")
    return 0


def _evaluate_images(args: argparse.Namespace, path: Path, evaluator, state: dict) -> int:
    """``jepa evaluate --checkpoint PATH --data DIR``: prediction metrics and probes on a folder."""
    if args.task == "regression":
        raise CLIError("--data probes class labels: use --task classification (or leave --task out)")
    try:
        results, rows = images.evaluate_folder(evaluator, args.data, args.labels_per_class)
    except (ValueError, FileNotFoundError, NotADirectoryError) as exc:
        raise CLIError(str(exc)) from None
    results = {"checkpoint": str(path), **results}
    print(_table(rows))
    out = Path(args.output) if args.output else path.parent / "evaluation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jepa`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return USAGE_ERROR
    from jepa.cli.plan import cmd_plan  # noqa: PLC0415

    handler = {"train": _cmd_train, "evaluate": _cmd_evaluate, "config": _cmd_config, "plan": cmd_plan}[args.command]
    try:
        return handler(args)
    except CLIError as exc:
        print(f"jepa: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("jepa: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
