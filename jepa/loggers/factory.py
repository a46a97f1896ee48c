"""Build the loggers named in a :class:`~jepa.config.Config`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import BaseLogger
from .console import ConsoleLogger
from .csv_logger import CSVLogger
from .multi import MultiLogger
from .tensorboard_logger import TensorBoardLogger
from .wandb_logger import WandbLogger

LOGGER_NAMES = ("console", "csv", "tensorboard", "wandb")


def create_logger(config: Any) -> BaseLogger | None:
    """Create the loggers listed in ``config.logging.loggers``.

    ``config`` is a ``jepa.config.Config`` (or its ``LoggingConfig``). Files go under
    ``<output_dir>/logs/``: ``metrics.csv`` + ``hparams.yaml`` (csv), ``tensorboard/<experiment_name>/``
    (tensorboard), ``wandb/`` (wandb; project ``wandb_project``, or ``experiment_name`` when unset).
    The trainer already throttles calls to every ``log_every_n_steps``, so the console logger
    prints each call it receives.

    Returns:
        None for an empty list, the single logger for one name, else a :class:`MultiLogger`.

    Raises:
        ValueError: an unknown or repeated logger name.
        ImportError: tensorboard / wandb requested but not installed.
    """
    log_cfg = getattr(config, "logging", config)
    for attr in ("output_dir", "loggers", "experiment_name"):
        if not hasattr(log_cfg, attr):
            raise TypeError(
                f"config must be a jepa.config.Config or LoggingConfig (missing logging.{attr}); got {type(config).__name__}"
            )
    names = log_cfg.loggers
    if isinstance(names, str):
        names = [names]
    names = [str(n).strip().lower() for n in (names or [])]
    unknown = [n for n in names if n not in LOGGER_NAMES]
    if unknown:
        raise ValueError(f"logging.loggers: unknown logger name(s) {unknown}; valid names are {list(LOGGER_NAMES)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"logging.loggers: each logger may appear once; got {repeated} repeated in {names}")
    if not names:
        return None

    log_dir = Path(log_cfg.output_dir) / "logs"
    full_config = config.to_dict() if callable(getattr(config, "to_dict", None)) else None
    loggers: list[BaseLogger] = []
    try:
        for name in names:
            if name == "console":
                loggers.append(ConsoleLogger())
            elif name == "csv":
                loggers.append(CSVLogger(log_dir))
            elif name == "tensorboard":
                loggers.append(TensorBoardLogger(log_dir / "tensorboard", log_cfg.experiment_name))
            elif name == "wandb":
                loggers.append(
                    WandbLogger(
                        project=getattr(log_cfg, "wandb_project", None) or log_cfg.experiment_name,
                        name=log_cfg.experiment_name,
                        mode=getattr(log_cfg, "wandb_mode", "offline"),
                        save_dir=log_dir,
                        config=full_config,
                    )
                )
    except BaseException:
        for lg in loggers:  # do not leak open files when a later backend fails
            lg.close()
        raise
    return loggers[0] if len(loggers) == 1 else MultiLogger(loggers)
