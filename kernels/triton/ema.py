"""Triton multi-tensor EMA: ``target <- lerp(target, online, 1 - momentum)`` over many tensors, one launch.

The tensors are described by a table (apex's multi-tensor-apply shape, kept on the device and
reused while the tensors do not move): per tensor its target and online addresses (int64) and its
element count; per work chunk the tensor it belongs to and its first element. One program updates one
chunk of up to ``CHUNK`` elements of one tensor, so a launch covers every parameter whatever their
sizes, and tiny tensors cost one small program each, not one launch each.

Tensors of different dtypes form separate groups (one table and launch each); the element type is a
compile-time constant of the kernel. Arithmetic is float32 and rounds once, written as torch.lerp and
``jepa::lerp`` (csrc/include/jepa/ema_math.h) write it: for ``|w| < 0.5`` start from the target,
otherwise from the online value, so ``momentum`` 1 and 0 are exact.

``momentum`` is either a Python number (passed as the float32 weight ``1 - momentum``, computed in
double first as torch does) or a 0-d float32 tensor on the device, read by every program: a schedule
kept on the GPU then never forces a host sync. Targets must not overlap each other or the onlines.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ._common import TORCH_TO_TL

__all__ = ["CHUNK", "EmaGroup", "build_groups", "ema_update"]

CHUNK = 16384  # elements per program: ~96 KB of traffic in float32, enough to hide the table lookups
_BLOCK = 1024  # elements per loop iteration of a program (4 warps x 32 threads x 8 elements)


@triton.jit
def _ema_kernel(
    TPTRS, OPTRS, NUMELS, CHUNK_TENSOR, CHUNK_START, M_PTR, w_value,
    DTYPE: tl.constexpr, M_FROM_PTR: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    ti = tl.load(CHUNK_TENSOR + pid)
    start = tl.load(CHUNK_START + pid)
    n = tl.load(NUMELS + ti)
    tp = tl.load(TPTRS + ti).to(tl.pointer_type(DTYPE))
    op = tl.load(OPTRS + ti).to(tl.pointer_type(DTYPE))
    if M_FROM_PTR:
        w = 1.0 - tl.load(M_PTR).to(tl.float32)
    else:
        w = w_value
    end = tl.minimum(start + CHUNK, n)
    small = tl.abs(w) < 0.5
    # Runtime bounds: a tiny tensor's program runs one iteration, not CHUNK / BLOCK.
    for off in range(start, end, BLOCK):
        idx = off + tl.arange(0, BLOCK).to(tl.int64)
        m = idx < end
        a = tl.load(tp + idx, mask=m, other=0.0).to(tl.float32)
        b = tl.load(op + idx, mask=m, other=0.0).to(tl.float32)
        d = b - a
        r = tl.where(small, a + w * d, b - d * (1.0 - w))
        tl.store(tp + idx, r.to(DTYPE), mask=m)


@dataclass
class EmaGroup:
    """One dtype's launch table, on the tensors' device."""

    dtype: torch.dtype
    tptrs: torch.Tensor  # int64 [T]
    optrs: torch.Tensor  # int64 [T]
    numels: torch.Tensor  # int64 [T]
    chunk_tensor: torch.Tensor  # int32 [C]
    chunk_start: torch.Tensor  # int64 [C]
    num_chunks: int


def build_groups(targets: list[torch.Tensor], onlines: list[torch.Tensor]) -> list[EmaGroup]:
    """Launch tables for ``targets``/``onlines`` (contiguous, one device, float32/float16/bfloat16),
    one group per dtype. Empty tensors get no chunk."""
    device = targets[0].device
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(targets):
        by_dtype.setdefault(t.dtype, []).append(i)
    groups = []
    for dtype, idxs in by_dtype.items():
        tptrs, optrs, numels, c_tensor, c_start = [], [], [], [], []
        for k, i in enumerate(idxs):
            n = targets[i].numel()
            tptrs.append(targets[i].data_ptr())
            optrs.append(onlines[i].data_ptr())
            numels.append(n)
            starts = range(0, n, CHUNK)
            c_tensor.extend([k] * len(starts))
            c_start.extend(starts)
        if not c_start:
            continue

        def dev(values, dt):
            return torch.tensor(values, dtype=dt).to(device, non_blocking=True)

        groups.append(
            EmaGroup(dtype, dev(tptrs, torch.int64), dev(optrs, torch.int64), dev(numels, torch.int64),
                     dev(c_tensor, torch.int32), dev(c_start, torch.int64), len(c_start))
        )
    return groups


def ema_update(groups: list[EmaGroup], momentum: float | torch.Tensor) -> None:
    """Run the EMA over every group; ``momentum`` a float or a 0-d float32 tensor on the device."""
    from_ptr = isinstance(momentum, torch.Tensor)
    w_value = 0.0 if from_ptr else float(1.0 - float(momentum))
    for g in groups:
        m_ptr = momentum if from_ptr else g.numels  # placeholder pointer, unused when M_FROM_PTR is False
        _ema_kernel[(g.num_chunks,)](
            g.tptrs, g.optrs, g.numels, g.chunk_tensor, g.chunk_start, m_ptr, w_value,
            DTYPE=TORCH_TO_TL[g.dtype], M_FROM_PTR=from_ptr, CHUNK=CHUNK, BLOCK=_BLOCK, num_warps=4,
        )
