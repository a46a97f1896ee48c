"""Weights & Biases logger (needs the optional ``wandb`` package)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .base import BaseLogger, to_plain_params

WANDB_MISSING = "WandbLogger needs wandb: pip install 'jepa-torch[wandb]'"
WANDB_MODES = ("online", "offline", "disabled")


class WandbLogger(BaseLogger):
    """Log to a W&B run started with ``wandb.init``.

    The default ``mode="offline"`` needs no network or account: the run is written under
    ``save_dir`` and can be uploaded later with ``wandb sync``. ``wandb`` is imported only here,
    at construction; without it an ``ImportError`` says what to install.

    Args:
        project: W&B project name.
        name: run name (W&B picks one when None).
        mode: "online", "offline" or "disabled".
        save_dir: folder for W&B's files (created if missing; W&B's default when None).
        config: hyperparameters recorded with the run (mapping or dataclass such as ``Config``).
    """

    def __init__(
        self,
        project: str,
        name: str | None = None,
        mode: str = "offline",
        save_dir: str | os.PathLike | None = None,
        config: Mapping[str, Any] | Any | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(project, str) or not project:
            raise ValueError(f"project must be a non-empty string; got {project!r}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string or None; got {type(name).__name__} {name!r}")
        if mode not in WANDB_MODES:
            raise ValueError(f"mode must be one of {list(WANDB_MODES)}; got {mode!r}")
        plain_config = to_plain_params(config) if config is not None else None
        try:
            import wandb
        except ImportError as e:
            raise ImportError(WANDB_MISSING) from e
        self.save_dir = Path(save_dir) if save_dir is not None else None
        if self.save_dir is not None:
            self.save_dir.mkdir(parents=True, exist_ok=True)
        self.project, self.name, self.mode = project, name, mode
        self.run = wandb.init(
            project=project,
            name=name,
            mode=mode,
            dir=str(self.save_dir) if self.save_dir is not None else None,
            config=plain_config,
        )

    def _log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def _log_hyperparams(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def _close(self) -> None:
        self.run.finish()
