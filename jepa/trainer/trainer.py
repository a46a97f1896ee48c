"""JEPATrainer: the training loop (optimizer steps, EMA target updates, checkpoints, progress)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from jepa import io as jio
from jepa.models.base import BaseModel, build_model, load_state_dict_strict
from jepa.trainer.losses import JEPALoss
from jepa.trainer.schedulers import warmup_cosine_schedule

log = logging.getLogger("jepa")

CHECKPOINT_FORMAT = 1


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: cannot parse {device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available on this machine")
    return dev


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors in a (nested) tuple/list/dict batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch) if not hasattr(batch, "_fields") else type(batch)(*(move_to_device(v, device) for v in batch))
    return batch


def unpack_batch(batch: Any) -> tuple[torch.Tensor, ...]:
    """``(state_t, state_t1)`` or ``(state_t, action_t, state_t1)`` from a tuple, list or dict batch."""
    if isinstance(batch, Mapping):
        if "state_t" in batch and "state_t1" in batch:
            if "action_t" in batch:
                return batch["state_t"], batch["action_t"], batch["state_t1"]
            return batch["state_t"], batch["state_t1"]
        raise ValueError(f"batch dict must have keys 'state_t' and 'state_t1' (and optionally 'action_t'); got {sorted(batch)}")
    if isinstance(batch, (list, tuple)):
        if len(batch) not in (2, 3):
            raise ValueError(
                f"batch must be (state_t, state_t1) or (state_t, action_t, state_t1); got a {type(batch).__name__} of {len(batch)} items"
            )
        items = tuple(batch)
    else:
        raise TypeError(f"batch must be a tuple, list or dict of tensors, got {type(batch).__name__}")
    for i, x in enumerate(items):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"batch item {i} must be a torch.Tensor, got {type(x).__name__}")
    s_t, s_t1 = items[0], items[-1]
    if s_t.shape != s_t1.shape:
        raise ValueError(f"state_t and state_t1 must have the same shape, got {tuple(s_t.shape)} and {tuple(s_t1.shape)}")
    if not torch.is_floating_point(s_t) or not torch.is_floating_point(s_t1):
        raise TypeError(f"state_t and state_t1 must be floating-point tensors, got {s_t.dtype} and {s_t1.dtype}")
    return items


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_count(name: str, value: Any, *, optional: bool = False) -> None:
    """Refuse ``value`` unless it is an int >= 1 (or None when ``optional``)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1{' or None' if optional else ''}, got {value!r}")


def _close_at_exit(ref: Any) -> None:
    trainer = ref()
    if trainer is not None:
        with contextlib.suppress(Exception):
            trainer.close()


class PeerFailureError(RuntimeError):
    """This rank stopped because another rank of a distributed run failed."""


_PEER_FAILURE_MARKERS = ("connection closed by peer", "connection reset by peer", "remote worker", "broken pipe")


def _is_peer_failure(exc: BaseException) -> bool:
    dist_error = getattr(torch.distributed, "DistError", ())
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        (dist_error and isinstance(exc, dist_error)) or any(m in text for m in _PEER_FAILURE_MARKERS)
    )


class BaseTrainer:
    """The training loop. Subclass it and override :meth:`training_step` (and optionally
    :meth:`validation_step`, :meth:`compute_regularization`) for a custom objective; the loop,
    callbacks, checkpoints, progress bar and logging stay.

    Build it from a model and optimizer (v1 API) or from a config (v0 API): ``BaseTrainer(config)``
    with a :class:`~jepa.config.Config`, a YAML path or a shipped config name builds the data
    (the embedded digits when the config names no other dataset), the model, the loss, AdamW and
    the schedule from the config; then ``train()`` needs no arguments.

    One optimizer step per ``gradient_accumulation`` batches; after each optimizer step the EMA
    target encoder is updated (momentum on its cosine schedule) and a per-step scheduler steps.

    Args:
        model: the JEPA model.
        optimizer: a torch optimizer over the model's trainable parameters.
        scheduler: an LR scheduler instance; or ``"cosine"`` / a callable
            ``(optimizer, total_steps) -> scheduler``, built at :meth:`train` once the number of
            steps is known (that is what :func:`create_trainer` does).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
        logger: None, a ``logging.Logger``, or any object with ``log_metrics(metrics, step)``.
        loss_fn: ``loss_fn(prediction, target) -> loss``; objects with ``uses_context = True`` (like
            :class:`~jepa.trainer.losses.JEPALoss`, the default) also receive the context embeddings.
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
            computed on the batch gathered from all ranks (so batch statistics are global), logged
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
        on_nan: what a non-finite (NaN/inf) loss does. ``"raise"`` (default): stop with a
            ``FloatingPointError`` naming the step, epoch, batch and the non-finite terms; the
            weights are those before that step. ``"skip"``: drop that optimizer step (gradients
            discarded, no update, no EMA or scheduler step), count it in ``nan_skipped_steps``, and
            raise after ``max_nan_skips`` dropped steps in a row.
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
    """

    def __init__(
        self,
        model: Any = None,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        device: str | torch.device = "auto",
        logger: Any = None,
        loss_fn: Callable[..., torch.Tensor] | None = None,
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
    ) -> None:
        if strategy != "ddp":
            if strategy == "fsdp":
                raise NotImplementedError(
                    "strategy='fsdp' (FSDP2 fully_shard with a sharded EMA target) is not implemented yet; "
                    "use strategy='ddp' (the model must fit on one device)"
                )
            raise ValueError(f"strategy must be 'ddp' (or 'fsdp', not implemented yet), got {strategy!r}")
        self.config = None
        self.dist = None  # DistributedContext when distributed
        self._ddp = None
        if distributed:
            from jepa.trainer.distributed import DistributedContext, init_distributed  # noqa: PLC0415

            if isinstance(distributed, DistributedContext):
                self.dist = distributed
            else:
                if model is not None and not isinstance(model, nn.Module):
                    from jepa.trainer.builders import as_config  # noqa: PLC0415

                    model = as_config(model)
                    requested = model.training.device
                else:
                    requested = device
                self.dist = init_distributed(world_size, local_rank, requested, rank=distributed_rank)
            device = self.dist.device
        self.train_loader = self.val_loader = None
        self.num_epochs: int | None = None
        if model is None or not isinstance(model, nn.Module):
            if model is None:
                raise TypeError(f"{type(self).__name__}: pass a config (Config, YAML path or shipped name) or a model")
            from jepa.trainer.builders import from_config  # noqa: PLC0415  (builders imports this module)

            built = from_config(
                model, save_dir=None if save_dir == "./checkpoints" else save_dir,
                device=self.dist.device if self.dist is not None else None,
            )
            self.config = built.pop("config")
            self.train_loader, self.val_loader = built.pop("train_loader"), built.pop("val_loader")
            self.num_epochs = built.pop("num_epochs")
            model, optimizer, scheduler = built.pop("model"), built.pop("optimizer"), built.pop("scheduler")
            device, loss_fn, gradient_clip_norm = built.pop("device"), built.pop("loss_fn"), built.pop("gradient_clip_norm")
            gradient_accumulation, progress_bar, save_dir = built.pop("gradient_accumulation"), built.pop("progress_bar"), built.pop("save_dir")
            log_every_n_steps, warmup_fraction, min_lr_ratio = built.pop("log_every_n_steps"), built.pop("warmup_fraction"), built.pop("min_lr_ratio")
            if mixed_precision is None:
                mixed_precision = built.pop("mixed_precision")
            val_every_n_epochs = built.pop("val_every_n_epochs")
            if collapse_check_every_n_steps is None:
                collapse_check_every_n_steps = built.pop("collapse_check_every_n_steps")
            if logger is None:
                logger = built.pop("logger")
            callbacks = list(callbacks or []) + built.pop("callbacks")
        if optimizer is None:
            raise ValueError("JEPATrainer: optimizer is required (or use jepa.trainer.create_trainer)")
        _check_count("gradient_accumulation", gradient_accumulation)
        if gradient_clip_norm is not None and not gradient_clip_norm > 0:
            raise ValueError(f"gradient_clip_norm must be > 0 or None, got {gradient_clip_norm!r}")
        if scheduler_interval not in (None, "step", "epoch"):
            raise ValueError(f"scheduler_interval must be 'step', 'epoch' or None, got {scheduler_interval!r}")
        _check_count("log_every_n_steps", log_every_n_steps)
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        if self.dist is not None:
            from torch.nn.parallel import DistributedDataParallel  # noqa: PLC0415

            from jepa.trainer.distributed import FeatureForward  # noqa: PLC0415

            # The EMA target encoder has no trainable parameters: DDP syncs only the online encoder,
            # predictor and projector; the target's update is the same on every rank because the
            # online weights are. broadcast_buffers=False: buffers (EMA step, ...) are identical
            # by construction and need no per-step broadcast.
            import inspect  # noqa: PLC0415

            no_buffer_sync = (
                {"forward_sync_buffers": False}
                if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
                else {"broadcast_buffers": False}
            )
            self._ddp = DistributedDataParallel(
                FeatureForward(self.model),
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=ddp_find_unused_parameters,
                **no_buffer_sync,
            )
        self._ddp_calls_seen = 0
        self._sharded: dict[int, tuple[Any, Any]] = {}
        if self.dist is not None and self.dist.owns_group:
            import atexit  # noqa: PLC0415
            import weakref  # noqa: PLC0415

            atexit.register(_close_at_exit, weakref.ref(self))
        if resume is not None and not isinstance(resume, (str, os.PathLike)):
            raise ValueError(f"resume must be None, 'auto' or a checkpoint path, got {resume!r}")
        self.resume = resume
        self._resumed = False
        if on_nan not in ("raise", "skip"):
            raise ValueError(f"on_nan must be 'raise' or 'skip', got {on_nan!r}")
        _check_count("max_nan_skips", max_nan_skips)
        _check_count("nan_check_every_n_steps", nan_check_every_n_steps, optional=True)
        _check_count("checkpoint_every_n_steps", checkpoint_every_n_steps, optional=True)
        self.on_nan = on_nan
        self.max_nan_skips = max_nan_skips
        self.nan_check_every_n_steps = nan_check_every_n_steps
        self.checkpoint_every_n_steps = checkpoint_every_n_steps
        self.async_checkpoint = bool(async_checkpoint)
        self.nan_skipped_steps = 0  # optimizer steps dropped by on_nan="skip"
        self._consecutive_nan = 0
        self._window_nonfinite = False  # on_nan="skip": this accumulation window saw a non-finite loss
        self._nan_seen: torch.Tensor | None = None  # deferred check: device flag, sticky until checked
        self._first_bad_step: torch.Tensor | None = None
        self._epoch_progress: dict[str, Any] | None = None  # mid-epoch position (for step checkpoints)
        self._resume_position: dict[str, Any] | None = None
        self.optimizer = optimizer
        self._scheduler_spec = scheduler
        if hasattr(scheduler, "step") and hasattr(scheduler, "state_dict"):
            self.scheduler = scheduler
            self.scheduler_interval = scheduler_interval or "epoch"
        else:
            if scheduler is not None and not (scheduler == "cosine" or callable(scheduler)):
                raise ValueError(f"scheduler must be a scheduler instance, 'cosine', a callable or None; got {scheduler!r}")
            self.scheduler = None
            self.scheduler_interval = scheduler_interval or "step"
        self.logger = logger
        self.loss_fn = loss_fn if loss_fn is not None else JEPALoss()
        self.gradient_clip_norm = gradient_clip_norm
        self.gradient_accumulation = gradient_accumulation
        self.progress_bar = progress_bar
        self.save_dir = Path(save_dir)
        self.log_every_n_steps = log_every_n_steps
        self.save_best = save_best
        self.save_last = save_last
        _check_count("checkpoint_every_n_epochs", checkpoint_every_n_epochs, optional=True)
        self.checkpoint_every_n_epochs = checkpoint_every_n_epochs
        self.current_epoch = 0
        self.global_step = 0
        self.best_loss = math.inf
        self.history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "lr": []}
        self._pending_scheduler_state: dict | None = None
        if not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction!r}")
        self.warmup_fraction = warmup_fraction
        self.min_lr_ratio = min_lr_ratio
        from jepa.trainer.callbacks import BaseCallback  # noqa: PLC0415

        self.callbacks = list(callbacks or [])
        if collapse_check_every_n_steps:
            from jepa.trainer.callbacks import CollapseMonitor  # noqa: PLC0415

            self.callbacks.append(CollapseMonitor(every_n_steps=collapse_check_every_n_steps))
        for cb in self.callbacks:
            if not isinstance(cb, BaseCallback):
                raise TypeError(f"callbacks must be BaseCallback instances, got {type(cb).__name__}")
        _check_count("val_every_n_epochs", val_every_n_epochs)
        self.val_every_n_epochs = val_every_n_epochs
        self.should_stop = False
        self.max_epochs: int | None = self.num_epochs
        if mixed_precision is True:
            mixed_precision = "bf16"
        if mixed_precision in (False, None, "no", "fp32", "none"):
            mixed_precision = None
        if mixed_precision not in (None, "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be None, 'bf16' or 'fp16', got {mixed_precision!r}")
        self.mixed_precision = mixed_precision
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
        # fp16 needs loss scaling (tiny gradients underflow); bf16 has fp32's range and needs none.
        from jepa.amp import GradScaler  # noqa: PLC0415  (jepa.amp.GradScaler: torch.amp.GradScaler's API, jepa's kernels)

        self.scaler = GradScaler(self.device.type) if mixed_precision == "fp16" else None

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        """Loss terms of one batch; ``loss`` is what is minimised, other entries are logged."""
        items = unpack_batch(batch)
        model = self.model
        extra = {}
        # Under DDP the forward of a training step goes through the DDP wrapper (gradient sync).
        ddp = self._ddp if (self._ddp is not None and torch.is_grad_enabled()) else None
        if hasattr(model, "forward_features"):
            out = ddp(*items) if ddp is not None else model.forward_features(*items)
            prediction, target, context = out["prediction"], out["target"], out.get("context")
            if out.get("projection") is not None:
                extra["projection"] = out["projection"]
        else:
            prediction, target = ddp(*items) if ddp is not None else model(*items)
            context = None
        if self.multi_process:
            # Every rank computes the loss on the global batch (batch statistics of the regularizer,
            # batch-normalized targets and contrastive negatives see all ranks' samples): the
            # 2-process run optimizes the same objective as 1 process with twice the batch.
            from jepa.trainer.distributed import gather_rows  # noqa: PLC0415

            prediction, target = gather_rows(prediction), gather_rows(target)
            context = gather_rows(context) if context is not None else None
            extra = {k: gather_rows(v) for k, v in extra.items()}
        if hasattr(self.loss_fn, "terms"):
            return self.loss_fn.terms(prediction, target, context, **extra)
        if getattr(self.loss_fn, "uses_context", False):
            return {"loss": self.loss_fn(prediction, target, context)}
        return {"loss": self.loss_fn(prediction, target)}

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

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _callback(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    # ------------------------------------------------------------------ loop
    def _steps_per_epoch(self, loader: DataLoader) -> int:
        try:
            n = len(loader)
        except TypeError as exc:
            raise TypeError("train_loader must have a length (a DataLoader over a map-style Dataset)") from exc
        if n == 0:
            raise ValueError("train_loader yields no batches: the dataset is empty (or smaller than batch_size with drop_last=True)")
        return math.ceil(n / self.gradient_accumulation)

    def _build_scheduler(self, total_steps: int) -> None:
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
        return float(self.optimizer.param_groups[0]["lr"])

    def _nan_check_interval(self) -> int:
        """Steps between host checks of the loss (see ``nan_check_every_n_steps``)."""
        if self.nan_check_every_n_steps is not None:
            return self.nan_check_every_n_steps if self._can_defer_nan_check() else 1
        if self.device.type == "cpu" or not self._can_defer_nan_check():
            return 1
        return self.log_every_n_steps

    def _can_defer_nan_check(self) -> bool:
        # A deferred check must not let a step after a non-finite loss change the weights: fused
        # Adam/AdamW skip their update on device when `found_inf` is set (no host sync); with fp16
        # the GradScaler skips steps whose gradients are non-finite.
        return self.on_nan == "raise" and (
            self.scaler is not None or bool(getattr(self.optimizer, "_step_supports_amp_scaling", False))
        )

    def _check_loss(self, terms: Mapping[str, Any], epoch: int, batch_idx: int, check_every: int) -> None:
        loss = terms["loss"].detach()
        distributed = self.multi_process
        bad_flag = ~torch.isfinite(loss).all()
        if check_every > 1 and self.global_step % check_every != 0:
            # deferred: remember on device (sticky), the optimizer skips every update from now on
            if self._nan_seen is None:
                self._nan_seen = torch.zeros((), dtype=torch.bool, device=loss.device)
                self._first_bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._first_bad_step = torch.where(
                bad_flag & (self._first_bad_step < 0), torch.full_like(self._first_bad_step, self.global_step), self._first_bad_step
            )
            self._nan_seen = self._nan_seen | bad_flag
            return
        flag = bad_flag.float().reshape(1)
        if self._nan_seen is not None:
            flag = torch.maximum(flag, self._nan_seen.float().reshape(1))
        if distributed:  # every rank decides together (no rank left waiting in a collective)
            flag = self._reduce(flag, "max")
        if not flag.item():
            return
        where = f" on rank {self.dist.rank}" if distributed else ""
        if self._nan_seen is not None and bool(self._nan_seen):
            first = int(self._first_bad_step)
            after = (
                "the loss scaler skipped the steps whose gradients were non-finite"
                if self.scaler is not None
                else f"every update since step {first} was skipped on device, so the weights are those before step {first}"
            )
            raise FloatingPointError(
                f"non-finite loss at step {first}{where} (found at the check of step {self.global_step}, epoch {epoch}); {after}."
            )
        bad = [k for k, v in terms.items() if isinstance(v, torch.Tensor) and not torch.isfinite(v).all()]
        names = ", ".join(bad) or "(on another rank)"
        if self.on_nan == "raise":
            raise FloatingPointError(
                f"non-finite loss at step {self.global_step} (epoch {epoch}, batch {batch_idx}){where}; "
                f"non-finite terms: {names}. The weights are those before this step."
            )
        if not self._window_nonfinite:
            log.warning("non-finite loss at step %d (epoch %d, batch %d); terms: %s; dropping this step (on_nan='skip')",
                        self.global_step, epoch, batch_idx, names)
        self._window_nonfinite = True

    def _optimizer_step(self) -> None:
        if self._window_nonfinite:  # on_nan="skip": drop this step entirely
            self._window_nonfinite = False
            self.optimizer.zero_grad(set_to_none=True)
            self.nan_skipped_steps += 1
            self._consecutive_nan += 1
            if self._consecutive_nan >= self.max_nan_skips:
                raise FloatingPointError(
                    f"{self._consecutive_nan} optimizer steps in a row had a non-finite loss (max_nan_skips="
                    f"{self.max_nan_skips}); stopping at step {self.global_step}. The weights are those before the first of them."
                )
            return
        self._consecutive_nan = 0
        self._sync_unsynced_grads()
        if self._nan_seen is not None and self.scaler is None:
            # deferred check: a fused optimizer skips its update on device when found_inf is set
            self.optimizer.found_inf = self._nan_seen.float()
            self.optimizer.grad_scale = None
        try:
            self._apply_step()
        finally:
            if self._nan_seen is not None and self.scaler is None:
                del self.optimizer.found_inf, self.optimizer.grad_scale

    def _apply_step(self) -> None:
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
        if hasattr(self.model, "update_target_encoder"):
            self.model.update_target_encoder()
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()
        self.global_step += 1

    @property
    def is_global_zero(self) -> bool:
        """True on the process that logs, shows progress and writes checkpoints (rank 0)."""
        return self.dist is None or self.dist.is_global_zero

    @property
    def multi_process(self) -> bool:
        """True in a distributed run of more than one process."""
        return self.dist is not None and self.dist.world_size > 1

    def _shard(self, loader: Any, *, shuffle: bool | None = None) -> Any:
        """``loader`` with a DistributedSampler when distributed (built once per loader)."""
        if loader is None or not self.multi_process:
            return loader
        cached = self._sharded.get(id(loader))
        if cached is not None and cached[0] is loader:
            return cached[1]
        from jepa.trainer.distributed import distributed_loader  # noqa: PLC0415

        seed = int(getattr(getattr(self.config, "training", None), "seed", 0) or 0)
        sharded = distributed_loader(loader, self.dist, shuffle=shuffle, seed=seed)
        self._sharded[id(loader)] = (loader, sharded)
        return sharded

    def _reduce(self, values: torch.Tensor, op: str = "mean") -> torch.Tensor:
        if not self.multi_process:
            return values
        from jepa.trainer.distributed import all_reduce  # noqa: PLC0415

        return all_reduce(values, op)

    def _barrier(self) -> None:
        if self.multi_process:
            torch.distributed.barrier()

    def _sync_unsynced_grads(self) -> None:
        """Average gradients over ranks when this accumulation window's forwards bypassed DDP
        (a custom ``training_step`` that calls ``self.model`` directly): never a silent divergence."""
        if self._ddp is None:
            return
        calls = self._ddp.module.calls
        bypassed = calls == self._ddp_calls_seen
        self._ddp_calls_seen = calls
        if not bypassed or not self.multi_process:
            return
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for g in grads:
            by_dtype.setdefault(g.dtype, []).append(g)
        for group in by_dtype.values():
            flat = torch.cat([g.reshape(-1) for g in group])
            torch.distributed.all_reduce(flat)
            flat /= self.dist.world_size
            offset = 0
            for g in group:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()

    def _save_in_loop(self, name: str) -> Path:
        """Save from inside :meth:`train`: every rank's RNG state is gathered, rank 0 writes, and all
        ranks wait for the file (no rank reads a checkpoint that is still being written)."""
        if not self.multi_process:
            path = jio.save(self.checkpoint_state(), self._resolve_path(name), async_=self.async_checkpoint)
            self._callback("on_save_checkpoint", path)
            return path
        mine = {"rng": _rng_state()}
        if self._epoch_progress is not None:
            mine["epoch_rng"] = self._epoch_progress["epoch_rng"]
        gathered: list[Any] = [None] * self.dist.world_size
        torch.distributed.all_gather_object(gathered, mine)
        path = self._resolve_path(name)
        if self.is_global_zero:
            state = self.checkpoint_state()
            state["rng_per_rank"] = [g["rng"] for g in gathered]
            if self._epoch_progress is not None:
                state["epoch_rng_per_rank"] = [g["epoch_rng"] for g in gathered]
            path = jio.save(state, path, async_=self.async_checkpoint)
            self._callback("on_save_checkpoint", path)
        self._barrier()
        return path

    def _maybe_resume(self) -> None:
        if self.resume is None or self._resumed:
            return
        path = self.resume_from(self.resume)
        if path is not None and self.is_global_zero:
            log.warning("resumed from %s at epoch %d, step %d", path, self.current_epoch, self.global_step)

    def resume_from(self, resume: str | os.PathLike) -> Path | None:
        """Load the checkpoint to continue from: a path, or ``"auto"`` for the newest one in
        ``save_dir`` that loads and verifies (chosen by rank 0 and broadcast when distributed; every
        rank must call this). Returns the path, or None when ``"auto"`` found no checkpoint."""
        self._resumed = True
        if resume != "auto":
            path = Path(resume)
            self.load_checkpoint(path)
            return path
        found = _load_latest_checkpoint(self.save_dir, self.device) if self.is_global_zero else None
        path = None if found is None else found[0]
        if self.multi_process:
            box = [None if path is None else str(path)]
            torch.distributed.broadcast_object_list(box, src=0)
            path = None if box[0] is None else Path(box[0])
        if path is None:
            if self.is_global_zero:
                log.info("resume='auto': no checkpoint in %s, starting from scratch", self.save_dir)
            return None
        if found is not None:  # rank 0 already holds the verified state
            self._restore(found[1], path)
        else:
            self.load_checkpoint(path)
        return path

    def close(self) -> None:
        """Release the DDP wrapper and destroy the process group when this trainer created it (also
        done at interpreter exit; a group you created yourself is left for you to destroy).

        The DDP wrapper is released first: it holds the process group, and a group whose last
        reference goes away only at interpreter teardown can abort the process there."""
        if self.dist is None or not torch.distributed.is_initialized():
            return
        import gc  # noqa: PLC0415

        if self._ddp is not None:
            if self.multi_process:
                self._barrier()  # no rank tears down while another is still in a collective
            self._ddp = None
            self._sharded.clear()
            gc.collect()
        if self.dist.owns_group:
            torch.distributed.destroy_process_group()

    def train(
        self, train_loader: DataLoader | None = None, num_epochs: int | None = None, val_loader: DataLoader | None = None
    ) -> dict[str, list[float]]:
        """Train until ``num_epochs`` epochs are done (continuing after a loaded checkpoint).

        With a trainer built from a config, every argument defaults to the config's data and
        ``training.epochs``. Returns the history: ``train_loss``, ``val_loss`` (when validation
        ran) and ``lr``, one value per epoch.

        Distributed (``distributed=True``): loaders without a ``DistributedSampler`` are rebuilt with
        one (see :func:`jepa.trainer.distributed.distributed_loader`), logged losses are means over
        ranks, and only rank 0 shows the progress bar, logs and writes checkpoints.
        """
        if train_loader is None:
            if self.train_loader is None:
                raise TypeError("train() needs a train_loader (only a trainer built from a config has a default one)")
            train_loader = self.train_loader
            val_loader = val_loader if val_loader is not None else self.val_loader
        if num_epochs is None:
            if self.num_epochs is None:
                raise TypeError("train() needs num_epochs (only a trainer built from a config has a default)")
            num_epochs = self.num_epochs
        _check_count("num_epochs", num_epochs)
        if self.dist is not None and self._ddp is None:
            raise RuntimeError("this distributed trainer was closed (trainer.close()); build a new one to train again")
        train_loader = self._shard(train_loader)
        val_loader = self._shard(val_loader, shuffle=False)
        self.max_epochs = num_epochs
        self.should_stop = False
        self._active_train_loader, self._active_val_loader = train_loader, val_loader
        steps_per_epoch = self._steps_per_epoch(train_loader)
        total_steps = steps_per_epoch * num_epochs
        self._maybe_resume()
        self._build_scheduler(total_steps)
        if hasattr(self.model, "set_total_steps"):
            self.model.set_total_steps(total_steps)
        bar = None
        if self.progress_bar and self.is_global_zero:
            from tqdm.auto import tqdm  # noqa: PLC0415

            bar = tqdm(total=total_steps, initial=min(self.global_step, total_steps), desc="train", unit="step", dynamic_ncols=True)
        check_every = self._nan_check_interval()
        distributed = self.multi_process
        if self._ddp is not None:
            self._ddp_calls_seen = self._ddp.module.calls
        self._callback("on_train_start", self.model)
        try:
            for epoch in range(self.current_epoch, num_epochs):
                self.current_epoch = epoch
                if distributed:
                    from jepa.trainer.distributed import set_loader_epoch  # noqa: PLC0415

                    set_loader_epoch(train_loader, epoch)
                self.model.train()
                self._callback("on_epoch_start", self.model)
                running = torch.zeros((), device=self.device)
                n_batches = 0
                n_loader = len(train_loader)
                skip_batches, resume_rng = 0, None
                position = self._resume_position
                self._resume_position = None
                if position is not None and position["epoch"] == epoch and position["batch_in_epoch"] > 0:
                    # Mid-epoch resume: replay the epoch's data order from its starting RNG state,
                    # skip the batches already trained on, then continue with the RNG state of the
                    # checkpoint. The next batch is the one an uninterrupted run would see next.
                    skip_batches = position["batch_in_epoch"]
                    resume_rng = _rng_state()
                    _set_rng_state(position["epoch_rng"])
                    running += float(position["running_loss"])
                    n_batches = int(position["running_batches"])
                # the RNG state the epoch's data order is drawn from (what a mid-epoch resume replays)
                epoch_rng = _rng_state() if self.checkpoint_every_n_steps else None
                for batch_idx, batch in enumerate(train_loader):
                    if batch_idx < skip_batches:
                        if batch_idx + 1 == skip_batches:
                            _set_rng_state(resume_rng)
                        continue
                    batch = move_to_device(batch, self.device)
                    self._callback("on_batch_start", self.model, batch, batch_idx)
                    last_of_epoch = batch_idx + 1 == n_loader
                    steps_now = (batch_idx + 1) % self.gradient_accumulation == 0 or last_of_epoch
                    # Gradient accumulation under DDP: no all-reduce until the last micro-batch.
                    no_sync = self._ddp.no_sync() if (self._ddp is not None and not steps_now) else contextlib.nullcontext()
                    with no_sync:
                        with self._autocast():
                            terms = self.training_step(batch, batch_idx)
                        if not isinstance(terms, Mapping) or "loss" not in terms:
                            raise TypeError(f"training_step must return a dict with a 'loss' tensor, got {type(terms).__name__}")
                        loss = terms["loss"]
                        self._check_loss(terms, epoch, batch_idx, check_every)
                        scaled = loss / self.gradient_accumulation
                        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
                    if not self._window_nonfinite:
                        running += loss.detach().float()
                        n_batches += 1
                    if steps_now:
                        self._optimizer_step()
                        if bar is not None:
                            bar.update(1)
                        if (
                            self.checkpoint_every_n_steps
                            and not last_of_epoch
                            and self.global_step % self.checkpoint_every_n_steps == 0
                        ):
                            self._epoch_progress = {
                                "epoch": epoch, "batch_in_epoch": batch_idx + 1, "epoch_rng": epoch_rng,
                                "running_loss": float(running), "running_batches": n_batches,
                            }
                            try:
                                self._save_in_loop("latest.pt")
                            finally:
                                self._epoch_progress = None
                        if self.global_step % self.log_every_n_steps == 0 or last_of_epoch:
                            names = [k for k, v in terms.items() if isinstance(v, torch.Tensor) and v.dim() == 0]
                            values = torch.stack([terms[k].detach().float() for k in names]) if names else None
                            if values is not None and distributed:
                                values = self._reduce(values)
                            metrics = {k: float(v) for k, v in zip(names, values.tolist())} if values is not None else {}
                            metrics["lr"] = self.current_lr()
                            if bar is not None:
                                bar.set_postfix(epoch=epoch + 1, loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}", refresh=False)
                            self._log({f"train/{k}": v for k, v in metrics.items()}, self.global_step)
                    if self.callbacks:
                        outputs = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in terms.items()}
                        self._callback("on_batch_end", self.model, outputs, batch, batch_idx)
                if distributed:
                    totals = self._reduce(torch.stack([running, torch.tensor(float(n_batches), device=self.device)]), "sum")
                    epoch_loss = float(totals[0]) / max(1.0, float(totals[1]))
                else:
                    epoch_loss = float(running) / max(1, n_batches)
                self.history["train_loss"].append(epoch_loss)
                self.history["lr"].append(self.current_lr())
                monitored = epoch_loss
                epoch_metrics: dict[str, Any] = {"epoch": epoch + 1, "train_loss": epoch_loss, "lr": self.current_lr()}
                if val_loader is not None and (epoch + 1) % self.val_every_n_epochs == 0:
                    val_loss = self.validate(val_loader)
                    if val_loss is not None:
                        self.history["val_loss"].append(val_loss)
                        monitored = val_loss
                        epoch_metrics["val_loss"] = val_loss
                        self._log({"val/loss": val_loss}, self.global_step)
                if self.scheduler is not None and self.scheduler_interval == "epoch":
                    if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                        self.scheduler.step(monitored)
                    else:
                        self.scheduler.step()
                self.current_epoch = epoch + 1
                self._callback("on_validation_end", self.model, epoch_metrics)
                if self.save_best and monitored < self.best_loss:
                    self.best_loss = monitored
                    self._save_in_loop("best_model.pt")
                if self.checkpoint_every_n_epochs and self.current_epoch % self.checkpoint_every_n_epochs == 0:
                    self._save_in_loop(f"epoch_{self.current_epoch}.pt")
                if self.checkpoint_every_n_steps:
                    self._save_in_loop("latest.pt")
                self._callback("on_epoch_end", self.model)
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
            if not self.multi_process:
                raise
            # Tear the process group down so that ranks blocked in a collective with this one fail
            # instead of waiting forever (torchrun then ends the others and reports this error).
            if self.dist.owns_group:
                with contextlib.suppress(Exception):
                    torch.distributed.destroy_process_group()
            if _is_peer_failure(exc):
                # The real error is another rank's; say so in one line instead of a gloo/NCCL trace.
                raise PeerFailureError(
                    f"rank {self.dist.rank}: stopped at step {self.global_step} because another rank failed "
                    "(its error is printed by that rank and summarised by torchrun)"
                ) from None
            raise
        finally:
            if bar is not None:
                bar.close()
            if self.async_checkpoint and self.is_global_zero:
                jio.wait()  # the last checkpoint is on disk when train() returns (or raises)
        return self.history

    @torch.no_grad()
    def validate(self, val_loader: DataLoader | None = None) -> float | None:
        """Mean validation loss over ``val_loader`` (None when ``validation_step`` returned None
        for every batch)."""
        if val_loader is None:
            val_loader = self.val_loader
            if val_loader is None:
                raise TypeError("validate() needs a val_loader (only a trainer built from a config has a default one)")
        was_training = self.model.training
        self.model.eval()
        total, count = torch.zeros((), device=self.device), 0
        try:
            n_batches = 0
            for batch_idx, batch in enumerate(val_loader):
                n_batches += 1
                batch = move_to_device(batch, self.device)
                with self._autocast():
                    out = self.validation_step(batch, batch_idx)
                if out is None:
                    continue
                total += out["loss"].detach().float()
                count += 1
        finally:
            self.model.train(was_training)
        if n_batches == 0:
            raise ValueError("val_loader yields no batches")
        if self.multi_process:
            totals = self._reduce(torch.stack([total.float(), torch.tensor(float(count), device=self.device)]), "sum")
            return float(totals[0]) / float(totals[1]) if float(totals[1]) else None
        return float(total) / count if count else None

    # ------------------------------------------------------------------ checkpoints
    def _resolve_path(self, name: str | os.PathLike) -> Path:
        path = Path(name)
        return path if path.is_absolute() or path.parent != Path(".") else self.save_dir / path

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to continue the run exactly: weights, optimizer, scheduler, counters, RNG."""
        state: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "model": {k: v.detach() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.current_epoch,
            "global_step": self.global_step,
            "best_loss": self.best_loss,
            "history": self.history,
            "rng": _rng_state(),
        }
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if self.scaler is not None:
            state["grad_scaler"] = self.scaler.state_dict()
        if self._epoch_progress is not None:  # a mid-epoch checkpoint: where in the epoch we are
            state["epoch_progress"] = dict(self._epoch_progress)
        state["nan_skipped_steps"] = self.nan_skipped_steps
        if isinstance(self.model, BaseModel):
            state["model_class"] = type(self.model).__name__
            state["model_config"] = json.dumps(self.model.config)
        from jepa import __version__  # noqa: PLC0415

        state["jepa_version"] = __version__
        return state

    def save_checkpoint(self, name: str | os.PathLike) -> Path:
        """Write the full training state to ``save_dir/name`` (atomically); returns the path.

        Distributed: only rank 0 writes (the call is a no-op returning the path on other ranks, so
        ``if rank == 0: trainer.save_checkpoint(...)`` and calling it on every rank both work).
        """
        if not self.is_global_zero:
            return self._resolve_path(name)
        path = jio.save(self.checkpoint_state(), self._resolve_path(name))
        self._callback("on_save_checkpoint", path)
        return path

    def load_checkpoint(self, name: str | os.PathLike, *, restore_rng: bool = True) -> dict[str, Any]:
        """Restore model, target encoder, optimizer, scheduler, counters and RNG from a checkpoint.

        ``name`` is a path or a file name inside ``save_dir``. A following :meth:`train` continues
        the same run.
        """
        path = self._resolve_path(name)
        if not path.is_file() and Path(name).is_file():
            path = Path(name)
        return self._restore(jio.load(path, map_location=self.device), path, restore_rng=restore_rng)

    def _restore(self, state: dict[str, Any], path: Path, *, restore_rng: bool = True) -> dict[str, Any]:
        """Apply a loaded checkpoint ``state`` (read from ``path``) to this trainer."""
        if "model" not in state:
            raise jio.CheckpointError(f"{str(path)!r} is not a jepa trainer checkpoint (no 'model' entry)")
        load_state_dict_strict(self.model, state["model"], source=str(path))
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        if "scheduler" in state:
            if self.scheduler is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            else:
                self._pending_scheduler_state = state["scheduler"]
        if "grad_scaler" in state and self.scaler is not None:
            self.scaler.load_state_dict(state["grad_scaler"])
        self.current_epoch = int(state.get("epoch", 0))
        self.global_step = int(state.get("global_step", 0))
        self.best_loss = float(state.get("best_loss", math.inf))
        self.history = {k: list(v) for k, v in state.get("history", self.history).items()}
        self.nan_skipped_steps = int(state.get("nan_skipped_steps", 0))
        mine = self.dist.rank if self.dist is not None else None

        def for_this_rank(key: str, fallback: Any) -> Any:
            per_rank = state.get(key)
            if mine is not None and isinstance(per_rank, (list, tuple)) and len(per_rank) == self.dist.world_size:
                return per_rank[mine]
            return fallback

        progress = state.get("epoch_progress")
        self._resume_position = None
        if progress is not None:
            position = dict(progress)
            position["epoch_rng"] = for_this_rank("epoch_rng_per_rank", progress["epoch_rng"])
            position["epoch"] = int(position["epoch"])
            position["batch_in_epoch"] = int(position["batch_in_epoch"])
            self._resume_position = position
        if restore_rng:
            rng = for_this_rank("rng_per_rank", state.get("rng"))
            if rng is not None:
                _set_rng_state(rng)
        return state


    def evaluate(self, loader: DataLoader | None = None) -> dict[str, float]:
        """Prediction metrics of the current model on ``loader`` (default: the config's held-out
        data): ``loss``, ``mse`` and ``cosine_similarity`` (see :class:`~jepa.trainer.eval.JEPAEvaluator`)."""
        from jepa.trainer.eval import JEPAEvaluator  # noqa: PLC0415

        if loader is None:
            loader = self.val_loader
            if loader is None:
                raise TypeError("evaluate() needs a loader (only a trainer built from a config has a default one)")
        was_training = self.model.training
        try:
            return JEPAEvaluator(self.model, device=self.device, loss_fn=self.loss_fn).evaluate(loader)
        finally:
            self.model.train(was_training)


class JEPATrainer(BaseTrainer):
    """Trains a :class:`~jepa.models.JEPA` (or :class:`~jepa.models.JEPAAction`).

    ``JEPATrainer(model, optimizer, ...)`` (v1) or ``JEPATrainer(config, callbacks=[...])`` (v0);
    see :class:`BaseTrainer` for every argument. Its ``training_step`` is the JEPA objective:
    the model's prediction/target (and context and projection embeddings) through ``loss_fn``
    (:class:`~jepa.trainer.losses.JEPALoss` by default).
    """


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors")


def find_latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The newest checkpoint in ``directory`` that loads and verifies (None when there is none).

    Temporary files of an interrupted save (``*.tmp-<pid>``) are never candidates; a damaged or
    truncated file is skipped with a warning and the next newest one is tried.
    """
    found = _load_latest_checkpoint(directory)
    return None if found is None else found[0]


def _load_latest_checkpoint(
    directory: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict[str, Any]] | None:
    """:func:`find_latest_checkpoint` with the state it loaded (so the winner is read only once)."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    candidates = [
        p for p in directory.iterdir()
        if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES and ".tmp-" not in p.name
    ]
    candidates.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for path in candidates:
        try:
            state = jio.load(path, map_location=map_location)
        except (jio.CheckpointError, OSError, ValueError) as exc:
            log.warning("skipping unreadable checkpoint %s: %s", path, exc)
            continue
        if isinstance(state, Mapping) and "model" in state:
            return path, state
    return None


def model_from_checkpoint_state(state: Mapping[str, Any], source: str = "checkpoint") -> BaseModel:
    """Rebuild the model recorded in a trainer checkpoint (class + config) and load its weights."""
    if "model_class" not in state or "model_config" not in state:
        raise jio.CheckpointError(f"{source}: no model class/config recorded; cannot rebuild the model without code")
    model = build_model(state["model_class"], json.loads(state["model_config"]))
    load_state_dict_strict(model, state["model"], source=source)
    return model


def create_trainer(
    model: nn.Module,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.05,
    device: str | torch.device = "auto",
    logger: Any = None,
    loss_fn: Callable[..., torch.Tensor] | None = None,
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
    from jepa.trainer.optimizers import build_adamw  # noqa: PLC0415

    ctx: Any = False
    if distributed:
        from jepa.trainer.distributed import init_distributed  # noqa: PLC0415

        ctx = init_distributed(world_size, local_rank, device)
        dev = ctx.device
    else:
        dev = resolve_device(device)
    model = model.to(dev)
    optimizer = build_adamw(model, learning_rate=learning_rate, weight_decay=weight_decay, betas=tuple(betas), eps=eps, device=dev)
    return JEPATrainer(model, optimizer, scheduler="cosine", device=dev, logger=logger, loss_fn=loss_fn, distributed=ctx, **trainer_kwargs)
