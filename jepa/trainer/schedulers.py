"""Learning-rate schedules: warmup then cosine, linear, step or constant decay, and plateau
(:func:`create_scheduler`); who sets a run's learning rate and when its scheduler steps
(:class:`LRControl`)."""

from __future__ import annotations

import logging
import math

import torch
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from jepa.trainer.checks import check_choice, check_int, check_number

log = logging.getLogger("jepa")


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float, start_ratio: float = 0.0) -> float:
    """Multiplier of the base lr at ``step``: linear warmup from ``start_ratio`` (I-JEPA's
    ``start_lr / lr``; 0: from zero), then cosine decay to ``min_lr_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return start_ratio + (1.0 - start_ratio) * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class _WarmupCosine:
    """Picklable lr-lambda (a closure would break ``scheduler.state_dict()`` round trips)."""

    def __init__(self, total_steps: int, warmup_steps: int, min_lr_ratio: float, start_ratio: float = 0.0) -> None:
        self.total_steps, self.warmup_steps, self.min_lr_ratio = total_steps, warmup_steps, min_lr_ratio
        self.start_ratio = start_ratio

    def __call__(self, step: int) -> float:
        return warmup_cosine_factor(step, self.total_steps, self.warmup_steps, self.min_lr_ratio, self.start_ratio)


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.01,
    start_ratio: float = 0.0,
) -> LambdaLR:
    """A ``LambdaLR`` for per-step linear warmup (from ``start_ratio`` times the base lr) then cosine
    decay over ``total_steps``."""
    check_int("total_steps", total_steps, above=0)
    check_int("warmup_steps", warmup_steps, minimum=0, maximum=total_steps, maximum_name="total_steps")
    check_number("min_lr_ratio", min_lr_ratio, low=0.0, high=1.0)
    check_number("start_ratio", start_ratio, low=0.0, high=1.0)
    return LambdaLR(optimizer, _WarmupCosine(total_steps, warmup_steps, min_lr_ratio, start_ratio))


def _warmup_or(step: int, warmup_steps: int) -> float | None:
    """The warmup factor ``(step + 1) / warmup_steps`` while warming up, else None."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    return None


class _WarmupLinear:
    """Picklable lr-lambda: linear warmup, then linear decay to ``min_lr_ratio`` at ``total_steps``."""

    def __init__(self, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> None:
        self.total_steps, self.warmup_steps, self.min_lr_ratio = total_steps, warmup_steps, min_lr_ratio

    def __call__(self, step: int) -> float:
        w = _warmup_or(step, self.warmup_steps)
        if w is not None:
            return w
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return 1.0 - (1.0 - self.min_lr_ratio) * progress


class _WarmupStep:
    """Picklable lr-lambda: linear warmup, then ``gamma ** ((step - warmup) // step_size)``, floored at ``min_lr_ratio``."""

    def __init__(self, step_size: int, gamma: float, warmup_steps: int, min_lr_ratio: float) -> None:
        self.step_size, self.gamma, self.warmup_steps, self.min_lr_ratio = step_size, gamma, warmup_steps, min_lr_ratio

    def __call__(self, step: int) -> float:
        w = _warmup_or(step, self.warmup_steps)
        if w is not None:
            return w
        return max(self.min_lr_ratio, self.gamma ** ((step - self.warmup_steps) // self.step_size))


class _WarmupConstant:
    """Picklable lr-lambda: linear warmup, then the base lr."""

    def __init__(self, warmup_steps: int) -> None:
        self.warmup_steps = warmup_steps

    def __call__(self, step: int) -> float:
        w = _warmup_or(step, self.warmup_steps)
        return 1.0 if w is None else w


SCHEDULER_TYPES = ("cosine", "linear", "step", "constant", "plateau")


def create_scheduler(
    optimizer: torch.optim.Optimizer,
    scheduler_type: str = "cosine",
    max_epochs: int = 100,
    warmup_epochs: int = 0,
    min_lr: float = 0.0,
    steps_per_epoch: int | None = None,
    step_size: int | None = None,
    gamma: float = 0.1,
    patience: int = 10,
):
    """Build a learning-rate scheduler by name.

    Every schedule but ``"plateau"`` is a ``LambdaLR``: a linear warmup (the lr of unit ``u < W``
    is ``base_lr * (u + 1) / W``), then

    * ``"cosine"``: cosine decay from ``base_lr`` to ``min_lr``, reached at unit ``total``;
    * ``"linear"``: linear decay from ``base_lr`` to ``min_lr``, reached at unit ``total``;
    * ``"step"``: ``base_lr * gamma ** ((u - W) // step_size)``, never below ``min_lr``;
    * ``"constant"``: ``base_lr``.

    ``"plateau"`` returns ``ReduceLROnPlateau(mode="min", factor=gamma, patience=patience,
    min_lr=min_lr)``, stepped once per epoch with the monitored metric (no warmup).

    The unit is the optimizer step when ``steps_per_epoch`` is given (``total = max_epochs *
    steps_per_epoch``, ``W = warmup_epochs * steps_per_epoch``, ``step_size`` in epochs is
    converted to steps), else the epoch (``total = max_epochs``, ``W = warmup_epochs``). The returned
    scheduler carries ``jepa_interval`` (``"step"`` or ``"epoch"``): how often to call ``step()``.
    ``min_lr`` is absolute: each parameter group decays from its own lr to ``min_lr``.

    Args:
        optimizer: the optimizer whose lr is scheduled.
        scheduler_type: one of ``"cosine"``, ``"linear"``, ``"step"``, ``"constant"``,
            ``"plateau"`` (case-insensitive).
        max_epochs: length of the schedule in epochs (int > 0).
        warmup_epochs: warmup length in epochs (int in ``[0, max_epochs]``; 0 for ``"plateau"``).
        min_lr: lowest learning rate (>= 0, at most every group's lr).
        steps_per_epoch: optimizer steps per epoch (int > 0) to schedule per step; None: per epoch.
        step_size: epochs between decays for ``"step"`` (int > 0); default ``max(1, max_epochs // 3)``.
        gamma: decay factor of ``"step"`` and ``"plateau"`` (in ``(0, 1]``; ``(0, 1)`` for plateau).
        patience: epochs without improvement before ``"plateau"`` decays (int >= 0).
    """
    key = scheduler_type.lower() if isinstance(scheduler_type, str) else None
    if key not in SCHEDULER_TYPES:
        raise ValueError(f"create_scheduler: unknown scheduler_type {scheduler_type!r}; expected one of {', '.join(SCHEDULER_TYPES)}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"create_scheduler: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    owner = "create_scheduler"
    check_int("max_epochs", max_epochs, above=0, owner=owner)
    check_int("warmup_epochs", warmup_epochs, minimum=0, maximum=max_epochs, maximum_name="max_epochs", owner=owner)
    check_number("min_lr", min_lr, low=0, owner=owner)
    check_int("steps_per_epoch", steps_per_epoch, above=0, optional=True, owner=owner)
    check_int("step_size", step_size, above=0, optional=True, owner=owner)
    check_number("gamma", gamma, low=0, high=1, low_open=True, owner=owner)
    check_int("patience", patience, minimum=0, owner=owner)

    if key == "plateau":
        if warmup_epochs > 0:
            raise ValueError(f"create_scheduler: warmup_epochs={warmup_epochs} is not supported with scheduler_type='plateau'; expected 0")
        if gamma >= 1:
            raise ValueError(f"create_scheduler: gamma must be in (0, 1) for 'plateau', got {gamma!r}")
        sched = ReduceLROnPlateau(optimizer, mode="min", factor=float(gamma), patience=patience, min_lr=float(min_lr))
        sched.jepa_interval = "epoch"
        return sched

    per = steps_per_epoch or 1
    total, warmup = max_epochs * per, warmup_epochs * per
    lambdas = []
    for i, group in enumerate(optimizer.param_groups):
        base = group.get("initial_lr", group["lr"])
        if not base > 0:
            raise ValueError(f"create_scheduler: optimizer.param_groups[{i}] has lr {base!r}; expected > 0")
        if min_lr > base:
            raise ValueError(f"create_scheduler: min_lr={min_lr!r} exceeds the lr {base!r} of optimizer.param_groups[{i}]; expected min_lr <= lr")
        ratio = min_lr / base
        if key == "cosine":
            lambdas.append(_WarmupCosine(total, warmup, ratio))
        elif key == "linear":
            lambdas.append(_WarmupLinear(total, warmup, ratio))
        elif key == "step":
            size = (step_size if step_size is not None else max(1, max_epochs // 3)) * per
            lambdas.append(_WarmupStep(size, float(gamma), warmup, ratio))
        else:
            lambdas.append(_WarmupConstant(warmup))
    sched = LambdaLR(optimizer, lambdas)
    sched.jepa_interval = "step" if steps_per_epoch is not None else "epoch"
    return sched


class LRControl:
    """Who sets a training run's learning rate, and when its scheduler steps.

    ``scheduler`` is a scheduler instance (stepped every ``interval``: ``"epoch"`` by default), or a
    spec built by :meth:`setup` once the run's length is known: ``"cosine"`` (linear warmup over
    ``warmup_fraction`` of the steps, then cosine to ``min_lr_ratio`` times the base lr, per step) or
    a callable ``(optimizer, total_steps) -> scheduler`` (stepped as its ``jepa_interval`` says, else
    per step). A callback with ``owns_lr = True`` (e.g.
    :class:`~jepa.trainer.callbacks.LearningRateScheduler`) takes the learning rate over: the
    scheduler is then neither built nor stepped (a warning says so once).

    A scheduler state restored before the scheduler exists (:meth:`load_state_dict`) is applied
    when :meth:`setup` builds it.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler=None, interval: str | None = None,
                 warmup_fraction: float = 0.05, min_lr_ratio: float = 0.01) -> None:
        check_choice("scheduler_interval", interval, (None, "step", "epoch"))
        self.optimizer = optimizer
        self.warmup_fraction = check_number("warmup_fraction", warmup_fraction, low=0.0, high=1.0, high_open=True)
        self.min_lr_ratio = min_lr_ratio
        self.spec = scheduler
        self.owner = None  # the callback that owns the lr, once setup() found one
        self._pending: dict | None = None
        if hasattr(scheduler, "step") and hasattr(scheduler, "state_dict"):
            self.scheduler, self.interval = scheduler, interval or "epoch"
        else:
            if scheduler is not None and not (scheduler == "cosine" or callable(scheduler)):
                raise ValueError(f"scheduler must be a scheduler instance, 'cosine', a callable or None; got {scheduler!r}")
            self.scheduler, self.interval = None, interval or "step"

    def setup(self, total_steps: int, callbacks) -> None:
        """Before a run of ``total_steps`` optimizer steps: find an lr-owning callback among
        ``callbacks``, else build the scheduler from its spec (once)."""
        owner = next((cb for cb in callbacks if getattr(cb, "owns_lr", False)), None)
        if owner is not None and self.owner is None and (self.scheduler is not None or self.spec is not None):
            log.warning("%s sets the learning rate; the trainer's scheduler is not used", type(owner).__name__)
        self.owner = owner
        if owner is not None:
            return
        if self.scheduler is not None or self.spec is None:
            return
        if self.spec == "cosine":
            warmup = int(round(self.warmup_fraction * total_steps))
            self.scheduler = warmup_cosine_schedule(self.optimizer, total_steps, warmup, self.min_lr_ratio)
        else:
            self.scheduler = self.spec(self.optimizer, total_steps)
            # schedulers from create_scheduler say how they step
            self.interval = getattr(self.scheduler, "jepa_interval", self.interval)
        if self._pending is not None:
            self.scheduler.load_state_dict(self._pending)
            self._pending = None
            # Building a scheduler resets the optimizer's lr to the step-0 value; put back the lr of
            # the step the checkpoint was taken at.
            for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
                group["lr"] = lr

    def step(self, interval: str, monitored: float | None = None) -> None:
        """Step the scheduler at the end of a ``"step"`` or an ``"epoch"`` when it steps then
        (``monitored``: the metric a ``ReduceLROnPlateau`` watches)."""
        if self.scheduler is None or self.owner is not None or self.interval != interval:
            return
        if isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(monitored)
        else:
            self.scheduler.step()

    def state_dict(self) -> dict | None:
        """The scheduler's state (None while there is no scheduler)."""
        return None if self.scheduler is None else self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore the scheduler, now or (spec not built yet) when :meth:`setup` builds it."""
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state)
        else:
            self._pending = state
