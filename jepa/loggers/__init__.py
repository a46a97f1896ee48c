"""Metric loggers the trainer calls with ``log_metrics(metrics, step)``.

Backends: :class:`ConsoleLogger`, :class:`CSVLogger`, :class:`TensorBoardLogger` (optional
``tensorboard``), :class:`WandbLogger` (optional ``wandb``), combined with :class:`MultiLogger`.
:func:`create_logger` builds them from a ``Config``. Optional packages are imported only when
their logger is constructed.
"""

from .base import BaseLogger
from .console import ConsoleLogger
from .csv_logger import CSVLogger, read_csv_metrics
from .factory import LOGGER_NAMES, create_logger
from .multi import MultiLogger
from .tensorboard_logger import TensorBoardLogger
from .wandb_logger import WandbLogger

__all__ = [
    "BaseLogger",
    "ConsoleLogger",
    "CSVLogger",
    "TensorBoardLogger",
    "WandbLogger",
    "MultiLogger",
    "create_logger",
    "read_csv_metrics",
    "LOGGER_NAMES",
]
