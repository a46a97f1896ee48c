"""The training loop: :class:`BaseTrainer`, :class:`JEPATrainer` and :func:`create_trainer`.

One training step, for any model and loss that follow the model-step protocol
(:mod:`jepa.trainer.objective`)::

    batch = move_to_device(batch, device)            # whatever the loader yields
    outputs = model_outputs(model, batch)            # through DDP when distributed
    outputs = gather_outputs(outputs, loss inputs)   # distributed only: global batch statistics
    terms = loss_terms(loss_fn, outputs)             # {"loss": ..., other terms logged}

* **Model**: define ``forward_batch(batch) -> dict`` to consume the whole batch (images with
  multi-block mask indices and validity masks, trajectory windows of observations and actions,
  ...) and return named outputs (``prediction``, ``target``, ``context``, ``projection``,
  ``valid``, any names). Models with ``forward_features(*pair)`` (:class:`~jepa.models.JEPA`) or a
  ``forward`` returning ``(prediction, target)`` work as they are, on ``(state_t, state_t1)`` /
  ``(state_t, action_t, state_t1)`` batches. Optional: ``update_target_encoder()`` (called after
  every optimizer step: the EMA target), ``set_total_steps(n)`` (the length of the run, for
  momentum schedules), ``embed(x)`` (probes, collapse monitor), ``unbatched_outputs`` (outputs
  that are not batch-first, never gathered).
* **Loss**: any callable, or an object with ``terms(...) -> dict``; it is called with the outputs
  its parameters name (``def sigreg(projection)``, ``def loss(prediction, target, valid)``,
  ``**kwargs`` takes them all); see :mod:`jepa.trainer.objective`.
* **Distributed**: DDP wraps the model step (:class:`jepa.trainer.distributed.ModelStep`); every
  tensor output the loss takes that is batch-first is gathered across ranks with gradients
  (ranks may hold different numbers of rows), so the loss sees the global batch.
* **Callbacks** (:mod:`jepa.trainer.callbacks`) get the detached loss terms in ``on_batch_end``;
  ``trainer.step_outputs`` holds the detached outputs of the last training step on this rank
  (features for online probes), set when the trainer has callbacks.
* Subclasses may override :meth:`BaseTrainer.training_step` / :meth:`BaseTrainer.validation_step`
  (return a dict with ``loss``) for anything else; the loop, checkpoints and logging stay.

Training, validation and :meth:`BaseTrainer.evaluate` compute the loss with these same calls.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import logging
import math
import os
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from jepa import io as jio
from jepa.amp import GradScaler
from jepa.trainer import distributed as dist_glue
from jepa.trainer.batches import move_to_device, resolve_device, unpack_batch
from jepa.trainer.builders import trainer_kwargs
from jepa.trainer.callbacks import BaseCallback, CollapseMonitor
from jepa.trainer.checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_SUFFIXES,
    TrainerCheckpoints,
    find_latest_checkpoint,
    model_from_checkpoint_state,
    rng_state,
    set_rng_state,
)
from jepa.trainer.checks import check_choice, check_int, check_number, check_type
from jepa.trainer.distributed import PeerFailureError
from jepa.trainer.eval import JEPAEvaluator
from jepa.trainer.losses import JEPALoss
from jepa.trainer.modes import evaluating
from jepa.trainer.nonfinite import NonFinitePolicy
from jepa.trainer.objective import loss_inputs, loss_terms, model_outputs, unbatched_outputs
from jepa.trainer.optimizers import build_adamw
from jepa.trainer.schedulers import warmup_cosine_schedule

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_SUFFIXES",
    "BaseTrainer",
    "JEPATrainer",
    "PeerFailureError",
    "create_trainer",
    "find_latest_checkpoint",
    "model_from_checkpoint_state",
    "move_to_device",
    "resolve_device",
    "unpack_batch",
]

log = logging.getLogger("jepa")


def _explicit(args: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of :meth:`BaseTrainer.__init__` in ``args`` that differ from their defaults
    (with a config, those replace the config's values)."""
    params = inspect.signature(BaseTrainer.__init__).parameters
    plain = (str, int, float, bool, type(None))

    def is_default(name: str, value: Any) -> bool:
        default = params[name].default
        return value is default or (isinstance(value, plain) and type(value) is type(default) and value == default)

    return {k: v for k, v in args.items() if not is_default(k, v)}


def _close_at_exit(ref: Any) -> None:
    trainer = ref()
    if trainer is not None:
        with contextlib.suppress(Exception):
            trainer.close()


class BaseTrainer(TrainerCheckpoints):
    """The training loop. Subclass it and override :meth:`training_step` (and optionally
    :meth:`validation_step`, :meth:`compute_regularization`) for a custom objective; the loop,
    callbacks, checkpoints, progress bar and logging stay.

    Build it from a model and optimizer (v1 API) or from a config (v0 API): ``BaseTrainer(config)``
    with a :class:`~jepa.config.Config`, a YAML path or a shipped config name builds the data
    (the embedded digits when the config names no other dataset), the model, the loss, the
    optimizer and the schedule from the config (:func:`jepa.trainer.builders.trainer_kwargs`);
    then ``train()`` needs no arguments. Arguments you pass next to a config replace its values.

    One optimizer step per ``gradient_accumulation`` batches; after each optimizer step the EMA
    target encoder is updated (momentum on its cosine schedule) and a per-step scheduler steps.

    Args:
        model: the model (see the model-step protocol in :mod:`jepa.trainer.trainer`), or a config.
        optimizer: a torch optimizer over the model's trainable parameters.
        scheduler: an LR scheduler instance; or ``"cosine"`` / a callable
            ``(optimizer, total_steps) -> scheduler``, built at :meth:`train` once the number of
            steps is known (that is what :func:`create_trainer` does). A
            :class:`~jepa.trainer.callbacks.LearningRateScheduler` callback, when given, owns the
            learning rate instead (the scheduler is then not used; a warning says so).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
        logger: None, a ``logging.Logger``, or any object with ``log_metrics(metrics, step)``.
        loss_fn: called with the model outputs it names (:mod:`jepa.trainer.objective`);
            default :class:`~jepa.trainer.losses.JEPALoss`.
        gradient_clip_norm: clip the global gradient norm to this value (None: no clipping).
        gradient_accumulation: batches per optimizer step.
        progress_bar: show a tqdm bar with loss and lr.
        save_dir: where :meth:`save_checkpoint` writes (``best_model.pt`` and ``last.pt`` too).
        scheduler_interval: ``"step"`` or ``"epoch"``; default ``"step"`` for schedulers built by
            the trainer, ``"epoch"`` for a scheduler instance you pass.
        log_every_n_steps: how often the loss is read back to the host for the bar/logger.
        save_best: write ``best_model.pt`` whenever the validation (else training) loss improves.
        save_last: write ``last.pt`` at the end of :meth:`train`.
        checkpoint_every_n_epochs: also write ``epoch_<n>.pt`` every n epochs (resumable).
        warmup_fraction, min_lr_ratio: shape of the ``"cosine"`` schedule (linear warmup over this
            fraction of the steps, then cosine decay to ``min_lr_ratio`` times the base lr).
        callbacks: :class:`~jepa.trainer.callbacks.BaseCallback` instances.
        mixed_precision: None, ``"bf16"`` or ``"fp16"`` (autocast; fp16 also scales the loss with a
            GradScaler; bf16 needs none). ``True`` means bf16.
        val_every_n_epochs: validate every n epochs (when a validation loader is given).
        collapse_check_every_n_steps: add a :class:`~jepa.trainer.callbacks.CollapseMonitor` that
            logs the effective rank and embedding std of a held-out batch every n steps and warns
            once when the rank collapses (None: off).
        distributed: train under ``torchrun`` with DistributedDataParallel: the process group is
            joined (or created from the torchrun environment: NCCL on CUDA, gloo on CPU), the device
            is ``cuda:LOCAL_RANK``, loaders are sharded with a DistributedSampler, the loss is
            computed on the outputs gathered from all ranks (so batch statistics are global), logged
            losses are means over ranks, and only rank 0 shows progress, logs and writes
            checkpoints. Gradient accumulation skips the all-reduce on all but the last micro-batch.
        world_size, local_rank, distributed_rank: checked against the process group when given.
        resume: ``"auto"`` continues from the newest valid checkpoint in ``save_dir`` when
            :meth:`train` starts (a torchrun restart picks up where the run stopped); a path
            continues from that checkpoint; None starts fresh.
        ddp_find_unused_parameters: passed to DDP (True tolerates parameters a loss leaves unused,
            e.g. a projector with the regularizer switched off).
        strategy: ``"ddp"`` (replicated model). ``"fsdp"`` (sharded model) raises
            ``NotImplementedError`` for now.
        on_nan: what a non-finite (NaN/inf) loss does (:class:`~jepa.trainer.nonfinite.NonFinitePolicy`).
            ``"raise"`` (default): stop with a ``FloatingPointError`` naming the step, epoch, batch
            and the non-finite terms; the weights are those before that step. ``"skip"``: drop that
            optimizer step (gradients discarded, no update, no EMA or scheduler step), count it in
            ``nan_skipped_steps``, and raise after ``max_nan_skips`` dropped steps in a row.
        nan_check_every_n_steps: how often the loss is checked on the host. Default: every step on
            the CPU; on GPUs every ``log_every_n_steps`` steps when the optimizer can skip a step on
            device (fused Adam/AdamW: a device-side flag, no host sync per step, makes every update
            after a non-finite loss a no-op until the check raises), else every step.
        checkpoint_every_n_steps: also write ``latest.pt`` every n optimizer steps; it records the
            position inside the epoch, so a resumed run continues at the next batch (same data
            order and RNG streams as an uninterrupted run).
        async_checkpoint: the checkpoints :meth:`train` writes (best, last, every n epochs/steps)
            are snapshotted to CPU memory and written by a background thread
            (:func:`jepa.io.save` with ``async_=True``): the loop is blocked only for the copy. At
            most one write is in flight; :meth:`train` waits for the last one before returning.
            ``on_save_checkpoint`` callbacks then see a path whose file may still be in flight.
        train_loader, val_loader, num_epochs: defaults of :meth:`train` (a trainer built from a
            config gets the config's data and ``training.epochs``).
        config: the :class:`~jepa.config.Config` the trainer was built from (kept as ``config``).

    Checkpoints hold the weights, EMA target, optimizer, scheduler, loss scaler, counters and every
    RNG: torch, numpy and python, per rank under DDP, and the ``torch.Generator`` of the training
    and validation loaders (``DataLoader(..., generator=g)``), so a run resumed in a new process
    with the same loaders continues bit-identically.
    """

    def __init__(
        self,
        model: Any = None,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        device: str | torch.device = "auto",
        logger: Any = None,
        loss_fn: Callable[..., Any] | None = None,
        gradient_clip_norm: float | None = None,
        gradient_accumulation: int = 1,
        progress_bar: bool = True,
        save_dir: str | os.PathLike = "./checkpoints",
        *,
        scheduler_interval: str | None = None,
        log_every_n_steps: int = 10,
        save_best: bool = True,
        save_last: bool = True,
        checkpoint_every_n_epochs: int | None = None,
        warmup_fraction: float = 0.05,
        min_lr_ratio: float = 0.01,
        callbacks: list | None = None,
        mixed_precision: str | bool | None = None,
        val_every_n_epochs: int = 1,
        collapse_check_every_n_steps: int | None = None,
        distributed: Any = False,
        world_size: int | None = None,
        local_rank: int | None = None,
        distributed_rank: int | None = None,
        resume: str | os.PathLike | None = None,
        ddp_find_unused_parameters: bool = True,
        strategy: str = "ddp",
        on_nan: str = "raise",
        max_nan_skips: int = 10,
        nan_check_every_n_steps: int | None = None,
        checkpoint_every_n_steps: int | None = None,
        async_checkpoint: bool = False,
        train_loader: Any = None,
        val_loader: Any = None,
        num_epochs: int | None = None,
        config: Any = None,
    ) -> None:
        if model is None:
            raise TypeError(f"{type(self).__name__}: pass a config (Config, YAML path or shipped name) or a model")
        if not isinstance(model, nn.Module):  # v0: a config; builders turn it into objects
            args = {k: v for k, v in locals().items() if k not in ("self", "model", "__class__")}
            BaseTrainer.__init__(self, **trainer_kwargs(model, _explicit(args)))
            return
        if strategy == "fsdp":
            raise NotImplementedError(
                "strategy='fsdp' (FSDP2 fully_shard with a sharded EMA target) is not implemented yet; "
                "use strategy='ddp' (the model must fit on one device)"
            )
        check_choice("strategy", strategy, ("ddp", "fsdp"))
        if optimizer is None:
            raise ValueError("JEPATrainer: optimizer is required (or use jepa.trainer.create_trainer)")
        self.config, self.train_loader, self.val_loader = config, train_loader, val_loader
        self.num_epochs = check_int("num_epochs", num_epochs, minimum=1, optional=True)
        self.dist: dist_glue.DistributedContext | None = None
        if distributed:
            self.dist = distributed if isinstance(distributed, dist_glue.DistributedContext) else (
                dist_glue.init_distributed(world_size, local_rank, device, rank=distributed_rank)
            )
            device = self.dist.device
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.optimizer = optimizer
        self.base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        self.loss_fn = loss_fn if loss_fn is not None else JEPALoss()
        self.logger = logger
        self.progress_bar = progress_bar
        self.log_every_n_steps = check_int("log_every_n_steps", log_every_n_steps, minimum=1)
        self.val_every_n_epochs = check_int("val_every_n_epochs", val_every_n_epochs, minimum=1)
        self._init_optimization(scheduler, scheduler_interval, warmup_fraction, min_lr_ratio, gradient_clip_norm, gradient_accumulation, mixed_precision)
        self._init_checkpoints(save_dir, save_best, save_last, checkpoint_every_n_epochs, checkpoint_every_n_steps, async_checkpoint, resume)
        self.nonfinite = NonFinitePolicy(on_nan, max_nan_skips, nan_check_every_n_steps)
        self.callbacks = list(callbacks or [])
        if collapse_check_every_n_steps:
            self.callbacks.append(CollapseMonitor(every_n_steps=collapse_check_every_n_steps))
        for cb in self.callbacks:
            check_type("callbacks", cb, BaseCallback, what="BaseCallback instances")
        self.current_epoch = self.global_step = 0
        self.best_loss = math.inf
        self.history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "lr": []}
        self.should_stop = False
        self.max_epochs: int | None = self.num_epochs
        self.step_outputs: dict[str, Any] | None = None
        self._lr_callback: BaseCallback | None = None
        self.parallel: dist_glue.DataParallel | None = None
        if self.dist is not None:
            self.parallel = dist_glue.DataParallel(self.model, self.dist, find_unused_parameters=ddp_find_unused_parameters)
            if self.dist.owns_group:
                atexit.register(_close_at_exit, weakref.ref(self))

    def _init_optimization(self, scheduler: Any, interval: str | None, warmup_fraction: float, min_lr_ratio: float,
                           clip: float | None, accumulation: int, mixed_precision: str | bool | None) -> None:
        """Scheduler (instance now, or a spec built at :meth:`train`), clipping, accumulation, autocast and loss scaling."""
        self.gradient_accumulation = check_int("gradient_accumulation", accumulation, minimum=1)
        self.gradient_clip_norm = check_number("gradient_clip_norm", clip, low=0, low_open=True, optional=True)
        check_choice("scheduler_interval", interval, (None, "step", "epoch"))
        self.warmup_fraction = check_number("warmup_fraction", warmup_fraction, low=0.0, high=1.0, high_open=True)
        self.min_lr_ratio = min_lr_ratio
        self._scheduler_spec = scheduler
        self._pending_scheduler_state: dict | None = None
        if hasattr(scheduler, "step") and hasattr(scheduler, "state_dict"):
            self.scheduler, self.scheduler_interval = scheduler, interval or "epoch"
        else:
            if scheduler is not None and not (scheduler == "cosine" or callable(scheduler)):
                raise ValueError(f"scheduler must be a scheduler instance, 'cosine', a callable or None; got {scheduler!r}")
            self.scheduler, self.scheduler_interval = None, interval or "step"
        if mixed_precision is True:
            mixed_precision = "bf16"
        if mixed_precision in (False, None, "no", "fp32", "none"):
            mixed_precision = None
        self.mixed_precision = check_choice("mixed_precision", mixed_precision, (None, "bf16", "fp16"))
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
        # fp16 needs loss scaling (tiny gradients underflow); bf16 has fp32's range and needs none.
        self.scaler = GradScaler(self.device.type) if mixed_precision == "fp16" else None

    def _init_checkpoints(self, save_dir: Any, save_best: bool, save_last: bool, every_epochs: int | None,
                          every_steps: int | None, async_checkpoint: bool, resume: Any) -> None:
        self.save_dir = Path(save_dir)
        self.save_best, self.save_last = save_best, save_last
        self.checkpoint_every_n_epochs = check_int("checkpoint_every_n_epochs", every_epochs, minimum=1, optional=True)
        self.checkpoint_every_n_steps = check_int("checkpoint_every_n_steps", every_steps, minimum=1, optional=True)
        self.async_checkpoint = bool(async_checkpoint)
        if resume is not None and not isinstance(resume, (str, os.PathLike)):
            raise ValueError(f"resume must be None, 'auto' or a checkpoint path, got {resume!r}")
        self.resume, self._resumed = resume, False
        self._epoch_progress: dict[str, Any] | None = None  # mid-epoch position (for step checkpoints)
        self._resume_position: dict[str, Any] | None = None
        self._pending_loader_rng: dict[str, Any] | None = None  # loaders' generators, applied in train()

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        """Loss terms of one batch (the model-step protocol above); ``loss`` is what is minimised,
        other entries are logged."""
        grad = torch.is_grad_enabled()
        # Under DDP the forward of a training step goes through the DDP wrapper (gradient sync).
        outputs = self.parallel.forward(batch) if (self.parallel is not None and grad) else model_outputs(self.model, batch)
        if grad and self.callbacks:
            self.step_outputs = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in outputs.items()}
        if self.multi_process:
            # Every rank computes the loss on the global batch (batch statistics of the regularizer,
            # batch-normalized targets and contrastive negatives see all ranks' samples): the
            # 2-process run optimizes the same objective as 1 process with twice the batch.
            outputs = dist_glue.gather_outputs(outputs, loss_inputs(self.loss_fn, outputs), unbatched_outputs(self.model))
        return loss_terms(self.loss_fn, outputs)

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor] | None:
        """Loss terms of one validation batch (no gradient); returning None skips the batch."""
        return self.training_step(batch, batch_idx)

    def compute_regularization(self) -> torch.Tensor:
        """Weight regularization: half the sum of squared trainable weight matrices (biases, norms
        and 1-d parameters excluded). Add it to a custom ``training_step`` loss with a weight."""
        total = torch.zeros((), device=self.device)
        for p in self.model.parameters():
            if p.requires_grad and p.ndim > 1:
                total = total + 0.5 * p.pow(2).sum()
        return total

    def _autocast(self) -> Any:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _callback(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    # ------------------------------------------------------------------ loop
    def train(self, train_loader: DataLoader | None = None, num_epochs: int | None = None, val_loader: DataLoader | None = None) -> dict[str, list[float]]:
        """Train until ``num_epochs`` epochs are done (continuing after a loaded checkpoint).

        Every argument defaults to the one given at construction (a trainer built from a config:
        the config's data and ``training.epochs``). Returns the history: ``train_loss``,
        ``val_loss`` (when validation ran) and ``lr``, one value per epoch.

        Distributed (``distributed=True``): loaders without a ``DistributedSampler`` are rebuilt with
        one (see :func:`jepa.trainer.distributed.distributed_loader`), logged losses are means over
        ranks, and only rank 0 shows the progress bar, logs and writes checkpoints.
        """
        if train_loader is None:
            if self.train_loader is None:
                raise TypeError("train() needs a train_loader (only a trainer built from a config has a default one)")
            train_loader, val_loader = self.train_loader, val_loader if val_loader is not None else self.val_loader
        if num_epochs is None and self.num_epochs is None:
            raise TypeError("train() needs num_epochs (only a trainer built from a config has a default)")
        num_epochs = check_int("num_epochs", self.num_epochs if num_epochs is None else num_epochs, minimum=1)
        if self.parallel is not None:
            if self.parallel.ddp is None:
                raise RuntimeError("this distributed trainer was closed (trainer.close()); build a new one to train again")
            seed = int(getattr(getattr(self.config, "training", None), "seed", 0) or 0)
            train_loader, val_loader = self.parallel.shard(train_loader, seed=seed), self.parallel.shard(val_loader, shuffle=False, seed=seed)
        self.max_epochs, self.should_stop = num_epochs, False
        self._active_train_loader, self._active_val_loader = train_loader, val_loader
        total_steps = self._steps_per_epoch(train_loader) * num_epochs
        self._maybe_resume()
        self._setup_lr(total_steps)
        if hasattr(self.model, "set_total_steps"):
            self.model.set_total_steps(total_steps)
        bar = self._progress(total_steps)
        check_every = self.nonfinite.interval(self.device, self.scaler, self.optimizer, self.log_every_n_steps)
        if self.parallel is not None:
            self.parallel.start_run()
        self._start(train_loader, val_loader)
        try:
            for epoch in range(self.current_epoch, num_epochs):
                sums = self._train_epoch(epoch, train_loader, bar, check_every)
                self._end_epoch(epoch, sums, val_loader)
                if self.should_stop:
                    break
            if self.save_last:
                self._save_in_loop("last.pt")
            self._callback("on_train_end", self.model)
        except KeyboardInterrupt:
            # No collectives here: other ranks may be interrupted at a different point.
            if self.is_global_zero:
                path = self.save_checkpoint("interrupted.pt")
                log.warning("training interrupted at step %d; state saved to %s", self.global_step, path)
            raise
        except BaseException as exc:
            if self.multi_process:
                peer = dist_glue.abort_run(self.dist, exc, self.global_step)
                if peer is not None:
                    raise peer from None
            raise
        finally:
            if bar is not None:
                bar.close()
            if self.async_checkpoint and self.is_global_zero:
                jio.wait()  # the last checkpoint is on disk when train() returns (or raises)
        return self.history

    def _start(self, train_loader: Any, val_loader: Any) -> None:
        """``on_train_start`` callbacks, which may draw a batch (the collapse monitor does) without
        moving the run's RNG streams; then the loaders' generators of a restored checkpoint."""
        loaders = {"train": train_loader, "val": val_loader}
        saved = rng_state(loaders)
        self._callback("on_train_start", self.model)
        set_rng_state(saved, loaders)
        if self._pending_loader_rng:
            set_rng_state({**saved, "loaders": self._pending_loader_rng}, loaders)
        self._pending_loader_rng = None

    def _train_epoch(self, epoch: int, loader: Any, bar: Any, check_every: int) -> list:
        """One epoch of batches; returns ``[loss sum (device tensor), batches]`` of its finite steps."""
        self.current_epoch = epoch
        if self.multi_process:
            dist_glue.set_loader_epoch(loader, epoch)
        self.model.train()
        self._callback("on_epoch_start", self.model)
        sums: list = [torch.zeros((), device=self.device), 0]
        skip, resume_rng = 0, None
        position, self._resume_position = self._resume_position, None
        if position is not None and position["epoch"] == epoch and position["batch_in_epoch"] > 0:
            # Mid-epoch resume: replay the epoch's data order from its starting RNG state (global and
            # loaders'), skip the batches already trained on, then continue with the RNG state of
            # the checkpoint. The next batch is the one an uninterrupted run would see next.
            skip, resume_rng = position["batch_in_epoch"], rng_state()
            set_rng_state(position["epoch_rng"], {"train": loader})
            sums = [sums[0] + float(position["running_loss"]), int(position["running_batches"])]
        # the RNG state the epoch's data order is drawn from (what a mid-epoch resume replays)
        epoch_rng = rng_state({"train": loader}) if self.checkpoint_every_n_steps else None
        n_loader = len(loader)
        for batch_idx, batch in enumerate(loader):
            if batch_idx < skip:
                if batch_idx + 1 == skip:
                    set_rng_state(resume_rng)
                continue
            self._train_batch(epoch, batch_idx, batch, batch_idx + 1 == n_loader, sums, bar, check_every, epoch_rng)
        return sums

    def _train_batch(self, epoch: int, batch_idx: int, batch: Any, last_of_epoch: bool, sums: list, bar: Any,
                     check_every: int, epoch_rng: Any) -> None:
        batch = move_to_device(batch, self.device)
        self._callback("on_batch_start", self.model, batch, batch_idx)
        steps_now = (batch_idx + 1) % self.gradient_accumulation == 0 or last_of_epoch
        # Gradient accumulation under DDP: no all-reduce until the last micro-batch.
        no_sync = self.parallel.no_sync(not steps_now) if self.parallel is not None else contextlib.nullcontext()
        with no_sync:
            with self._autocast():
                terms = self.training_step(batch, batch_idx)
            if not isinstance(terms, Mapping) or "loss" not in terms:
                raise TypeError(f"training_step must return a dict with a 'loss' tensor, got {type(terms).__name__}")
            loss = terms["loss"]
            self.nonfinite.check(
                terms, step=self.global_step, epoch=epoch, batch_idx=batch_idx, every=check_every, scaler_active=self.scaler is not None,
                reduce_max=(lambda flag: self.parallel.reduce(flag, "max")) if self.multi_process else None,
                rank=self.dist.rank if self.multi_process else None,
            )
            scaled = loss / self.gradient_accumulation
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        if not self.nonfinite.window_bad:
            sums[0] += loss.detach().float()
            sums[1] += 1
        if steps_now and self._optimizer_step():
            self._after_step(epoch, batch_idx, last_of_epoch, terms, sums, bar, epoch_rng)
        if self.callbacks:
            outputs = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in terms.items()}
            self._callback("on_batch_end", self.model, outputs, batch, batch_idx)

    def _after_step(self, epoch: int, batch_idx: int, last_of_epoch: bool, terms: Mapping[str, Any], sums: list,
                    bar: Any, epoch_rng: Any) -> None:
        """Progress, mid-epoch checkpoint and logging after optimizer step ``global_step``."""
        if bar is not None:
            bar.update(1)
        if self.checkpoint_every_n_steps and not last_of_epoch and self.global_step % self.checkpoint_every_n_steps == 0:
            self._epoch_progress = {
                "epoch": epoch, "batch_in_epoch": batch_idx + 1, "epoch_rng": epoch_rng,
                "running_loss": float(sums[0]), "running_batches": sums[1],
            }
            try:
                self._save_in_loop("latest.pt")
            finally:
                self._epoch_progress = None
        if self.global_step % self.log_every_n_steps == 0 or last_of_epoch:
            names = [k for k, v in terms.items() if isinstance(v, torch.Tensor) and v.dim() == 0]
            values = torch.stack([terms[k].detach().float() for k in names]) if names else None
            if values is not None and self.multi_process:
                values = self.parallel.reduce(values)
            metrics = {k: float(v) for k, v in zip(names, values.tolist())} if values is not None else {}
            metrics["lr"] = self.current_lr()
            if bar is not None:
                bar.set_postfix(epoch=epoch + 1, loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}", refresh=False)
            self._log({f"train/{k}": v for k, v in metrics.items()}, self.global_step)

    def _end_epoch(self, epoch: int, sums: list, val_loader: Any) -> None:
        """History, validation, epoch-wise scheduler, callbacks and checkpoints after epoch ``epoch``."""
        if self.multi_process:
            totals = self.parallel.reduce(torch.stack([sums[0], torch.tensor(float(sums[1]), device=self.device)]), "sum")
            epoch_loss = float(totals[0]) / max(1.0, float(totals[1]))
        else:
            epoch_loss = float(sums[0]) / max(1, sums[1])
        self.history["train_loss"].append(epoch_loss)
        self.history["lr"].append(self.current_lr())
        monitored = epoch_loss
        metrics: dict[str, Any] = {"epoch": epoch + 1, "train_loss": epoch_loss, "lr": self.current_lr()}
        if val_loader is not None and (epoch + 1) % self.val_every_n_epochs == 0:
            val_loss = self.validate(val_loader)
            if val_loss is not None:
                self.history["val_loss"].append(val_loss)
                monitored = metrics["val_loss"] = val_loss
                self._log({"val/loss": val_loss}, self.global_step)
        if self._scheduler_steps("epoch"):
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(monitored)
            else:
                self.scheduler.step()
        self.current_epoch = epoch + 1
        self._callback("on_validation_end", self.model, metrics)
        if self.save_best and monitored < self.best_loss:
            self.best_loss = monitored
            self._save_in_loop("best_model.pt")
        if self.checkpoint_every_n_epochs and self.current_epoch % self.checkpoint_every_n_epochs == 0:
            self._save_in_loop(f"epoch_{self.current_epoch}.pt")
        if self.checkpoint_every_n_steps:
            self._save_in_loop("latest.pt")
        self._callback("on_epoch_end", self.model)

    def _optimizer_step(self) -> bool:
        """One optimizer step under the non-finite policy, then the EMA target update and a per-step
        scheduler step; False when the policy dropped the step."""
        if not self.nonfinite.optimizer_step(self.optimizer, self._apply_step, step=self.global_step, scaler_active=self.scaler is not None):
            return False
        if hasattr(self.model, "update_target_encoder"):
            self.model.update_target_encoder()
        if self._scheduler_steps("step"):
            self.scheduler.step()
        self.global_step += 1
        return True

    def _apply_step(self) -> None:
        if self.parallel is not None:
            self.parallel.sync_bypassed(self.model)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.gradient_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.gradient_clip_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skipped when the gradients hold inf/NaN
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def validate(self, val_loader: DataLoader | None = None) -> float | None:
        """Mean validation loss over ``val_loader`` (None when ``validation_step`` returned None
        for every batch). Uses the model in eval mode; deterministic for a deterministic loader."""
        if val_loader is None:
            val_loader = self.val_loader
            if val_loader is None:
                raise TypeError("validate() needs a val_loader (only a trainer built from a config has a default one)")
        # float64 accumulation: the same sum as JEPAEvaluator.evaluate's, so evaluate()["loss"] == validate()
        total, count, n_batches = torch.zeros((), dtype=torch.float64 if self.device.type != "mps" else torch.float32, device=self.device), 0, 0
        with evaluating(self.model):
            for batch_idx, batch in enumerate(val_loader):
                n_batches += 1
                with self._autocast():
                    out = self.validation_step(move_to_device(batch, self.device), batch_idx)
                if out is not None:
                    total += out["loss"].detach().to(total.dtype)
                    count += 1
        if n_batches == 0:
            raise ValueError("val_loader yields no batches")
        if self.multi_process:
            totals = self.parallel.reduce(torch.stack([total.float(), torch.tensor(float(count), device=self.device)]), "sum")
            return float(totals[0]) / float(totals[1]) if float(totals[1]) else None
        return float(total) / count if count else None

    def evaluate(self, loader: DataLoader | None = None) -> dict[str, float]:
        """Prediction and representation metrics of the current model on ``loader`` (default: the
        validation loader): ``loss`` (the same number as :meth:`validate` on that loader, in one
        process), ``mse``, ``cosine_similarity``, effective rank, ... (see
        :meth:`~jepa.trainer.eval.JEPAEvaluator.evaluate`)."""
        if loader is None:
            loader = self.val_loader
            if loader is None:
                raise TypeError("evaluate() needs a loader (only a trainer built from a config has a default one)")
        with evaluating(self.model):  # the evaluator switches to eval mode; the trainer's mode comes back after
            return JEPAEvaluator(self.model, device=self.device, loss_fn=self.loss_fn, mixed_precision=self.mixed_precision).evaluate(loader)

    # ------------------------------------------------------------------ helpers
    def _steps_per_epoch(self, loader: DataLoader) -> int:
        try:
            n = len(loader)
        except TypeError as exc:
            raise TypeError("train_loader must have a length (a DataLoader over a map-style Dataset)") from exc
        if n == 0:
            raise ValueError("train_loader yields no batches: the dataset is empty (or smaller than batch_size with drop_last=True)")
        return math.ceil(n / self.gradient_accumulation)

    def _setup_lr(self, total_steps: int) -> None:
        """Who sets the learning rate this run: a callback that owns it (``owns_lr``, e.g.
        :class:`~jepa.trainer.callbacks.LearningRateScheduler`), else the trainer's scheduler (a
        ``"cosine"`` or factory spec is built now that the number of steps is known)."""
        owner = next((cb for cb in self.callbacks if getattr(cb, "owns_lr", False)), None)
        if owner is not None:
            if self._lr_callback is None and (self.scheduler is not None or self._scheduler_spec is not None):
                log.warning("%s sets the learning rate; the trainer's scheduler is not used", type(owner).__name__)
            self._lr_callback = owner
            return
        if self.scheduler is not None or self._scheduler_spec is None:
            return
        if self._scheduler_spec == "cosine":
            warmup = int(round(self.warmup_fraction * total_steps))
            self.scheduler = warmup_cosine_schedule(self.optimizer, total_steps, warmup, self.min_lr_ratio)
        else:
            self.scheduler = self._scheduler_spec(self.optimizer, total_steps)
            # schedulers from jepa.trainer.schedulers.create_scheduler say how they step
            self.scheduler_interval = getattr(self.scheduler, "jepa_interval", self.scheduler_interval)
        if self._pending_scheduler_state is not None:
            self.scheduler.load_state_dict(self._pending_scheduler_state)
            self._pending_scheduler_state = None
            # Building a scheduler resets the optimizer's lr to the step-0 value; put back the
            # lr of the step the checkpoint was taken at.
            for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
                group["lr"] = lr

    def _scheduler_steps(self, interval: str) -> bool:
        return self.scheduler is not None and self._lr_callback is None and self.scheduler_interval == interval

    def _progress(self, total_steps: int) -> Any:
        if not (self.progress_bar and self.is_global_zero):
            return None
        return tqdm(total=total_steps, initial=min(self.global_step, total_steps), desc="train", unit="step", dynamic_ncols=True)

    def _log(self, metrics: dict[str, float], step: int) -> None:
        if self.logger is None or not self.is_global_zero:
            return
        if isinstance(self.logger, logging.Logger):
            self.logger.info("step %d: %s", step, ", ".join(f"{k}={v:.5g}" for k, v in metrics.items()))
        elif hasattr(self.logger, "log_metrics"):
            self.logger.log_metrics(metrics, step)
        else:
            raise TypeError(f"logger must be a logging.Logger or have log_metrics(metrics, step); got {type(self.logger).__name__}")

    def current_lr(self) -> float:
        """The learning rate of the first parameter group now."""
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def nan_skipped_steps(self) -> int:
        """Optimizer steps dropped by ``on_nan="skip"`` so far."""
        return self.nonfinite.skipped_steps

    @property
    def is_global_zero(self) -> bool:
        """True on the process that logs, shows progress and writes checkpoints (rank 0)."""
        return self.dist is None or self.dist.is_global_zero

    @property
    def multi_process(self) -> bool:
        """True in a distributed run of more than one process."""
        return self.dist is not None and self.dist.world_size > 1

    @property
    def _ddp(self) -> Any:
        """The DistributedDataParallel wrapper of the model step (None when not distributed)."""
        return self.parallel.ddp if self.parallel is not None else None

    def close(self) -> None:
        """Release the DDP wrapper and destroy the process group when this trainer created it (also
        done at interpreter exit; a group you created yourself is left for you to destroy)."""
        if self.parallel is not None:
            self.parallel.close()


class JEPATrainer(BaseTrainer):
    """Trains a :class:`~jepa.models.JEPA` (or :class:`~jepa.models.JEPAAction`, or any model of
    the model-step protocol).

    ``JEPATrainer(model, optimizer, ...)`` (v1) or ``JEPATrainer(config, callbacks=[...])`` (v0);
    see :class:`BaseTrainer` for every argument. Its ``training_step`` is the JEPA objective:
    the model's named outputs (prediction, target, context, projection) through ``loss_fn``
    (:class:`~jepa.trainer.losses.JEPALoss` by default).
    """


def create_trainer(
    model: nn.Module,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.05,
    device: str | torch.device = "auto",
    logger: Any = None,
    loss_fn: Callable[..., Any] | None = None,
    distributed: bool = False,
    world_size: int | None = None,
    local_rank: int | None = None,
    *,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    **trainer_kwargs: Any,
) -> JEPATrainer:
    """A :class:`JEPATrainer` with AdamW (fused where supported; no decay on biases/norms) and a
    warmup + cosine schedule sized to the real number of steps when :meth:`~JEPATrainer.train` runs.

    Extra keyword arguments go to :class:`JEPATrainer` (``gradient_clip_norm``,
    ``gradient_accumulation``, ``progress_bar``, ``save_dir``, ``warmup_fraction``, ``resume``, ...).

    ``distributed=True`` (under ``torchrun``): joins the process group (NCCL on CUDA, gloo on CPU),
    moves the model to ``cuda:LOCAL_RANK`` and trains it under DistributedDataParallel; see
    :class:`BaseTrainer`. ``world_size``/``local_rank`` are checked against the environment.
    """
    ctx: Any = dist_glue.init_distributed(world_size, local_rank, device) if distributed else False
    dev = ctx.device if distributed else resolve_device(device)
    model = model.to(dev)
    optimizer = build_adamw(model, learning_rate=learning_rate, weight_decay=weight_decay, betas=tuple(betas), eps=eps, device=dev)
    return JEPATrainer(model, optimizer, scheduler="cosine", device=dev, logger=logger, loss_fn=loss_fn, distributed=ctx, **trainer_kwargs)
