"""Training callbacks: hooks the trainer calls at fixed points of the loop (Lightning-style).

Hooks (all optional; override the ones you need):

- ``on_train_start(trainer, model)`` / ``on_train_end(trainer, model)``
- ``on_epoch_start(trainer, model)`` / ``on_epoch_end(trainer, model)``
- ``on_batch_start(trainer, model, batch, batch_idx)``
- ``on_batch_end(trainer, model, outputs, batch, batch_idx)`` (``outputs``: the dict returned by
  ``training_step``, detached)
- ``on_validation_end(trainer, model, metrics)`` (``metrics``: ``epoch``, ``train_loss`` and, when
  validation ran, ``val_loss``; called every epoch)
- ``on_save_checkpoint(trainer, path)``

A callback stops training by setting ``trainer.should_stop = True``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable

from jepa.trainer.batches import first_input, move_to_device
from jepa.trainer.checks import check_choice, check_int, check_number
from jepa.trainer.eval import effective_rank
from jepa.trainer.modes import evaluating

__all__ = ["BaseCallback", "CollapseMonitor", "CustomLogging", "EarlyStopping", "LearningRateScheduler", "ModelCheckpoint"]

log = logging.getLogger("jepa")

_MODES = ("min", "max")


def _improved(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _monitored(metrics: dict[str, Any], monitor: str, owner: str) -> float:
    if monitor not in metrics:
        raise KeyError(
            f"{owner}: monitored metric {monitor!r} is not available this epoch; available: {sorted(metrics)} "
            "(val_loss needs a validation loader)"
        )
    return float(metrics[monitor])


class BaseCallback:
    """Base class of callbacks: every hook is a no-op."""

    def on_train_start(self, trainer: Any, model: Any) -> None:
        pass

    def on_train_end(self, trainer: Any, model: Any) -> None:
        pass

    def on_epoch_start(self, trainer: Any, model: Any) -> None:
        pass

    def on_epoch_end(self, trainer: Any, model: Any) -> None:
        pass

    def on_batch_start(self, trainer: Any, model: Any, batch: Any, batch_idx: int) -> None:
        pass

    def on_batch_end(self, trainer: Any, model: Any, outputs: dict[str, Any], batch: Any, batch_idx: int) -> None:
        pass

    def on_validation_end(self, trainer: Any, model: Any, metrics: dict[str, Any]) -> None:
        pass

    def on_save_checkpoint(self, trainer: Any, path: str | os.PathLike) -> None:
        pass


class EarlyStopping(BaseCallback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs."""

    def __init__(self, monitor: str = "val_loss", patience: int = 10, mode: str = "min", min_delta: float = 0.0) -> None:
        self.monitor = monitor
        self.patience = check_int("patience", patience, minimum=1, owner="EarlyStopping")
        self.mode = check_choice("mode", mode, _MODES, owner="EarlyStopping")
        self.min_delta = check_number("min_delta", min_delta, low=0, owner="EarlyStopping")
        self.best: float | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None

    def on_validation_end(self, trainer: Any, model: Any, metrics: dict[str, Any]) -> None:
        value = _monitored(metrics, self.monitor, "EarlyStopping")
        if _improved(value, self.best, self.mode, self.min_delta):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            trainer.should_stop = True
            self.stopped_epoch = int(metrics.get("epoch", getattr(trainer, "current_epoch", 0)))
            log.info("EarlyStopping: %s did not improve for %d epochs (best %.6g); stopping", self.monitor, self.patience, self.best)


class ModelCheckpoint(BaseCallback):
    """Save the ``save_top_k`` best checkpoints by ``monitor`` (deleting the others) and optionally
    ``last.pt``.

    ``filename`` may use ``{epoch}`` and the monitored metric as format fields, e.g.
    ``"jepa-{epoch:03d}-{val_loss:.4f}"``. Without fields and with ``save_top_k != 1`` the epoch
    is appended so the k files do not overwrite each other. ``save_top_k=-1`` keeps every one.
    """

    def __init__(
        self,
        dirpath: str | os.PathLike | None = None,
        filename: str = "best_model",
        monitor: str = "val_loss",
        save_top_k: int = 1,
        mode: str = "min",
        save_last: bool = False,
    ) -> None:
        check_int("save_top_k", save_top_k, minimum=-1, owner="ModelCheckpoint")
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.filename = filename
        self.monitor = monitor
        self.save_top_k = save_top_k
        self.mode = check_choice("mode", mode, _MODES, owner="ModelCheckpoint")
        self.save_last = save_last
        self.best_k: list[tuple[float, Path]] = []  # best first
        self.best_model_path: Path | None = None
        self.last_model_path: Path | None = None

    def _format(self, epoch: int, metrics: dict[str, Any]) -> str:
        fields = {"epoch": epoch, **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
        name = self.filename
        if "{" in name:
            safe = {re.sub(r"\W", "_", k): v for k, v in fields.items()}
            name = re.sub(r"\{([^}:]+)", lambda m: "{" + re.sub(r"\W", "_", m.group(1)), name).format(**safe)
        elif self.save_top_k != 1:
            name = f"{name}-epoch={epoch:03d}"
        return name if name.endswith((".pt", ".pth")) else f"{name}.pt"

    def on_validation_end(self, trainer: Any, model: Any, metrics: dict[str, Any]) -> None:
        directory = self.dirpath or Path(trainer.save_dir)
        if self.save_top_k != 0:
            value = _monitored(metrics, self.monitor, "ModelCheckpoint")
            worst = self.best_k[-1][0] if self.best_k else None
            full = self.save_top_k != -1 and len(self.best_k) >= self.save_top_k
            if not full or _improved(value, worst, self.mode):
                path = directory / self._format(int(metrics.get("epoch", trainer.current_epoch)), metrics)
                trainer.save_checkpoint(path)
                self.best_k = [(v, p) for v, p in self.best_k if p != path]
                self.best_k.append((value, path))
                self.best_k.sort(key=lambda vp: vp[0], reverse=self.mode == "max")
                if self.save_top_k != -1:
                    for _, stale in self.best_k[self.save_top_k :]:
                        if stale.exists():
                            stale.unlink()
                    self.best_k = self.best_k[: self.save_top_k]
                self.best_model_path = self.best_k[0][1]
        if self.save_last:
            self.last_model_path = trainer.save_checkpoint(directory / "last.pt")


class LearningRateScheduler(BaseCallback):
    """Own the learning rate: set it at the start of every epoch from a schedule.

    ``schedule`` is ``"cosine"`` (from the configured lr to ``min_lr`` over the run), ``"linear"``,
    ``"step"`` (multiply by ``gamma`` every ``step_size`` epochs), ``"exponential"`` (``gamma`` per
    epoch), or a callable ``(epoch, lr) -> new_lr`` (``lr``: the current one).

    A trainer given this callback leaves the learning rate to it: its own scheduler (the per-step
    warmup + cosine, or one you passed) is neither built nor stepped, and it says so once. The
    schedule starts from the configured learning rate of each parameter group
    (``trainer.base_lrs``: the optimizer's lr when the trainer was built), so every batch of epoch
    ``e`` trains with ``schedule(e)``, also after a resume. ``history`` records, per epoch, the lr
    set on the first parameter group.
    """

    SCHEDULES = ("cosine", "linear", "step", "exponential")
    owns_lr = True  # the trainer's scheduler steps aside

    def __init__(
        self,
        schedule: str | Callable[[int, float], float] = "cosine",
        min_lr: float = 0.0,
        gamma: float = 0.5,
        step_size: int = 10,
        verbose: bool = False,
    ) -> None:
        owner = "LearningRateScheduler"
        if isinstance(schedule, str):
            check_choice("schedule", schedule, self.SCHEDULES, owner=owner)
        elif not callable(schedule):
            raise TypeError(f"{owner}: schedule must be a name or a callable, got {type(schedule).__name__}")
        self.schedule = schedule
        self.min_lr = check_number("min_lr", min_lr, low=0.0, owner=owner)
        self.gamma = check_number("gamma", gamma, low=0.0, low_open=True, owner=owner)
        self.step_size = check_int("step_size", step_size, minimum=1, owner=owner)
        self.verbose = verbose
        self.initial_lrs: list[float] | None = None
        self.history: list[float] = []

    def lr_at(self, epoch: int, total: int, base: float, current: float | None = None) -> float:
        """The learning rate of ``epoch`` (0-based) of ``total`` for a group whose configured lr is
        ``base`` (``current``: its lr now, for callable schedules)."""
        if callable(self.schedule):
            return float(self.schedule(epoch, base if current is None else current))
        progress = epoch / max(1, total - 1)
        if self.schedule == "cosine":
            return self.min_lr + (base - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        if self.schedule == "linear":
            return base + (self.min_lr - base) * progress
        if self.schedule == "step":
            return base * self.gamma ** (epoch // self.step_size)
        return base * self.gamma**epoch

    def on_epoch_start(self, trainer: Any, model: Any) -> None:
        groups = trainer.optimizer.param_groups
        if self.initial_lrs is None:
            base = getattr(trainer, "base_lrs", None)
            self.initial_lrs = list(base) if base is not None else [g.get("initial_lr", g["lr"]) for g in groups]
        total = int(getattr(trainer, "max_epochs", 0) or 1)
        for g, base in zip(groups, self.initial_lrs):
            g["lr"] = self.lr_at(trainer.current_epoch, total, base, g["lr"])
        self.history.append(groups[0]["lr"])
        if self.verbose:
            log.info("epoch %d: lr = %.3e", trainer.current_epoch, groups[0]["lr"])


class CustomLogging(BaseCallback):
    """Log the scalar outputs of ``training_step`` every ``log_frequency`` batches (to the trainer's
    logger when it has ``log_metrics``, else to the ``jepa`` Python logger)."""

    def __init__(self, log_frequency: int = 100) -> None:
        self.log_frequency = check_int("log_frequency", log_frequency, minimum=1, owner="CustomLogging")
        self.records: list[tuple[int, dict[str, float]]] = []

    def on_batch_end(self, trainer: Any, model: Any, outputs: dict[str, Any], batch: Any, batch_idx: int) -> None:
        if batch_idx % self.log_frequency != 0:
            return
        scalars = {}
        for k, v in outputs.items():
            try:
                scalars[k] = float(v)
            except (TypeError, ValueError, RuntimeError):
                continue
        step = int(getattr(trainer, "global_step", batch_idx))
        self.records.append((step, scalars))
        logger = getattr(trainer, "logger", None)
        if logger is not None and hasattr(logger, "log_metrics"):
            logger.log_metrics({f"batch/{k}": v for k, v in scalars.items()}, step)
        else:
            log.info("epoch %d batch %d: %s", getattr(trainer, "current_epoch", 0), batch_idx, ", ".join(f"{k}={v:.5g}" for k, v in scalars.items()))


class CollapseMonitor(BaseCallback):
    """Watch for representation collapse during training.

    Every ``every_n_steps`` optimizer steps, embeds a fixed held-out batch (the first batch of the
    validation loader, else of the training loader, or ``batch`` when given) with the online
    encoder, and logs its effective rank (RankMe) and mean per-dimension std as
    ``collapse/effective_rank`` and ``collapse/embedding_std``; values are kept in ``records``.
    Warns once when the effective rank falls under ``rank_fraction`` of the embedding width or
    the embeddings stop varying (mean std < 1e-3).
    """

    def __init__(self, every_n_steps: int = 100, rank_fraction: float = 0.1, batch: Any = None) -> None:
        self.every_n_steps = check_int("every_n_steps", every_n_steps, minimum=1, owner="CollapseMonitor")
        self.rank_fraction = check_number("rank_fraction", rank_fraction, low=0.0, high=1.0, low_open=True, high_open=True, owner="CollapseMonitor")
        self.batch = batch
        self.records: list[dict[str, float]] = []
        self.warned = False
        self._last_step = -1

    def on_train_start(self, trainer: Any, model: Any) -> None:
        if self.batch is None:
            loader = getattr(trainer, "_active_val_loader", None) or getattr(trainer, "_active_train_loader", None)
            if loader is not None:
                self.batch = next(iter(loader))

    def measure(self, trainer: Any, model: Any) -> dict[str, float]:
        """Effective rank and embedding std of the held-out batch now."""
        x = first_input(move_to_device(self.batch, trainer.device))
        with evaluating(model):
            z = model.embed(x).float()
        rank = effective_rank(z) if len(z) > 1 else float("nan")
        std = float(z.std(dim=0).mean()) if len(z) > 1 else float("nan")
        return {"effective_rank": rank, "embedding_std": std, "embedding_dim": float(z.shape[1])}

    def on_batch_end(self, trainer: Any, model: Any, outputs: dict[str, Any], batch: Any, batch_idx: int) -> None:
        step = int(trainer.global_step)
        if self.batch is None or step == self._last_step or step % self.every_n_steps != 0 or not hasattr(model, "embed"):
            return
        self._last_step = step
        m = self.measure(trainer, model)
        self.records.append({"step": step, **m})
        trainer._log({"collapse/effective_rank": m["effective_rank"], "collapse/embedding_std": m["embedding_std"]}, step)
        limit = self.rank_fraction * m["embedding_dim"]
        if not self.warned and (m["effective_rank"] < limit or m["embedding_std"] < 1e-3):
            self.warned = True
            msg = (
                f"representation collapse suspected at step {step}: effective rank {m['effective_rank']:.1f} < "
                f"{limit:.1f} ({self.rank_fraction:.0%} of {int(m['embedding_dim'])} dims), embedding std {m['embedding_std']:.3g}. "
                "Raise the variance/covariance weights of JEPALoss or add a projector."
            )
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            log.warning(msg)
