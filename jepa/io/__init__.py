"""Checkpoint files: atomic, fsync'd writes and safe (no-unpickling) reads.

Today checkpoints are torch files written atomically (temporary file, fsync, rename) and read with
``torch.load(weights_only=True)``; the C++ safetensors-format reader/writer of the checkpoint issue
will replace the body of :func:`save` / :func:`load` without changing their signatures.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["CheckpointError", "atomic_write", "load", "save"]


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupted or not a checkpoint."""


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)``, fsync the file, rename it over ``path`` and fsync the directory.

    A crash at any moment leaves either the previous ``path`` or the new one, never a mix; the
    temporary file is removed when ``write`` fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        write(str(tmp))
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return path
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def save(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) durably to ``path``."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save` (or an upstream ``torch.save`` of plain state)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {str(path)!r}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {type(exc).__name__}: {exc}") from exc
