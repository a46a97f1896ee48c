"""Fan-out logger."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .base import BaseLogger, check_metrics, check_step, to_plain_params


class MultiLogger(BaseLogger):
    """Forward every call to several loggers, in order.

    Any object with ``log_metrics(metrics, step)`` is accepted; ``log_hyperparams`` and ``close``
    are forwarded to the loggers that have them. :meth:`~jepa.loggers.BaseLogger.close` closes all of them even if one
    fails, then re-raises the first error.
    """

    def __init__(self, loggers: Iterable[Any]) -> None:
        super().__init__()
        if isinstance(loggers, (str, bytes)) or not isinstance(loggers, Iterable):
            raise TypeError(f"loggers must be an iterable of loggers; got {type(loggers).__name__}")
        self.loggers = list(loggers)
        for i, lg in enumerate(self.loggers):
            if not callable(getattr(lg, "log_metrics", None)):
                raise TypeError(f"loggers[{i}] must have log_metrics(metrics, step); got {type(lg).__name__}")

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Send ``metrics`` at ``step`` to every logger."""
        self._check_open("log_metrics")
        metrics, step = check_metrics(metrics), check_step(step)
        for lg in self.loggers:
            lg.log_metrics(dict(metrics), step)

    def log_hyperparams(self, params: Mapping[str, Any] | Any) -> None:
        """Send ``params`` to every logger that has ``log_hyperparams``."""
        self._check_open("log_hyperparams")
        plain = to_plain_params(params)
        for lg in self.loggers:
            fn = getattr(lg, "log_hyperparams", None)
            if callable(fn):
                fn(dict(plain))

    def _close(self) -> None:
        first_error: BaseException | None = None
        for lg in self.loggers:
            fn = getattr(lg, "close", None)
            if not callable(fn):
                continue
            try:
                fn()
            except Exception as e:  # close the others before reporting
                if first_error is None:
                    first_error = e
        if first_error is not None:
            raise first_error

    def __len__(self) -> int:
        return len(self.loggers)

    def __iter__(self):
        return iter(self.loggers)
