"""CurriculumTrainer: the JEPA task gets harder over training (more of the context is hidden)."""

from __future__ import annotations

import math
from typing import Any

from jepa.trainer.callbacks import BaseCallback
from jepa.trainer.checks import check_choice, check_int
from jepa.trainer.trainer import JEPATrainer

__all__ = ["CurriculumTrainer", "difficulty_at"]

SCHEDULES = ("linear", "step", "exponential")


def difficulty_at(epoch: int, num_epochs: int, schedule: str, levels: int) -> float:
    """Difficulty in [0, 1] at ``epoch`` (0-based) of ``num_epochs``, quantized to ``levels`` levels.

    linear: rises evenly; step: ``levels`` equal-length stages; exponential: slow start, fast end.
    """
    check_choice("curriculum_schedule", schedule, SCHEDULES)
    check_int("difficulty_levels", levels, minimum=1)
    if levels == 1:
        return 1.0
    progress = epoch / max(1, num_epochs - 1)
    if schedule == "step":
        level = min(levels - 1, epoch * levels // max(1, num_epochs))
        return level / (levels - 1)
    if schedule == "exponential":
        progress = (math.exp(3 * progress) - 1) / (math.exp(3) - 1)
    return round(progress * (levels - 1)) / (levels - 1)


class _Curriculum(BaseCallback):
    def __init__(self, owner: "CurriculumTrainer") -> None:
        self.owner = owner

    def on_epoch_start(self, trainer: Any, model: Any) -> None:
        self.owner.apply_difficulty(difficulty_at(trainer.current_epoch, trainer.max_epochs or 1, self.owner.curriculum_schedule, self.owner.difficulty_levels))


class CurriculumTrainer(JEPATrainer):
    """JEPATrainer whose prediction task gets harder epoch by epoch.

    Difficulty ``d`` in [0, 1] follows ``curriculum_schedule`` over ``difficulty_levels`` levels
    and sets the fraction of context tokens hidden from the encoder:
    ``context_mask_ratio = min_mask_ratio + d * (max_mask_ratio - min_mask_ratio)``. Each epoch's
    difficulty and mask ratio are recorded in ``history["difficulty"]`` and
    ``history["context_mask_ratio"]`` and sent to the logger. Override :meth:`apply_difficulty` to
    make another knob (prediction horizon, augmentation strength) follow the curriculum.
    """

    def __init__(
        self,
        config: Any,
        curriculum_schedule: str = "linear",
        difficulty_levels: int = 5,
        min_mask_ratio: float = 0.0,
        max_mask_ratio: float = 0.6,
        **kwargs: Any,
    ) -> None:
        check_choice("curriculum_schedule", curriculum_schedule, SCHEDULES, owner="CurriculumTrainer")
        check_int("difficulty_levels", difficulty_levels, minimum=1, owner="CurriculumTrainer")
        if not 0.0 <= min_mask_ratio <= max_mask_ratio < 1.0:
            raise ValueError(f"CurriculumTrainer: need 0 <= min_mask_ratio <= max_mask_ratio < 1, got {min_mask_ratio!r}, {max_mask_ratio!r}")
        self.curriculum_schedule = curriculum_schedule
        self.difficulty_levels = difficulty_levels
        self.min_mask_ratio, self.max_mask_ratio = min_mask_ratio, max_mask_ratio
        callbacks = [_Curriculum(self), *kwargs.pop("callbacks", [])]
        super().__init__(config, callbacks=callbacks, **kwargs)
        self.history["difficulty"] = []
        self.history["context_mask_ratio"] = []

    def apply_difficulty(self, difficulty: float) -> None:
        """Set the task difficulty for the coming epoch (here: the context mask ratio)."""
        dataset = getattr(self.train_loader, "dataset", None)
        if dataset is None or not hasattr(dataset, "context_mask_ratio"):
            raise TypeError("CurriculumTrainer: the training dataset has no context_mask_ratio; override apply_difficulty()")
        ratio = self.min_mask_ratio + difficulty * (self.max_mask_ratio - self.min_mask_ratio)
        dataset.context_mask_ratio = ratio
        self.history["difficulty"].append(difficulty)
        self.history["context_mask_ratio"].append(ratio)
        self._log({"curriculum/difficulty": difficulty, "curriculum/context_mask_ratio": ratio}, self.global_step)
