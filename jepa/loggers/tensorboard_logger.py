"""TensorBoard logger (needs the optional ``tensorboard`` package)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .base import BaseLogger

TENSORBOARD_MISSING = "TensorBoardLogger needs tensorboard: pip install 'jepa-torch[tensorboard]'"


class TensorBoardLogger(BaseLogger):
    """Write scalars with ``torch.utils.tensorboard.SummaryWriter`` to ``<save_dir>/<name>``.

    ``tensorboard`` is imported only here, at construction; without it an ``ImportError`` says
    what to install. Hyperparameters are stored as a YAML text summary (tag ``hparams``) and as
    ``hparams.yaml`` in the run folder. Events are flushed after every :meth:`~jepa.loggers.BaseLogger.log_metrics` call.
    """

    def __init__(self, save_dir: str | os.PathLike, name: str = "jepa") -> None:
        super().__init__()
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string; got {name!r}")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError(TENSORBOARD_MISSING) from e
        self.log_dir = Path(save_dir) / name
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def _log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def _log_hyperparams(self, params: dict[str, Any]) -> None:
        text = yaml.safe_dump(params, sort_keys=False)
        (self.log_dir / "hparams.yaml").write_text(text, encoding="utf-8")
        # Markdown code block keeps the YAML indentation readable in TensorBoard's text tab.
        self.writer.add_text("hparams", "```\n" + text + "```", global_step=0)
        self.writer.flush()

    def _close(self) -> None:
        self.writer.close()
