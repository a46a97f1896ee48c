"""Flat parameter storage for the EMA target update.

The EMA touches every parameter of the encoder once per optimizer step. Called tensor by tensor, the
per-tensor cost (Python iteration over modules, reading data pointers, one dispatch per tensor)
dominates for encoders made of many small tensors. Laying the parameters of the online encoder and
of its EMA copy out as views into one contiguous buffer per (device, dtype) makes the update a single
call over a few flat tensors, whatever the number of parameters. Parameters stay ordinary
``nn.Parameter`` objects (only their ``.data`` becomes a view), so optimizers, ``state_dict`` and
autograd see no difference.
"""

from __future__ import annotations

import sys
from typing import Sequence

import torch

_FLATTENABLE = (torch.Tensor, torch.nn.Parameter)


def can_flatten(params: Sequence[torch.Tensor]) -> bool:
    """Only plain dense strided tensors with real storage can become views of a flat buffer."""
    return all(
        type(p) in _FLATTENABLE and p.layout == torch.strided and p.device.type != "meta" and not p.is_sparse and p.is_floating_point()
        for p in params
    )


def flatten_pairs(targets: Sequence[torch.Tensor], onlines: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
    """Move ``targets[i]`` and ``onlines[i]`` into flat buffers (one per device and dtype, the same
    grouping on both sides) and return the buffers; ``None`` (nothing changed) when the two lists
    cannot be paired that way (different lengths, shapes, dtypes or devices, or tensors that cannot
    be flattened)."""
    if len(targets) != len(onlines) or not targets:
        return None
    if not (can_flatten(targets) and can_flatten(onlines)):
        return None
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, (t, o) in enumerate(zip(targets, onlines)):
        if t.shape != o.shape or t.dtype != o.dtype or t.device != o.device:
            return None
        groups.setdefault((t.device, t.dtype), []).append(i)
    flat_t, flat_o = [], []
    with torch.no_grad():
        for (device, dtype), idx in groups.items():
            total = sum(targets[i].numel() for i in idx)
            for side, out in ((targets, flat_t), (onlines, flat_o)):
                flat = torch.empty(total, dtype=dtype, device=device)
                offset = 0
                for i in idx:
                    p = side[i]
                    n = p.numel()
                    view = flat[offset : offset + n].view(p.shape)
                    view.copy_(p.data)
                    p.data = view
                    offset += n
                out.append(flat)
    return flat_t, flat_o


def still_flat(tensors: Sequence[torch.Tensor], flats: Sequence[torch.Tensor]) -> bool:
    """Whether every tensor still lives inside one of ``flats`` (nobody replaced a ``.data``)."""
    ranges = [(f.data_ptr(), f.data_ptr() + f.numel() * f.element_size()) for f in flats]
    for t in tensors:
        ptr = t.data_ptr()
        if not any(lo <= ptr < hi or (t.numel() == 0 and lo <= ptr <= hi) for lo, hi in ranges):
            return False
    return True


def _dtensor_class() -> type | None:
    # DTensors exist only once torch.distributed.tensor is imported (FSDP imports it); importing it
    # here would cost every `import jepa` most of a second.
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None) if module is not None else None


def has_sharded(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether any of ``tensors`` is a ``DTensor`` (e.g. a parameter sharded by FSDP)."""
    dtensor = _dtensor_class()
    return dtensor is not None and any(isinstance(t, dtensor) for t in tensors)


def local_tensors(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor's local part: this rank's shard of a ``DTensor`` (the very tensor it stores, so an
    in-place update of it updates the DTensor), the tensor itself otherwise. Call without grad."""
    dtensor = _dtensor_class()
    if dtensor is None:
        return list(tensors)
    return [t.to_local() if isinstance(t, dtensor) else t for t in tensors]
