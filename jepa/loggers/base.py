"""Base class and shared helpers for metric loggers."""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any


class BaseLogger:
    """Receives scalar metrics from the trainer.

    Subclasses implement ``_log_metrics`` (and optionally ``_log_hyperparams`` and ``_close``);
    the public methods validate arguments and refuse use after :meth:`close`.
    A logger is a context manager: ``with CSVLogger(...) as lg: ...`` closes it on exit.
    """

    def __init__(self) -> None:
        self._closed = False

    # ------------------------------------------------------------------ public API
    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Record scalar ``metrics`` (name -> number) at training ``step``."""
        self._check_open("log_metrics")
        self._log_metrics(check_metrics(metrics), check_step(step))

    def log_hyperparams(self, params: Mapping[str, Any] | Any) -> None:
        """Record the run's hyperparameters (a mapping or a dataclass such as ``Config``)."""
        self._check_open("log_hyperparams")
        self._log_hyperparams(to_plain_params(params))

    def close(self) -> None:
        """Flush and release resources. Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        self._close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def __enter__(self) -> "BaseLogger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ hooks
    def _log_metrics(self, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement _log_metrics(metrics, step)")

    def _log_hyperparams(self, params: dict[str, Any]) -> None:
        """Default: hyperparameters are ignored."""

    def _close(self) -> None:
        """Default: nothing to release."""

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__}.{what}() called after close()")


# ---------------------------------------------------------------------- helpers
def check_step(step: Any) -> int:
    """Return ``step`` as an int >= 0, or raise naming the bad value."""
    if isinstance(step, bool):
        raise TypeError(f"step must be an int >= 0; got bool {step!r}")
    try:
        value = operator.index(step)
    except TypeError:
        raise TypeError(f"step must be an int >= 0; got {type(step).__name__} {step!r}") from None
    if value < 0:
        raise ValueError(f"step must be an int >= 0; got {value}")
    return value


def check_metrics(metrics: Any) -> dict[str, float]:
    """Return ``metrics`` as ``{str: float}``; numbers, 0-dim tensors and numpy scalars are accepted."""
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping of name -> number; got {type(metrics).__name__}")
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"metrics keys must be non-empty strings; got {key!r}")
        out[key] = _to_float(key, value)
    return out


def _to_float(key: str, value: Any) -> float:
    if isinstance(value, numbers.Real):
        return float(value)
    item = getattr(value, "item", None)  # torch tensors / numpy arrays with one element
    numel = getattr(value, "numel", None) or getattr(value, "size", None)
    if callable(item):
        n = numel() if callable(numel) else numel
        if n in (1, None):
            try:
                v = item()
            except (ValueError, RuntimeError):
                v = None
            if isinstance(v, numbers.Real):
                return float(v)
    raise TypeError(f"metrics[{key!r}] must be a real number (or a one-element tensor); got {type(value).__name__} {value!r}")


def to_plain_params(params: Any) -> dict[str, Any]:
    """Convert hyperparameters (mapping or dataclass) to YAML-safe plain Python types."""
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        params = dataclasses.asdict(params)
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping or a dataclass instance; got {type(params).__name__}")
    return {str(k): _plain(v) for k, v in params.items()}


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return _plain(item())
        except (ValueError, RuntimeError):
            pass
    return repr(value)


def format_value(value: float) -> str:
    """Compact text for a metric: ``0.1234``, ``1.00e-03``, ``nan``."""
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    mag = abs(value)
    if mag < 1e-2 or mag >= 1e5:
        return f"{value:.2e}"
    return f"{value:.4f}"
