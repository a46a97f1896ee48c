"""Batch helpers: where a run computes (:func:`resolve_device`), moving a batch there
(:func:`move_to_device`) and reading a pair/triple batch (:func:`unpack_batch`).

A leaf module: it imports nothing else from :mod:`jepa.trainer`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["INPUT_KEYS", "first_input", "move_to_device", "resolve_device", "unpack_batch"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: cannot parse {device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available on this machine")
    return dev


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move the tensors of a (nested) tuple/list/namedtuple/dict batch to ``device``; other leaves
    are returned as they are."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = (move_to_device(v, device) for v in batch)
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    return batch


#: Keys of a dict batch that hold what an encoder embeds, in the order they are looked for.
INPUT_KEYS = ("state_t", "x", "images", "obs")


def first_input(batch: Any) -> Any:
    """What an encoder embeds in a batch or sample (probes, the collapse monitor): the tensor
    itself, item 0 of a tuple/list (``state_t`` of a pair, the observations of a trajectory
    window), or the first of :data:`INPUT_KEYS` in a dict."""
    if isinstance(batch, Mapping):
        for key in INPUT_KEYS:
            if key in batch:
                return batch[key]
        raise ValueError(f"a dict batch needs one of the keys {', '.join(repr(k) for k in INPUT_KEYS)} for the encoder's input, got keys {sorted(batch)}")
    if isinstance(batch, (list, tuple)):
        if not batch:
            raise ValueError("got an empty tuple/list batch: no input to embed")
        return batch[0]
    return batch


def unpack_batch(batch: Any) -> tuple[torch.Tensor, ...]:
    """``(state_t, state_t1)`` or ``(state_t, action_t, state_t1)`` from a tuple, list or dict batch."""
    if isinstance(batch, Mapping):
        if "state_t" in batch and "state_t1" in batch:
            if "action_t" in batch:
                return batch["state_t"], batch["action_t"], batch["state_t1"]
            return batch["state_t"], batch["state_t1"]
        raise ValueError(f"batch dict must have keys 'state_t' and 'state_t1' (and optionally 'action_t'); got {sorted(batch)}")
    if isinstance(batch, (list, tuple)):
        if len(batch) not in (2, 3):
            raise ValueError(
                f"batch must be (state_t, state_t1) or (state_t, action_t, state_t1); got a {type(batch).__name__} of {len(batch)} items"
            )
        items = tuple(batch)
    else:
        raise TypeError(f"batch must be a tuple, list or dict of tensors, got {type(batch).__name__}")
    for i, x in enumerate(items):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"batch item {i} must be a torch.Tensor, got {type(x).__name__}")
    s_t, s_t1 = items[0], items[-1]
    if s_t.shape != s_t1.shape:
        raise ValueError(f"state_t and state_t1 must have the same shape, got {tuple(s_t.shape)} and {tuple(s_t1.shape)}")
    if not torch.is_floating_point(s_t) or not torch.is_floating_point(s_t1):
        raise TypeError(f"state_t and state_t1 must be floating-point tensors, got {s_t.dtype} and {s_t1.dtype}")
    return items
