"""What the trainer does when a loss is not finite (NaN or inf): :class:`NonFinitePolicy`.

A leaf of :mod:`jepa.trainer`: it imports nothing else from it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch

from jepa.trainer.checks import check_choice, check_int

__all__ = ["NonFinitePolicy"]

log = logging.getLogger("jepa")


class NonFinitePolicy:
    """Detects non-finite losses and decides what happens to the optimizer step.

    The trainer calls :meth:`check` after every forward (with that batch's loss terms) and
    :meth:`optimizer_step` once per accumulation window, in place of stepping the optimizer itself.

    State machine:

    * **host check** (``check_every == 1``, or ``step % check_every == 0``): the loss's finiteness
      (OR-ed with the deferred flag below, and with every rank's under DDP, so all ranks decide
      alike) is read on the host.

      - all finite: nothing happens;
      - the deferred flag was set: raise ``FloatingPointError`` naming the first bad step (every
        update since then was skipped on device, so the weights are those before it);
      - ``on_nan="raise"``: raise ``FloatingPointError`` naming step, epoch, batch and the
        non-finite terms (the optimizer has not stepped: the weights are those before this step);
      - ``on_nan="skip"``: mark the current accumulation window *bad* (warning once per window).

    * **deferred check** (other steps; only with ``on_nan="raise"`` and an optimizer that can skip
      an update on device, see :meth:`interval`): the finiteness is OR-ed into a device flag that
      stays set (*sticky*) and the first bad step is recorded on device; no host sync.

    * **optimizer step**: a *bad* window is dropped (gradients zeroed, no update, no EMA or
      scheduler step; ``skipped_steps`` and the run of consecutive drops grow; ``max_nan_skips``
      consecutive drops raise). Otherwise the consecutive count resets; while a deferred flag
      exists it is handed to the optimizer as ``found_inf`` (fused Adam/AdamW then skip the update
      on device when it is set) for the duration of the step.

    Args:
        on_nan: ``"raise"`` or ``"skip"``.
        max_nan_skips: consecutive dropped steps after which ``"skip"`` raises.
        check_every: steps between host checks (None: chosen by :meth:`interval`).
    """

    def __init__(self, on_nan: str = "raise", max_nan_skips: int = 10, check_every: int | None = None) -> None:
        self.on_nan = check_choice("on_nan", on_nan, ("raise", "skip"))
        self.max_nan_skips = check_int("max_nan_skips", max_nan_skips, minimum=1)
        self.check_every = check_int("nan_check_every_n_steps", check_every, minimum=1, optional=True)
        self.skipped_steps = 0  # optimizer steps dropped by on_nan="skip"
        self._consecutive = 0
        self._window_bad = False  # on_nan="skip": this accumulation window saw a non-finite loss
        self._seen: torch.Tensor | None = None  # deferred check: device flag, sticky until checked
        self._first_bad: torch.Tensor | None = None

    @property
    def window_bad(self) -> bool:
        """True when the current accumulation window saw a non-finite loss (``on_nan="skip"``)."""
        return self._window_bad

    @staticmethod
    def can_defer(on_nan: str, scaler: Any, optimizer: Any) -> bool:
        """Whether a step after a non-finite loss can be kept from changing the weights without a
        host sync: fused Adam/AdamW skip their update on device when ``found_inf`` is set; with
        fp16 the GradScaler skips steps whose gradients are non-finite."""
        return on_nan == "raise" and (scaler is not None or bool(getattr(optimizer, "_step_supports_amp_scaling", False)))

    def interval(self, device: torch.device, scaler: Any, optimizer: Any, log_every: int) -> int:
        """Steps between host checks: ``check_every`` when deferring is safe (else 1); by default
        every step on the CPU and every ``log_every`` steps on accelerators that can defer."""
        defer = self.can_defer(self.on_nan, scaler, optimizer)
        if self.check_every is not None:
            return self.check_every if defer else 1
        return log_every if defer and device.type != "cpu" else 1

    def check(
        self,
        terms: Mapping[str, Any],
        *,
        step: int,
        epoch: int,
        batch_idx: int,
        every: int,
        scaler_active: bool,
        reduce_max: Callable[[torch.Tensor], torch.Tensor] | None = None,
        rank: int | None = None,
    ) -> None:
        """Look at ``terms["loss"]`` of the batch just computed (see the class docstring)."""
        loss = terms["loss"].detach()
        bad = ~torch.isfinite(loss).all()
        if every > 1 and step % every != 0:
            if self._seen is None:
                self._seen = torch.zeros((), dtype=torch.bool, device=loss.device)
                self._first_bad = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._first_bad = torch.where(bad & (self._first_bad < 0), torch.full_like(self._first_bad, step), self._first_bad)
            self._seen = self._seen | bad
            return
        flag = bad.float().reshape(1)
        if self._seen is not None:
            flag = torch.maximum(flag, self._seen.float().reshape(1))
        if reduce_max is not None:  # every rank decides together (no rank left waiting in a collective)
            flag = reduce_max(flag)
        if not flag.item():
            return
        where = f" on rank {rank}" if rank is not None else ""
        if self._seen is not None and bool(self._seen):
            first = int(self._first_bad)
            after = (
                "the loss scaler skipped the steps whose gradients were non-finite"
                if scaler_active
                else f"every update since step {first} was skipped on device, so the weights are those before step {first}"
            )
            raise FloatingPointError(f"non-finite loss at step {first}{where} (found at the check of step {step}, epoch {epoch}); {after}.")
        names = ", ".join(k for k, v in terms.items() if isinstance(v, torch.Tensor) and not torch.isfinite(v).all()) or "(on another rank)"
        if self.on_nan == "raise":
            raise FloatingPointError(
                f"non-finite loss at step {step} (epoch {epoch}, batch {batch_idx}){where}; "
                f"non-finite terms: {names}. The weights are those before this step."
            )
        if not self._window_bad:
            log.warning("non-finite loss at step %d (epoch %d, batch %d); terms: %s; dropping this step (on_nan='skip')", step, epoch, batch_idx, names)
        self._window_bad = True

    def optimizer_step(self, optimizer: torch.optim.Optimizer, apply: Callable[[], None], *, step: int, scaler_active: bool) -> bool:
        """Run ``apply`` (the optimizer update) unless the window is bad; True when it ran."""
        if self._window_bad:
            self._window_bad = False
            optimizer.zero_grad(set_to_none=True)
            self.skipped_steps += 1
            self._consecutive += 1
            if self._consecutive >= self.max_nan_skips:
                raise FloatingPointError(
                    f"{self._consecutive} optimizer steps in a row had a non-finite loss (max_nan_skips="
                    f"{self.max_nan_skips}); stopping at step {step}. The weights are those before the first of them."
                )
            return False
        self._consecutive = 0
        hand_over = self._seen is not None and not scaler_active
        if hand_over:  # fused optimizers skip their update on device when found_inf is set
            optimizer.found_inf = self._seen.float()
            optimizer.grad_scale = None
        try:
            apply()
        finally:
            if hand_over:
                del optimizer.found_inf, optimizer.grad_scale
        return True
