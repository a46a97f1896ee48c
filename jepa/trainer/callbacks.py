"""Training callbacks: hooks the trainer calls at fixed points of the loop (Lightning-style).

Hooks (all optional; override the ones you need):

- ``on_train_start(trainer, model)`` / ``on_train_end(trainer, model)``
- ``on_epoch_start(trainer, model)`` / ``on_epoch_end(trainer, model)``
- ``on_batch_start(trainer, model, batch, batch_idx)``
- ``on_batch_end(trainer, model, outputs, batch, batch_idx)`` (``outputs``: the dict returned by
  ``training_step``, detached)
- ``validation_metrics(trainer, model) -> dict`` (after each validation, before
  ``on_validation_end``: metrics the callback measures, e.g. :class:`OnlineProbe`'s
  ``val_accuracy``; they join the validation metrics, the logs (``val/<name>``) and ``history``)
- ``on_validation_end(trainer, model, metrics)`` (``metrics``: ``epoch``, ``train_loss`` and, when
  validation ran, ``val_loss`` and the callbacks' validation metrics; called every epoch)
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

import time

import torch

from jepa.trainer.batches import first_input, move_to_device
from jepa.trainer.checks import check_choice, check_int, check_number
from jepa.trainer.eval import effective_rank
from jepa.trainer.fixed_views import FixedViews, sample_seed, seeded_rngs
from jepa.trainer.health import knn_accuracy, lidar, ridge_probe_accuracy
from jepa.trainer.modes import evaluating

__all__ = [
    "BaseCallback",
    "CollapseMonitor",
    "CustomLogging",
    "EarlyStopping",
    "LearningRateScheduler",
    "LiDAR",
    "ModelCheckpoint",
    "OnlineProbe",
    "RankMe",
    "add_validation_metrics",
    "collapse_advice",
    "labelled_data",
]

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
            "(val_loss needs a validation loader; val_accuracy needs an OnlineProbe and labelled validation data)"
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

    def validation_metrics(self, trainer: Any, model: Any) -> dict[str, float]:
        """Metrics this callback measures after a validation (added to the validation metrics)."""
        return {}

    def on_validation_end(self, trainer: Any, model: Any, metrics: dict[str, Any]) -> None:
        pass

    def on_save_checkpoint(self, trainer: Any, path: str | os.PathLike) -> None:
        pass


def add_validation_metrics(trainer: Any, metrics: dict[str, Any]) -> dict[str, float]:
    """Ask every callback of ``trainer`` for its :meth:`~BaseCallback.validation_metrics`, add them to
    ``metrics``, to ``trainer.history`` (one value per validation) and to the logs (``val/<name>``
    without the ``val_`` prefix); returns them. The trainer calls it after each validation."""
    extra: dict[str, float] = {}
    for cb in trainer.callbacks:
        extra.update({str(k): float(v) for k, v in (cb.validation_metrics(trainer, trainer.model) or {}).items()})
    for name, value in extra.items():
        trainer.history.setdefault(name, []).append(value)
    metrics.update(extra)
    if extra:
        trainer._log({f"val/{k[4:] if k.startswith('val_') else k}": v for k, v in extra.items()}, trainer.global_step)
    return extra


def collapse_advice(trainer: Any) -> str:
    """What to try against collapse, with the run's current values: raise the regularizer weight (or
    add a regularizer), lower the learning rate, lower the EMA momentum."""
    loss = getattr(trainer, "loss_fn", None)
    tips = []
    if getattr(loss, "regularizer", None) == "none":
        tips.append("add an anti-collapse regularizer (loss.regularizer: vc or sigreg)")
    elif isinstance(getattr(loss, "regularizer_weight", None), (int, float)):
        tips.append(f"raise the regularizer weight (loss.regularizer_weight, now {loss.regularizer_weight:g})")
    else:
        tips.append("raise the regularizer weight")
    if getattr(trainer, "optimizer", None) is not None:
        tips.append(f"lower the learning rate (training.learning_rate, now {trainer.base_lrs[0]:.3g})")
    model = getattr(trainer, "model", None)
    if getattr(model, "target_encoder", None) is not None and isinstance(getattr(model, "momentum_start", None), float):
        tips.append(f"lower the EMA momentum (model.ema_momentum, now {model.momentum_start:g})")
    return "Try: " + "; ".join(tips) + "."


def _warn_collapse(step: int, metric: str, value: float, limit: float, detail: str, trainer: Any) -> None:
    msg = (f"representation collapse suspected at step {step}: {metric} {value:.3g} < {limit:.3g} ({detail}). "
           + collapse_advice(trainer))
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
    log.warning(msg)


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


def _rank_room(dim: float, max_rank: float, samples: str) -> str:
    """What a rank threshold is a fraction of: the embedding width, or when the samples measured
    are fewer, the most rank they allow."""
    if max_rank >= dim:
        return f"{int(dim)} dims"
    return f"{int(max_rank)}, the most rank {samples} allow ({int(dim)} dims)"


class CollapseMonitor(BaseCallback):
    """Watch for representation collapse during training.

    Every ``every_n_steps`` optimizer steps, embeds a fixed held-out batch (the first batch of the
    validation loader, else of the training loader, or ``batch`` when given) with the online
    encoder, and logs its effective rank (RankMe) and mean per-dimension std as
    ``collapse/effective_rank`` and ``collapse/embedding_std``; values are kept in ``records``.
    Warns once when the effective rank falls under ``rank_fraction`` of the embedding width (of the
    batch size when that is smaller: a batch of N rows has rank at most N) or the embeddings stop
    varying (mean std < 1e-3).
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
        return {"effective_rank": rank, "embedding_std": std, "embedding_dim": float(z.shape[1]),
                "max_rank": float(min(z.shape[1], len(z)))}

    def on_batch_end(self, trainer: Any, model: Any, outputs: dict[str, Any], batch: Any, batch_idx: int) -> None:
        step = int(trainer.global_step)
        if step % self.every_n_steps == 0:
            self._record(trainer, model)

    def on_train_end(self, trainer: Any, model: Any) -> None:
        self._record(trainer, model)  # the value at the end of the run (unless this step was measured)

    def _record(self, trainer: Any, model: Any) -> None:
        step = int(trainer.global_step)
        if self.batch is None or step == self._last_step or not hasattr(model, "embed"):
            return
        self._last_step = step
        m = self.measure(trainer, model)
        self.records.append({"step": step, **m})
        trainer._log({"collapse/effective_rank": m["effective_rank"], "collapse/embedding_std": m["embedding_std"]}, step)
        limit = self.rank_fraction * m["max_rank"]
        if not self.warned and (m["effective_rank"] < limit or m["embedding_std"] < 1e-3):
            self.warned = True
            if m["effective_rank"] < limit:
                metric, value, bound = "RankMe effective rank", m["effective_rank"], limit
                detail = f"{self.rank_fraction:.0%} of {_rank_room(m['embedding_dim'], m['max_rank'], 'held-out samples')}; embedding std {m['embedding_std']:.3g}"
            else:
                metric, value, bound, detail = "embedding std", m["embedding_std"], 1e-3, "the embeddings stopped varying"
            _warn_collapse(step, metric, value, bound, detail, trainer)


#: RankMe (Garrido et al., 2023), the effective rank of held-out embeddings: the same callback as
#: :class:`CollapseMonitor`, under the name of the measure.
RankMe = CollapseMonitor


def _is_label(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.dim() == 0 and not value.is_floating_point()
    return isinstance(value, int) and not isinstance(value, bool)


def labelled_data(dataset: Any) -> Any:
    """The labelled inputs of ``dataset`` for probes, or None when it has no labels.

    ``dataset.probe_data()`` when the dataset defines it (clean inputs and labels: an ``(inputs, labels)``
    pair of tensors or a dataset of ``(input, label)`` items; :class:`~jepa.data.DigitsPairs` does, and a
    :class:`~jepa.trainer.fixed_views.FixedViews` reads it through), else the dataset itself when its
    items are ``(input, int label)`` pairs and it has a ``labels`` attribute with two or more classes, all
    >= 0 (a labelled :class:`~jepa.data.ImageFolderDataset`; -1 marks unlabelled images).
    """
    if dataset is None:
        return None
    fn = getattr(dataset, "probe_data", None)
    if callable(fn):
        return fn()
    labels = getattr(dataset, "labels", None)
    try:
        labels = torch.as_tensor(labels) if labels is not None else None
    except (TypeError, ValueError, RuntimeError):
        return None
    if labels is None or labels.dim() != 1 or len(labels) == 0 or labels.is_floating_point():
        return None
    if int(labels.min()) < 0 or len(torch.unique(labels)) < 2:
        return None
    item = dataset[0]
    return dataset if isinstance(item, (tuple, list)) and len(item) == 2 and _is_label(item[1]) else None


def _labelled_tensors(data: Any, batch_size: int, limit: int | None, seed: int) -> tuple[Any, torch.Tensor]:
    """``(inputs, labels)`` of labelled ``data``: ``inputs`` a tensor, or a list of input batches for a
    dataset (read once, at most ``limit`` items: a seeded random subset beyond)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data[0], torch.as_tensor(data[1]).reshape(-1)
        if len(x) != len(y):
            raise ValueError(f"OnlineProbe: inputs and labels differ in length ({len(x)} vs {len(y)})")
        if limit is not None and len(x) > limit:
            keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
            x, y = x[keep], y[keep]
        return x, y.long()
    if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise TypeError(f"OnlineProbe: labelled data must be an (inputs, labels) pair of tensors or a dataset of (input, label) items, got {type(data).__name__}")
    index = list(range(len(data)))
    if limit is not None and len(index) > limit:
        index = sorted(torch.randperm(len(index), generator=torch.Generator().manual_seed(seed))[:limit].tolist())
    batches, labels = [], []
    for start in range(0, len(index), batch_size):
        items = [data[i] for i in index[start : start + batch_size]]
        batches.append(torch.stack([torch.as_tensor(it[0]) for it in items]))
        labels.append(torch.as_tensor([int(it[1]) for it in items]))
    return batches, torch.cat(labels)


class OnlineProbe(BaseCallback):
    """Online probes of the representation: at every validation, a linear classifier and a cosine kNN on
    frozen features of labelled training data, scored on the validation split.

    Adds ``val_accuracy`` (linear) and ``val_knn_accuracy`` (kNN, ``k`` neighbours) to the validation
    metrics, so ``ModelCheckpoint(monitor="val_accuracy", mode="max")``, ``EarlyStopping`` and your
    callbacks can follow them; they are logged (``val/accuracy``, ``val/knn_accuracy``) and kept in
    ``history``. Features are ``model.embed(x)`` (pooled encoder embeddings) of clean inputs in eval
    mode, without gradients; the linear classifier is a closed-form ridge classifier on standardized
    features (:func:`~jepa.trainer.health.ridge_probe_accuracy`), cheap enough for every validation. The
    final report's probes (logistic regression, :mod:`jepa.trainer.eval`) are separate.

    Args:
        train_data, val_data: labelled data (an ``(inputs, labels)`` pair of tensors or a dataset of
            ``(input, label)`` items); None: found in the trainer's training and validation datasets
            when training starts (:func:`labelled_data`). Without labelled data the probe does nothing.
        k: neighbours of the kNN probe.
        ridge: L2 penalty of the linear probe (times the number of training samples).
        batch_size: samples embedded at a time.
        max_train_samples: at most this many training samples: beyond, the fixed subset
            ``torch.randperm(N, generator=torch.Generator().manual_seed(seed))[:max_train_samples]``
            (sorted). Embedding is the probe's cost (a forward pass per sample and validation); 384
            samples keep it under a tenth of an epoch of the default digits run (about 6% on 2 threads,
            8% on 1, with its 1024-wide flattened embedding). None: all.
        seed: seed of that subset.

    ``records`` keeps ``{"step", "val_accuracy", "val_knn_accuracy", "seconds"}`` per validation of this
    process; ``start_step`` is the trainer's optimizer step when training (or a resumed run) started.
    """

    def __init__(self, train_data: Any = None, val_data: Any = None, k: int = 20, ridge: float = 1e-2,
                 batch_size: int = 512, max_train_samples: int | None = 384, seed: int = 0) -> None:
        owner = "OnlineProbe"
        self.k = check_int("k", k, minimum=1, owner=owner)
        self.ridge = check_number("ridge", ridge, low=0, low_open=True, owner=owner)
        self.batch_size = check_int("batch_size", batch_size, minimum=1, owner=owner)
        self.max_train_samples = check_int("max_train_samples", max_train_samples, minimum=1, optional=True, owner=owner)
        self.seed = check_int("seed", seed, minimum=0, owner=owner)
        self.train_data, self.val_data = train_data, val_data
        self._train: tuple[Any, torch.Tensor] | None = None
        self._val: tuple[Any, torch.Tensor] | None = None
        self.records: list[dict[str, float]] = []
        self.start_step = 0

    @property
    def active(self) -> bool:
        """True once labelled training and validation data are known."""
        return self.train_data is not None and self.val_data is not None

    def on_train_start(self, trainer: Any, model: Any) -> None:
        self.start_step = int(getattr(trainer, "global_step", 0))  # after a resume: where this process starts
        for attr, loader in (("train_data", "_active_train_loader"), ("val_data", "_active_val_loader")):
            if getattr(self, attr) is None:
                setattr(self, attr, labelled_data(getattr(getattr(trainer, loader, None), "dataset", None)))
        if not self.active:
            log.info("OnlineProbe: no labelled training and validation data found; no val_accuracy this run")

    def _embed(self, model: Any, inputs: Any, device: torch.device) -> torch.Tensor:
        chunks = inputs if isinstance(inputs, list) else [inputs[i : i + self.batch_size] for i in range(0, len(inputs), self.batch_size)]
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
        out = []
        with evaluating(model), torch.no_grad():
            for x in chunks:
                x = x.to(device, dtype=dtype) if (x.is_floating_point() and dtype is not None) else x.to(device)
                z = model.embed(x)
                out.append(z.reshape(len(z), -1).float())
        return torch.cat(out)

    def validation_metrics(self, trainer: Any, model: Any) -> dict[str, float]:
        if not self.active or not hasattr(model, "embed"):
            return {}
        start = time.perf_counter()
        if self._train is None:
            self._train = _labelled_tensors(self.train_data, self.batch_size, self.max_train_samples, self.seed)
            self._val = _labelled_tensors(self.val_data, self.batch_size, None, self.seed)
        device = getattr(trainer, "device", torch.device("cpu"))
        ztr, zva = self._embed(model, self._train[0], device), self._embed(model, self._val[0], device)
        ytr, yva = self._train[1], self._val[1]
        out = {"val_accuracy": ridge_probe_accuracy(ztr, ytr, zva, yva, self.ridge), "val_knn_accuracy": knn_accuracy(ztr, ytr, zva, yva, self.k)}
        self.records.append({"step": int(getattr(trainer, "global_step", 0)), **out, "seconds": time.perf_counter() - start})
        return out


class LiDAR(BaseCallback):
    """LiDAR (Thilak et al., 2023) of held-out embeddings: every ``every_n_steps`` optimizer steps (and at
    the end of training), ``num_views`` augmented views of each of ``num_samples`` held-out samples are
    embedded with the online encoder and :func:`~jepa.trainer.health.lidar` of them is logged as
    ``collapse/lidar``; values are kept in ``records``. Warns once, naming the step and what to try,
    when LiDAR falls under ``rank_fraction`` of the embedding width (of ``num_samples - 1``, the most
    rank the discriminant of that many samples has, when smaller).

    The views are drawn once when training starts from the validation dataset (else the training
    dataset): item ``i``'s view ``v`` is the dataset's own augmentation with the global RNGs seeded
    from ``(seed + v, i)`` (:class:`~jepa.trainer.fixed_views.FixedViews`'s rule; a ``FixedViews``
    is unwrapped so its views differ), and the encoder embeds their first input (``state_t``, ...).
    A dataset that does not augment gives identical views: LiDAR then measures only the spread between
    samples.
    """

    def __init__(self, every_n_steps: int = 200, num_samples: int = 64, num_views: int = 8, rank_fraction: float = 0.05,
                 seed: int = 0) -> None:
        owner = "LiDAR"
        self.every_n_steps = check_int("every_n_steps", every_n_steps, minimum=1, owner=owner)
        self.num_samples = check_int("num_samples", num_samples, minimum=2, owner=owner)
        self.num_views = check_int("num_views", num_views, minimum=2, owner=owner)
        self.rank_fraction = check_number("rank_fraction", rank_fraction, low=0.0, high=1.0, low_open=True, high_open=True, owner=owner)
        self.seed = check_int("seed", seed, minimum=0, owner=owner)
        self.views: torch.Tensor | None = None
        self.records: list[dict[str, float]] = []
        self.warned = False
        self._last_step = -1

    def on_train_start(self, trainer: Any, model: Any) -> None:
        loader = getattr(trainer, "_active_val_loader", None) or getattr(trainer, "_active_train_loader", None)
        dataset = getattr(loader, "dataset", None)
        if self.views is not None or dataset is None:
            return
        base = dataset.dataset if isinstance(dataset, FixedViews) else dataset
        n = min(self.num_samples, len(base))
        if n < 2:
            return
        views = []
        for i in range(n):
            for v in range(self.num_views):
                with seeded_rngs(sample_seed(self.seed + v, i)):
                    views.append(torch.as_tensor(first_input(base[i])))
        self.views = torch.stack(views)

    def measure(self, trainer: Any, model: Any) -> dict[str, float]:
        """LiDAR of the held-out views now (and the embedding width)."""
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
        x = self.views.to(trainer.device, dtype=dtype) if (self.views.is_floating_point() and dtype is not None) else self.views.to(trainer.device)
        with evaluating(model), torch.no_grad():
            z = model.embed(x).float()
        z = z.reshape(-1, self.num_views, z.reshape(len(z), -1).shape[1])
        return {"lidar": lidar(z), "embedding_dim": float(z.shape[-1]), "max_rank": float(min(z.shape[-1], len(z) - 1))}

    def on_batch_end(self, trainer: Any, model: Any, outputs: dict[str, Any], batch: Any, batch_idx: int) -> None:
        if int(trainer.global_step) % self.every_n_steps == 0:
            self._record(trainer, model)

    def on_train_end(self, trainer: Any, model: Any) -> None:
        self._record(trainer, model)

    def _record(self, trainer: Any, model: Any) -> None:
        step = int(trainer.global_step)
        if self.views is None or step == self._last_step or not hasattr(model, "embed"):
            return
        self._last_step = step
        m = self.measure(trainer, model)
        self.records.append({"step": step, **m})
        trainer._log({"collapse/lidar": m["lidar"]}, step)
        limit = self.rank_fraction * m["max_rank"]
        if not self.warned and m["lidar"] < limit:
            self.warned = True
            room = _rank_room(m["embedding_dim"], m["max_rank"], "held-out samples less one")
            _warn_collapse(step, "LiDAR", m["lidar"], limit, f"{self.rank_fraction:.0%} of {room}", trainer)
