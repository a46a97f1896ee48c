"""The v0 training helpers (``docs/training-api/v0.md``, "Training utilities"), gathered under one
name. Each is defined in the module that owns its job; this module only re-exports them:

- :mod:`jepa.trainer.builders`: ``setup_training``;
- :mod:`jepa.trainer.optimizers` / :mod:`jepa.trainer.schedulers`: ``create_optimizer``,
  ``create_scheduler``;
- :mod:`jepa.trainer.checkpoints`: ``save_checkpoint``, ``load_checkpoint``, ``get_best_checkpoint``;
- :mod:`jepa.trainer.metrics`: ``compute_metrics``, ``log_metrics``;
- :mod:`jepa.trainer.reporting`: ``count_parameters``, ``log_model_summary``,
  ``plot_training_history``, ``track_progress``;
- :mod:`jepa.trainer.config_files`: ``save_training_config``, ``load_training_config``;
- :mod:`jepa.trainer.splits`: ``create_data_splits``;
- :mod:`jepa.trainer.environment`: ``setup_reproducibility``, ``get_device_info``.
"""

from __future__ import annotations

from jepa.trainer.builders import setup_training
from jepa.trainer.checkpoints import get_best_checkpoint, load_checkpoint, save_checkpoint
from jepa.trainer.config_files import load_training_config, save_training_config
from jepa.trainer.environment import get_device_info, setup_reproducibility
from jepa.trainer.metrics import compute_metrics, log_metrics
from jepa.trainer.optimizers import create_optimizer
from jepa.trainer.reporting import count_parameters, log_model_summary, plot_training_history, track_progress
from jepa.trainer.schedulers import create_scheduler
from jepa.trainer.splits import create_data_splits

__all__ = [
    "compute_metrics",
    "count_parameters",
    "create_data_splits",
    "create_optimizer",
    "create_scheduler",
    "get_best_checkpoint",
    "get_device_info",
    "load_checkpoint",
    "load_training_config",
    "log_metrics",
    "log_model_summary",
    "plot_training_history",
    "save_checkpoint",
    "save_training_config",
    "setup_reproducibility",
    "setup_training",
    "track_progress",
]
