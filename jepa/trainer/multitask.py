"""MultiTaskTrainer: several weighted objectives on one model."""

from __future__ import annotations

from typing import Any, Callable

import torch

from jepa.trainer.objective import loss_terms, model_outputs
from jepa.trainer.trainer import JEPATrainer

__all__ = ["MultiTaskTrainer"]


class MultiTaskTrainer(JEPATrainer):
    """JEPATrainer that optimizes a weighted sum of task losses.

    ``training_step`` calls :meth:`forward_tasks` (``batch -> (outputs, targets)``, dicts keyed
    by task name) and :meth:`compute_loss` (``(outputs, targets) -> dict`` with ``total_loss`` and
    one ``<task>_loss`` per task). Weights come from ``config.task_weights`` (missing tasks
    weigh 1.0). By default there is one task, ``"jepa"`` (the JEPA objective); register more with
    :meth:`add_task` or override both methods.
    """

    def __init__(self, config: Any, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.task_weights: dict[str, float] = dict(getattr(self.config, "task_weights", {}) or {})
        self.task_losses: dict[str, Callable[[Any, Any], torch.Tensor]] = {"jepa": self._jepa_task_loss}

    def add_task(self, name: str, loss_fn: Callable[[Any, Any], torch.Tensor], weight: float | None = None) -> None:
        """Register a task: ``loss_fn(outputs[name], targets[name]) -> scalar``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"add_task: name must be a non-empty string, got {name!r}")
        self.task_losses[name] = loss_fn
        if weight is not None:
            self.task_weights[name] = float(weight)

    def _jepa_task_loss(self, outputs: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        return loss_terms(self.loss_fn, {**outputs, "target": target})["loss"]

    def forward_tasks(self, batch: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """Model outputs and targets per task for one batch (default: the JEPA task)."""
        out = model_outputs(self.model, batch)
        return {"jepa": out}, {"jepa": out["target"]}

    def compute_loss(self, outputs: dict[str, Any], targets: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Weighted sum of the registered task losses; returns ``total_loss`` and ``<task>_loss``."""
        losses: dict[str, torch.Tensor] = {}
        total = None
        for name, fn in self.task_losses.items():
            if name not in outputs:
                raise KeyError(f"compute_loss: no outputs for task {name!r}; got {sorted(outputs)}")
            value = fn(outputs[name], targets.get(name))
            losses[f"{name}_loss"] = value
            weighted = self.task_weights.get(name, 1.0) * value
            total = weighted if total is None else total + weighted
        losses["total_loss"] = total
        return losses

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        outputs, targets = self.forward_tasks(batch)
        losses = self.compute_loss(outputs, targets)
        if "total_loss" not in losses:
            raise KeyError("compute_loss must return a dict with 'total_loss'")
        return {"loss": losses["total_loss"], **{k: v for k, v in losses.items() if k != "total_loss"}}
