"""Console logger: one compact line per logged step."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

from .base import BaseLogger, format_value


class ConsoleLogger(BaseLogger):
    """Print ``step 10 | train/loss 0.1234 | lr 1.00e-03`` lines.

    Args:
        log_every: print only the steps that are multiples of this (1: every call).
        stream: a text stream with ``write`` (default: the current ``sys.stdout`` at each call)
            or a ``logging.Logger`` (lines go to ``logger.info``).
    """

    def __init__(self, log_every: int = 1, stream: TextIO | logging.Logger | None = None) -> None:
        super().__init__()
        if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
            raise ValueError(f"log_every must be an int >= 1; got {log_every!r}")
        if stream is not None and not isinstance(stream, logging.Logger) and not callable(getattr(stream, "write", None)):
            raise TypeError(f"stream must be a text stream with write() or a logging.Logger; got {type(stream).__name__}")
        self.log_every = log_every
        self.stream = stream

    def _emit(self, line: str) -> None:
        if isinstance(self.stream, logging.Logger):
            self.stream.info(line)
            return
        out = self.stream if self.stream is not None else sys.stdout
        out.write(line + "\n")
        flush = getattr(out, "flush", None)
        if callable(flush):
            flush()

    def _log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if step % self.log_every != 0:
            return
        parts = [f"step {step}"] + [f"{k} {format_value(v)}" for k, v in metrics.items()]
        self._emit(" | ".join(parts))

    def _log_hyperparams(self, params: dict[str, Any]) -> None:
        self._emit("hparams | " + " | ".join(f"{k} {v!r}" for k, v in params.items()))
