"""The training loop: :class:`BaseTrainer` and :class:`JEPATrainer`.

One training step, for any model and loss that follow the model-step protocol
(:mod:`jepa.trainer.objective`)::

    outputs = model_outputs(model, batch)             # the batch as the loader made it, on the device
    outputs = gather_outputs(outputs, loss inputs)    # distributed only: the loss sees the global batch
    terms = loss_terms(loss_fn, outputs)              # {"loss": minimised, other terms logged}

* **Model**: ``forward_batch(batch) -> dict`` consumes the whole batch (images with mask indices
  and validity masks, trajectory windows of observations and actions, ...) and returns named
  outputs (``prediction``, ``target``, ``context``, ``projection``, ``valid``, any names). Models
  with ``forward_features(*pair)`` (:class:`~jepa.models.JEPA`) or a ``forward`` returning
  ``(prediction, target)`` train on ``(state_t, [action_t,] state_t1)`` batches as they are.
  Optional hooks: ``update_target_encoder()`` (after every optimizer step), ``set_total_steps(n)``,
  ``embed(x)`` (probes), ``unbatched_outputs`` (output names that are not batch-first).
* **Loss**: a callable, or an object with ``terms(...) -> dict``, called with the outputs its
  parameters name (``def sigreg(projection)``, ``def loss(prediction, target, valid)``;
  ``**kwargs`` takes them all).
* **Distributed**: DDP wraps the model step (:class:`~jepa.trainer.distributed.ModelStep`), or
  with ``strategy="fsdp"`` FSDP2 shards the model in place (:mod:`jepa.trainer.fsdp`); every
  batch-first tensor output the loss takes is gathered across ranks with gradients (ranks may hold
  different numbers of rows).
* **Callbacks** get the detached loss terms in ``on_batch_end``; ``trainer.step_outputs`` holds the
  detached outputs of the last training step on this rank (features for online probes).
* Subclasses may override :meth:`BaseTrainer.training_step` (a dict with ``loss``) for anything else.

Training, validation and :meth:`BaseTrainer.evaluate` compute the loss with these same calls.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from jepa import io as jio
from jepa.amp import GradScaler
from jepa.trainer import distributed as dist_glue
from jepa.trainer.batches import move_to_device, resolve_device, unpack_batch  # noqa: F401  (unpack_batch: see __all__)
from jepa.trainer.builders import explicit_arguments, trainer_kwargs
from jepa.trainer.callbacks import BaseCallback, CollapseMonitor, add_validation_metrics
from jepa.trainer.checkpoints import CHECKPOINT_FORMAT, CHECKPOINT_SUFFIXES, find_latest_checkpoint  # noqa: F401  (see __all__)
from jepa.trainer.checkpoints import TrainerCheckpoints, model_from_checkpoint_state, rng_state, set_rng_state  # noqa: F401
from jepa.trainer.checks import check_choice, check_int, check_number, check_type
from jepa.trainer.distributed import PeerFailureError  # noqa: F401  (see __all__)
from jepa.trainer.eval import JEPAEvaluator
from jepa.trainer.losses import JEPALoss
from jepa.trainer.metrics import log_metrics
from jepa.trainer.modes import evaluating
from jepa.trainer.nonfinite import NonFinitePolicy
from jepa.trainer.objective import gathered_inputs, loss_terms, model_outputs, unbatched_outputs
from jepa.trainer.schedulers import LRControl
from jepa.trainer.strategies import build_strategy, check_strategy

# Also importable from here, as before the split (documented where they live): CHECKPOINT_FORMAT, CHECKPOINT_SUFFIXES,
# find_latest_checkpoint, model_from_checkpoint_state, move_to_device, resolve_device, unpack_batch, PeerFailureError.
__all__ = ["BaseTrainer", "JEPATrainer"]

log = logging.getLogger("jepa")


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
        scheduler: an LR scheduler instance, or ``"cosine"`` / ``(optimizer, total_steps) -> scheduler``
            built when :meth:`train` knows the number of steps (:class:`~jepa.trainer.schedulers.LRControl`;
            an lr-owning callback such as ``LearningRateScheduler`` replaces it).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
        logger: None, a ``logging.Logger``, or any object with ``log_metrics(metrics, step)``.
        loss_fn: called with the model outputs it names (:mod:`jepa.trainer.objective`);
            default :class:`~jepa.trainer.losses.JEPALoss`.
        gradient_clip_norm: clip the global gradient norm to this value (None: no clipping).
        gradient_accumulation: batches per optimizer step.
        progress_bar: show a tqdm bar with loss and lr.
        save_dir: where ``save_checkpoint`` writes (``best_model.pt`` and ``last.pt`` too).
        scheduler_interval: ``"step"`` or ``"epoch"``; default ``"step"`` for schedulers built by
            the trainer, ``"epoch"`` for a scheduler instance you pass.
        log_every_n_steps: how often the loss is read back to the host for the bar/logger.
        save_best: write ``best_model.pt`` whenever the validation (else training) loss improves; or
            a validation metric to follow instead (``"val_accuracy"`` of an
            :class:`~jepa.trainer.callbacks.OnlineProbe`, maximised; ``(name, "min"|"max")``).
        save_last: write ``last.pt`` at the end of :meth:`train`.
        checkpoint_every_n_epochs: also write ``epoch_<n>.pt`` every n epochs (resumable).
        warmup_fraction, min_lr_ratio: shape of the ``"cosine"`` schedule (linear warmup over this
            fraction of the steps, then cosine decay to ``min_lr_ratio`` times the base lr).
        callbacks: :class:`~jepa.trainer.callbacks.BaseCallback` instances.
        mixed_precision: None, ``"bf16"`` or ``"fp16"`` (autocast; fp16 also scales the loss with a
            GradScaler; bf16 needs none). ``True`` means bf16.
        val_every_n_epochs: validate every n epochs (when a validation loader is given).
        collapse_check_every_n_steps: add a :class:`~jepa.trainer.callbacks.CollapseMonitor` (effective
            rank of a held-out batch every n steps, a warning on collapse; None: off).
        distributed: train under ``torchrun`` with DDP (:mod:`jepa.trainer.distributed`; FSDP with
            ``strategy="fsdp"``): device ``cuda:LOCAL_RANK``, loaders sharded, the loss on the outputs
            gathered from all ranks, logged losses averaged over ranks, only rank 0 shows progress,
            logs and writes checkpoints (under FSDP every rank writes its shards).
        world_size, local_rank, distributed_rank: checked against the process group when given.
        resume: ``"auto"``: continue from the newest valid checkpoint in ``save_dir`` when
            :meth:`train` starts (a torchrun restart picks up where it stopped); a path; None: fresh.
        ddp_find_unused_parameters: passed to DDP (True tolerates parameters a loss leaves unused,
            e.g. a projector with the regularizer switched off).
        strategy: with ``distributed``: ``"ddp"`` (replicated model) or ``"fsdp"`` (FSDP2: weights,
            gradients, optimizer state and EMA target sharded per block, sharded checkpoints; torch
            >= 2.6; see :mod:`jepa.trainer.fsdp`).
        activation_checkpointing: recompute each transformer block's activations in backward.
        on_nan, max_nan_skips, nan_check_every_n_steps: what a non-finite loss does
            (:class:`~jepa.trainer.nonfinite.NonFinitePolicy`): ``"raise"`` (default) names the step,
            epoch, batch and terms, the weights being those before it; ``"skip"`` drops the step
            (counted in ``nan_skipped_steps``) and raises after ``max_nan_skips`` in a row. Host
            checks every step on the CPU; on GPUs every ``log_every_n_steps`` when fused AdamW can
            skip updates on device in between.
        checkpoint_every_n_steps: also write ``latest.pt`` every n optimizer steps; it records the
            position inside the epoch, so a resumed run continues at the next batch (same data
            order and RNG streams as an uninterrupted run).
        async_checkpoint: the checkpoints :meth:`train` writes are snapshotted to CPU memory and
            written by a background thread (:func:`jepa.io.save` with ``async_=True``); :meth:`train`
            waits for the last one; ``on_save_checkpoint`` may see a file still in flight.
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
        save_best: bool | str | tuple = True,
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
        activation_checkpointing: bool = False,
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
            BaseTrainer.__init__(self, **trainer_kwargs(model, explicit_arguments(BaseTrainer.__init__, args)))
            return
        self.strategy = check_strategy(strategy, distributed, activation_checkpointing)
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
        # FSDP moves each shard to the device itself: the whole model never has to fit there
        self.model = model if strategy == "fsdp" else model.to(self.device)
        self.optimizer = optimizer
        self.base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        self.loss_fn = loss_fn if loss_fn is not None else JEPALoss()
        self.logger, self.progress_bar = logger, progress_bar
        self.log_every_n_steps = check_int("log_every_n_steps", log_every_n_steps, minimum=1)
        self.val_every_n_epochs = check_int("val_every_n_epochs", val_every_n_epochs, minimum=1)
        self.schedule = LRControl(optimizer, scheduler, scheduler_interval, warmup_fraction, min_lr_ratio)
        self._init_precision(gradient_clip_norm, gradient_accumulation, mixed_precision)
        self._init_checkpoints(save_dir, save_best, save_last, checkpoint_every_n_epochs, checkpoint_every_n_steps, async_checkpoint, resume)
        self.nonfinite = NonFinitePolicy(on_nan, max_nan_skips, nan_check_every_n_steps)
        self.callbacks = list(callbacks or [])
        if collapse_check_every_n_steps:
            self.callbacks.append(CollapseMonitor(every_n_steps=collapse_check_every_n_steps))
        for cb in self.callbacks:
            check_type("callbacks", cb, BaseCallback, what="BaseCallback instances")
        self.current_epoch = self.global_step = 0
        self.history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "lr": []}
        self.should_stop = False
        self.max_epochs: int | None = self.num_epochs
        self.step_outputs: dict[str, Any] | None = None
        self.total_steps: int | None = None  # optimizer steps of the current train() run, once it started
        self.parallel: dist_glue.ParallelStrategy | None = build_strategy(
            self.model, optimizer, self.dist, strategy=strategy, mixed_precision=self.mixed_precision,
            activation_checkpointing=activation_checkpointing, find_unused_parameters=ddp_find_unused_parameters,
        )
        if self._sharded_strategy():
            self.parallel.adapt_trainer(self)

    def _init_precision(self, clip: float | None, accumulation: int, mixed_precision: str | bool | None) -> None:
        """Accumulation, clipping, autocast dtype and loss scaling."""
        self.gradient_accumulation = check_int("gradient_accumulation", accumulation, minimum=1)
        self.gradient_clip_norm = check_number("gradient_clip_norm", clip, low=0, low_open=True, optional=True)
        if mixed_precision is True:
            mixed_precision = "bf16"
        if mixed_precision in (False, None, "no", "fp32", "none"):
            mixed_precision = None
        self.mixed_precision = check_choice("mixed_precision", mixed_precision, (None, "bf16", "fp16"))
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
        # fp16 needs loss scaling (tiny gradients underflow); bf16 has fp32's range and needs none.
        self.scaler = GradScaler(self.device.type) if mixed_precision == "fp16" else None

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        """Loss terms of one batch (the model-step protocol above); ``loss`` is what is minimised,
        other entries are logged."""
        grad = torch.is_grad_enabled()
        # Under DDP the forward of a training step goes through the DDP wrapper (gradient sync).
        outputs = self.parallel.forward(batch) if (self.parallel is not None and grad) else model_outputs(self.model, batch)
        if grad and self.callbacks:
            self.step_outputs = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in outputs.items()}
        if self.multi_process:  # every rank: the loss of the global batch (2 x b == 1 x 2b)
            outputs = dist_glue.gather_outputs(outputs, gathered_inputs(self.loss_fn, outputs), unbatched_outputs(self.model))
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
                square = p.pow(2).sum()  # of a sharded (FSDP) parameter: summed over every rank's shard
                total = total + 0.5 * (square.full_tensor() if hasattr(square, "full_tensor") else square)
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
            if self.parallel.closed:
                raise RuntimeError("this distributed trainer was closed (trainer.close()); build a new one to train again")
            seed = int(getattr(getattr(self.config, "training", None), "seed", 0) or 0)
            train_loader, val_loader = self.parallel.shard(train_loader, seed=seed), self.parallel.shard(val_loader, shuffle=False, seed=seed)
        self.max_epochs, self.should_stop = num_epochs, False
        self._active_train_loader, self._active_val_loader = train_loader, val_loader
        total_steps = self.total_steps = self._steps_per_epoch(train_loader) * num_epochs
        self._maybe_resume()
        self.schedule.setup(total_steps, self.callbacks)
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
            self._save_interrupted()
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
        epoch_loss = self._global_mean(sums[0], sums[1]) or 0.0
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
            add_validation_metrics(self, metrics)  # online probes: val_accuracy, ...
        self.schedule.step("epoch", monitored)
        self.current_epoch = epoch + 1
        self._callback("on_validation_end", self.model, metrics)
        if self.save_best and self._improves_best(metrics, monitored):
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
        self.schedule.step("step")
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
        val_loader = self._loader_or_default(val_loader, "validate() needs a val_loader")
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
        return self._global_mean(total, count)

    def evaluate(self, loader: DataLoader | None = None) -> dict[str, float]:
        """Prediction and representation metrics of the current model on ``loader`` (default: the
        validation loader): ``loss`` (the same number as :meth:`validate` on that loader, in one
        process), ``mse``, ``cosine_similarity``, effective rank, ... (see
        :meth:`~jepa.trainer.eval.JEPAEvaluator.evaluate`)."""
        loader = self._loader_or_default(loader, "evaluate() needs a loader")
        with evaluating(self.model):  # the evaluator switches to eval mode; the trainer's mode comes back after
            return JEPAEvaluator(self.model, device=self.device, loss_fn=self.loss_fn, mixed_precision=self.mixed_precision).evaluate(loader)

    # ------------------------------------------------------------------ helpers
    def _loader_or_default(self, loader: Any, needs: str) -> Any:
        if loader is None and self.val_loader is None:
            raise TypeError(f"{needs} (only a trainer built from a config has a default one)")
        return self.val_loader if loader is None else loader

    def _global_mean(self, total: torch.Tensor, count: int) -> float | None:
        """``total / count``, both summed over the ranks of a distributed run; None when ``count`` is 0."""
        if self.multi_process:
            total, count = self.parallel.reduce(torch.stack([total.float(), torch.tensor(float(count), device=self.device)]), "sum")
        return float(total) / float(count) if float(count) else None

    def _steps_per_epoch(self, loader: DataLoader) -> int:
        try:
            n = len(loader)
        except TypeError as exc:
            raise TypeError("train_loader must have a length (a DataLoader over a map-style Dataset)") from exc
        if n == 0:
            raise ValueError("train_loader yields no batches: the dataset is empty (or smaller than batch_size with drop_last=True)")
        return math.ceil(n / self.gradient_accumulation)

    @property
    def scheduler(self) -> Any:
        """The LR scheduler (None until :meth:`train` builds one from a spec, or without one)."""
        return self.schedule.scheduler

    @property
    def scheduler_interval(self) -> str:
        """``"step"`` (the scheduler steps after every optimizer step) or ``"epoch"``."""
        return self.schedule.interval

    def _progress(self, total_steps: int) -> Any:
        if not (self.progress_bar and self.is_global_zero):
            return None
        return tqdm(total=total_steps, initial=min(self.global_step, total_steps), desc="train", unit="step", dynamic_ncols=True)

    def _log(self, metrics: dict[str, float], step: int) -> None:
        if self.logger is not None and self.is_global_zero:
            log_metrics(metrics, step, self.logger)

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
        """The DistributedDataParallel wrapper of the model step (None when not distributed or under FSDP)."""
        return getattr(self.parallel, "ddp", None)

    def close(self) -> None:
        """Release the DDP wrapper (FSDP: the strategy) and destroy the process group when this trainer
        created it (also done at interpreter exit; a group you created yourself is left for you to destroy)."""
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
