"""A cosine schedule of the weight decay (I-JEPA raises it from 0.04 to 0.4 over training)."""

from __future__ import annotations

import math
from typing import Any

from jepa.trainer.callbacks import BaseCallback
from jepa.trainer.checks import check_number

__all__ = ["WeightDecaySchedule", "cosine_weight_decay"]


def cosine_weight_decay(step: int, total_steps: int, start: float, end: float) -> float:
    """The weight decay at optimizer step ``step`` of ``total_steps``: ``start`` at 0, ``end`` at the
    end, along a half cosine (I-JEPA's ``CosineWDSchedule``)."""
    progress = min(1.0, step / max(1, total_steps))
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WeightDecaySchedule(BaseCallback):
    """Set the weight decay of the decayed parameter groups (those with a weight decay > 0 when
    training starts) before every batch to :func:`cosine_weight_decay` of the trainer's
    ``global_step``: a function of the step alone, so a resumed run continues the same schedule.

    Args:
        start: weight decay at step 0 (> 0; the groups' own value is replaced).
        end: weight decay at the last step (>= 0).
    """

    def __init__(self, start: float, end: float) -> None:
        self.start = check_number("start", start, low=0, low_open=True, owner="WeightDecaySchedule")
        self.end = check_number("end", end, low=0, owner="WeightDecaySchedule")
        self._groups: list[dict[str, Any]] = []
        self._total = 1

    def on_train_start(self, trainer: Any, model: Any) -> None:
        self._groups = [g for g in trainer.optimizer.param_groups if g.get("weight_decay", 0.0) > 0]
        self._total = int(trainer.total_steps)

    def on_batch_start(self, trainer: Any, model: Any, batch: Any, batch_idx: int) -> None:
        wd = cosine_weight_decay(trainer.global_step, self._total, self.start, self.end)
        for group in self._groups:
            group["weight_decay"] = wd
