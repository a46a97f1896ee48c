"""CSV logger: a long ("tidy") ``step,metric,value`` file, flushed after every call."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import yaml

from .base import BaseLogger

CSV_HEADER = ("step", "metric", "value")


class CSVLogger(BaseLogger):
    """Append metrics to ``<save_dir>/<name>`` as rows ``step,metric,value``.

    The long layout keeps the file valid when new metric names appear mid-run. Each call is
    flushed so a crash of the process loses nothing already logged. An existing file with the
    same header is appended to (resumed runs); one with another header is refused.
    :meth:`~jepa.loggers.BaseLogger.log_hyperparams` writes ``hparams.yaml`` next to the CSV file.

    Args:
        save_dir: folder for the files (created if missing).
        name: CSV file name inside ``save_dir``.
        fsync: also ``os.fsync`` after each call (survives a machine crash, not only a process crash).
    """

    def __init__(self, save_dir: str | os.PathLike, name: str = "metrics.csv", *, fsync: bool = False) -> None:
        super().__init__()
        if not isinstance(name, str) or not name or Path(name).name != name:
            raise ValueError(f"name must be a plain file name such as 'metrics.csv'; got {name!r}")
        self.save_dir = Path(save_dir)
        if self.save_dir.exists() and not self.save_dir.is_dir():
            raise ValueError(f"save_dir must be a directory; got existing file {str(self.save_dir)!r}")
        self.save_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.save_dir / name
        self.hparams_path = self.save_dir / "hparams.yaml"
        self.fsync = fsync
        self._check_existing_header()
        self._file = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        if self._file.tell() == 0:
            self._writer.writerow(CSV_HEADER)
            self._flush()

    def _check_existing_header(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), None)
        if tuple(header or ()) != CSV_HEADER:
            raise ValueError(
                f"CSVLogger: existing file {str(self.path)!r} has header {header!r}, expected {list(CSV_HEADER)!r}; "
                "choose another save_dir or name"
            )

    def _flush(self) -> None:
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    def _log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._writer.writerows((step, key, repr(value)) for key, value in metrics.items())
        self._flush()

    def _log_hyperparams(self, params: dict[str, Any]) -> None:
        tmp = self.hparams_path.with_suffix(".yaml.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            yaml.safe_dump(params, f, sort_keys=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.hparams_path)

    def _close(self) -> None:
        self._file.close()


def read_csv_metrics(path: str | os.PathLike) -> list[tuple[int, str, float]]:
    """Read a file written by :class:`CSVLogger` back as ``[(step, metric, value), ...]``."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if tuple(header or ()) != CSV_HEADER:
            raise ValueError(f"{str(path)!r} is not a CSVLogger file: header {header!r}, expected {list(CSV_HEADER)!r}")
        return [(int(s), m, float(v)) for s, m, v in reader]
