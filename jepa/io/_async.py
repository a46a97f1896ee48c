"""Asynchronous checkpoint saves: snapshot the tensors, write the file in a background thread."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Mapping

import torch

from jepa.io._codec import encode
from jepa.io._file import CheckpointError, native, write_file

__all__ = ["AsyncCheckpointer", "default_checkpointer"]


class AsyncCheckpointer:
    """Writes checkpoints in a background thread while training goes on.

    :meth:`save` copies every tensor of the state into CPU snapshot buffers (pinned memory for
    CUDA tensors, copied on the current stream; the writer thread waits for those copies), starts
    the write and returns: the training loop is blocked only for the copy. At most one save is in
    flight: :meth:`save` first waits for the previous one. The buffers are kept and reused while
    the state keeps the same layout (names, dtypes, shapes), so steady-state saves allocate nothing.

    A failed background save is reported by the next call (:meth:`save` or :meth:`wait`) as a
    :class:`~jepa.io.CheckpointError` chained to the original error; the file being replaced is
    left intact and no temporary file remains.

    Example::

        ckpt = AsyncCheckpointer()
        for epoch in range(n):
            train_one_epoch()
            ckpt.save(trainer.checkpoint_state(), f"ckpt/epoch_{epoch}.pt")
        ckpt.wait()
    """

    def __init__(self, *, num_threads: int = 0, reuse_buffers: bool = True) -> None:
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 0:
            raise ValueError(f"AsyncCheckpointer: num_threads must be an int >= 0 (0: all hardware threads), got {num_threads!r}")
        self.num_threads = num_threads
        self.reuse_buffers = bool(reuse_buffers)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._path: Path | None = None
        self._error: BaseException | None = None
        self._error_path: Path | None = None
        self._layout: tuple | None = None
        self._buffers: list[torch.Tensor] | None = None

    # ------------------------------------------------------------------ public
    @property
    def in_flight(self) -> bool:
        """True while a background save is running."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def pending_path(self) -> Path | None:
        """The path of the save in flight (None when there is none)."""
        return self._path if self.in_flight else None

    def save(self, state: Mapping[str, Any], path: str | os.PathLike) -> Path:
        """Snapshot ``state`` and write it to ``path`` in the background; returns ``path``.

        Waits for the previous save first (and raises its error, if it failed).
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"AsyncCheckpointer.save: state must be a mapping (dict), got {type(state).__name__}")
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"AsyncCheckpointer.save: path must be a str or os.PathLike, got {type(path).__name__}")
        path = Path(path)
        self.wait()
        from jepa.io import _metadata  # noqa: PLC0415  (the metadata of a sync save, same format)

        enc = encode(state)
        events = self._snapshot(enc)
        meta = _metadata(enc)
        path.parent.mkdir(parents=True, exist_ok=True)
        thread = threading.Thread(target=self._run, args=(enc, meta, path, events), name="jepa-async-checkpoint", daemon=False)
        with self._lock:
            self._path = path
            self._thread = thread
        thread.start()
        return path

    def wait(self) -> Path | None:
        """Block until the save in flight is on disk; returns its path (None when none was in flight).

        Raises :class:`~jepa.io.CheckpointError` when the last background save failed.
        """
        with self._lock:
            thread, path = self._thread, self._path
        if thread is not None:
            thread.join()
        with self._lock:
            if self._thread is thread:
                self._thread, self._path = None, None
            error, error_path = self._error, self._error_path
            self._error, self._error_path = None, None
        if error is not None:
            raise CheckpointError(f"background save of {str(error_path)!r} failed: {type(error).__name__}: {error}") from error
        return path if thread is not None else None

    def wait_for_path(self, path: str | os.PathLike) -> None:
        """Wait when the save in flight writes ``path`` (so a load or a sync save of it sees the new file)."""
        pending = self.pending_path
        if pending is not None and os.path.abspath(pending) == os.path.abspath(path):
            self.wait()

    def close(self) -> None:
        """Wait for the save in flight and release the snapshot buffers."""
        try:
            self.wait()
        finally:
            self._buffers, self._layout = None, None

    def __enter__(self) -> "AsyncCheckpointer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _snapshot(self, enc) -> list:
        tensors = enc.tensors
        layout = tuple((t.dtype, tuple(t.shape), t.device.type) for t in tensors)
        if not (self.reuse_buffers and self._buffers is not None and self._layout == layout):
            self._buffers = None  # drop the old set before allocating the new one
            pin = torch.cuda.is_available()
            self._buffers = [
                torch.empty(t.shape, dtype=t.dtype, pin_memory=pin and t.device.type == "cuda") for t in tensors
            ]
            self._layout = layout
        buffers = self._buffers
        dst, src, nbytes = [], [], []
        cuda_devices: set[torch.device] = set()
        with torch.no_grad():
            for buf, t in zip(buffers, tensors):
                if t.numel() == 0:
                    continue
                if t.device.type == "cpu" and t.is_contiguous() and not t.is_conj() and not t.is_neg():
                    dst.append(buf.data_ptr())
                    src.append(t.data_ptr())
                    nbytes.append(t.numel() * t.element_size())
                else:
                    buf.copy_(t, non_blocking=t.device.type == "cuda")
                    if t.device.type == "cuda":
                        cuda_devices.add(t.device)
        if dst:
            native().parallel_copy(dst, src, nbytes, num_threads=self.num_threads)
        events = []
        for dev in cuda_devices:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(dev))
            events.append(event)
        enc.tensors = list(buffers)
        return events

    def _run(self, enc, meta: dict[str, str], path: Path, events: list) -> None:
        try:
            for event in events:
                event.synchronize()
            write_file(path, enc, meta, num_threads=self.num_threads)
        except BaseException as exc:  # noqa: BLE001 - reported by the next call
            with self._lock:
                self._error, self._error_path = exc, path


_DEFAULT: AsyncCheckpointer | None = None
_DEFAULT_LOCK = threading.Lock()


def default_checkpointer() -> AsyncCheckpointer:
    """The process-wide checkpointer behind ``jepa.io.save(..., async_=True)``."""
    global _DEFAULT
    if _DEFAULT is None:
        with _DEFAULT_LOCK:
            if _DEFAULT is None:
                _DEFAULT = AsyncCheckpointer()
    return _DEFAULT
