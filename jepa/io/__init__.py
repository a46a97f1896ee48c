"""Checkpoint files: the Python face of the C++ checkpoint reader/writer in ``jepa._C``.

A checkpoint is a safetensors file (``safetensors.torch.load_file`` reads every tensor of it, and
:func:`load` reads any safetensors file). Tensors of the state (model weights, optimizer state,
RNG states, numpy arrays) are stored under stable flattened names (``model.encoder.0.weight``,
``optimizer.state.0.exp_avg``); everything else (epoch, step, best loss, scheduler state,
``param_groups``, config, library version) is a JSON tree in ``__metadata__["jepa.state"]`` that
gives back the same Python types (tuples, int dict keys, inf/nan floats, ...). See
``jepa/io/_codec.py`` for the mapping and ``csrc/checkpoint/checkpoint.h`` for the file layout.

Safety: :func:`save` writes ``<path>.tmp-<pid>`` with several threads, fsyncs it, renames it over
``path`` and fsyncs the directory, so a crash leaves the previous file intact; a CRC32C per tensor
and one over the header are verified by :func:`load` (``verify=False`` skips the data checksums).
Files are recognised by their content, not their name: ``.pt``/``.pth`` names hold this format,
and upstream ``torch.save`` files are still read, with ``torch.load(weights_only=True)``.

Sharded checkpoints (one file per rank and a metadata file that commits the save, for models
sharded over ranks): :func:`save_sharded` writes them, :func:`open_checkpoint` reads the metadata and
the shards on demand, and :func:`load` of the metadata file returns the whole state; see
:mod:`jepa.io.sharded`.

Public API: :func:`save`, :func:`load`, :class:`AsyncCheckpointer`, :func:`wait`,
:func:`atomic_write`, :class:`CheckpointError`, :func:`save_sharded`, :func:`open_checkpoint`,
:class:`ShardedCheckpoint`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from jepa.io._async import AsyncCheckpointer, default_checkpointer
from jepa.io._file import FORMAT, CheckpointError, read_file, write_file
from jepa.io._codec import encode
from jepa.io.sharded import ShardedCheckpoint, is_sharded_state, open_checkpoint, save_sharded

__all__ = [
    "AsyncCheckpointer",
    "CheckpointError",
    "ShardedCheckpoint",
    "atomic_write",
    "load",
    "open_checkpoint",
    "save",
    "save_sharded",
    "wait",
]

_SNIFF_BYTES = 16


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
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # pragma: no cover - file systems that refuse directory fsync
        pass
    finally:
        os.close(dir_fd)


def _check_path(path: Any, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"jepa.io.{what}: path must be a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


def _metadata(enc) -> dict[str, str]:
    import json  # noqa: PLC0415

    from jepa import __version__  # noqa: PLC0415

    return {"format": "pt", "jepa.format": FORMAT, "jepa.version": __version__, "jepa.torch_version": torch.__version__,
            "jepa.state": json.dumps(enc.tree, separators=(",", ":"), allow_nan=False)}


def save(state: Mapping[str, Any], path: str | os.PathLike, *, async_: bool = False, num_threads: int = 0) -> Path:
    """Write ``state`` (nested dicts/lists/tuples of tensors, numpy arrays, numbers, strings) durably to ``path``.

    The file is complete and fsynced when this returns. With ``async_=True`` the tensors are
    snapshotted to CPU memory and the file is written in a background thread by the process-wide
    :class:`AsyncCheckpointer` (see :func:`wait`); the call returns once the snapshot is taken.
    ``num_threads`` (0: every hardware thread) writes and checksums in parallel. Parent folders are
    created. Returns ``path``.

    Raises:
        TypeError: ``state`` is not a mapping or holds an object that cannot be stored.
        OSError: the file cannot be written (the previous file at ``path`` is left intact and no
            temporary file remains).
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"jepa.io.save: state must be a mapping (dict), got {type(state).__name__}")
    path = _check_path(path, "save")
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 0:
        raise ValueError(f"jepa.io.save: num_threads must be an int >= 0 (0: all hardware threads), got {num_threads!r}")
    if async_:
        return default_checkpointer().save(state, path)
    default_checkpointer().wait_for_path(path)
    enc = encode(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, enc, _metadata(enc), num_threads=num_threads)
    return path


def wait() -> Path | None:
    """Wait for the background save started by ``save(..., async_=True)``; returns its path (None
    when none was in flight). Raises the error of a failed background save."""
    return default_checkpointer().wait()


def _sniff(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if head[8:9] == b"{":
        return "safetensors"  # 8-byte header length, then the JSON header
    if head.startswith(b"PK\x03\x04"):
        return "torch"  # torch.save zip container
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in (2, 3, 4, 5):
        return "torch"  # legacy (pre-1.6) torch.save pickle stream
    return "safetensors"  # ours, any safetensors file, or a damaged/foreign file (the reader says which)


def load(path: str | os.PathLike, *, map_location: str | torch.device | None = "cpu", verify: bool = True,
         num_threads: int = 0, shards: bool = True) -> Any:
    """Read a checkpoint written by :func:`save` or :func:`save_sharded`, any safetensors file, or an upstream ``torch.save`` file.

    The format is detected from the content. Our files give back the saved state with the same
    types; other safetensors files a flat ``{name: tensor}`` dict; torch files are read with
    ``torch.load(weights_only=True)`` (no unpickling of arbitrary objects). With ``verify`` (the
    default) every checksum is checked before anything is returned; ``verify=False`` maps the file
    lazily. CPU tensors are zero-copy views of a private (copy-on-write) mapping of the file:
    writing to them never changes the file, and they stay valid after the file is deleted or
    replaced by a rename (as :func:`save` does); truncating the file in place while they are
    alive is not supported (as with ``torch.load(mmap=True)``).
    ``map_location`` moves tensors to that device.

    The metadata file of a sharded checkpoint (:func:`save_sharded`) gives the whole state, every
    tensor assembled from the shard files (each verified); ``shards=False`` gives the metadata as
    stored, with references in place of the sharded tensors (see :func:`open_checkpoint`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is truncated, corrupted or not a checkpoint (the message says what).
    """
    path = _check_path(path, "load")
    if not isinstance(verify, bool):
        raise TypeError(f"jepa.io.load: verify must be a bool, got {type(verify).__name__}")
    default_checkpointer().wait_for_path(path)
    if not path.is_file():
        if path.exists():
            raise CheckpointError(f"{str(path)!r} is not a regular file")
        raise FileNotFoundError(f"checkpoint not found: {str(path)!r}")
    if _sniff(path) == "torch":
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # torch raises many types for damaged files
            raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {type(exc).__name__}: {exc}") from exc
    state = read_file(path, map_location=map_location, verify=verify, num_threads=num_threads)
    if shards and is_sharded_state(state):
        return ShardedCheckpoint(path, state, map_location).consolidate(state)
    return state
