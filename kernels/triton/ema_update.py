"""Triton multi-tensor EMA: ``target <- lerp(target, online, 1 - momentum)`` over many tensors, one launch.

The tensors are described by one int64 table (apex's multi-tensor-apply shape, kept on the device and
reused while the tensors do not move), laid out as ``[target addresses (T) | online addresses (T) |
element counts (T) | chunk -> tensor (C) | chunk -> first element (C)]``: :func:`build_groups` computes
it on the host, the caller copies it to the device once (jepa.ops does, safely across streams) and
passes the device copy to every :func:`ema_update`. One program updates one chunk of up to ``CHUNK`` elements of one tensor, so a launch covers every
parameter whatever their sizes, and tiny tensors cost one small program each, not one launch each.

Loads are 16 bytes wide where they can be: when every address of a group is 16-byte aligned (checked on
the host; torch's allocations are), a program walks its chunk in full ``BLOCK``-element steps with
unmasked, vectorized loads and stores (chunks start at multiples of ``CHUNK`` inside their tensor, so
they stay aligned) and finishes with one masked step for the tail. Other groups take the masked path.

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
_BLOCK = 1024  # elements per loop step of a program (4 warps x 32 threads x 8 elements: 2 x 16 B in float32)
_ALIGN = 16  # bytes: the vector width of the unmasked path


@triton.jit
def _lerp(a, b, w, small):
    d = b - a
    return tl.where(small, a + w * d, b - d * (1.0 - w))


@triton.jit
def _ema_kernel(
    TABLE, M_PTR, w_value, T, C,
    DTYPE: tl.constexpr, M_FROM_PTR: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
    ALIGNED: tl.constexpr,
):
    pid = tl.program_id(0)
    t64 = tl.cast(T, tl.int64)  # table offsets in 64 bits, as every size product (tl.cast: T may be the constant 1)
    ti = tl.load(TABLE + 3 * t64 + pid)
    start = tl.load(TABLE + 3 * t64 + C + pid)
    n = tl.load(TABLE + 2 * t64 + ti)
    tp = tl.load(TABLE + ti).to(tl.pointer_type(DTYPE))
    op = tl.load(TABLE + t64 + ti).to(tl.pointer_type(DTYPE))
    if M_FROM_PTR:
        w = 1.0 - tl.load(M_PTR).to(tl.float32)
    else:
        w = w_value
    small = tl.abs(w) < 0.5
    end = tl.minimum(start + CHUNK, n)
    lanes = tl.arange(0, BLOCK).to(tl.int64)
    if ALIGNED:
        # Full steps: no mask, and the hints let the compiler use 16-byte loads and stores (the
        # addresses are 16-byte aligned, checked on the host, and chunks start at multiples of CHUNK).
        body = start + ((end - start) // BLOCK) * BLOCK
        for off in range(start, body, BLOCK):
            tpp = tl.max_contiguous(tl.multiple_of(tp + off + lanes, 16), BLOCK)
            opp = tl.max_contiguous(tl.multiple_of(op + off + lanes, 16), BLOCK)
            a = tl.load(tpp).to(tl.float32)
            b = tl.load(opp).to(tl.float32)
            tl.store(tpp, _lerp(a, b, w, small).to(DTYPE))
        start = body
    # Runtime bounds: a tiny tensor's program runs one step, not CHUNK / BLOCK.
    for off in range(start, end, BLOCK):
        idx = off + lanes
        m = idx < end
        a = tl.load(tp + idx, mask=m, other=0.0).to(tl.float32)
        b = tl.load(op + idx, mask=m, other=0.0).to(tl.float32)
        tl.store(tp + idx, _lerp(a, b, w, small).to(DTYPE), mask=m)


@dataclass
class EmaGroup:
    """One dtype's launch table, on the host."""

    dtype: torch.dtype
    layout: list[int]  # the int64 table [3 T + 2 C], layout in the module docstring
    num_tensors: int
    num_chunks: int
    aligned: bool


def build_groups(targets: list[torch.Tensor], onlines: list[torch.Tensor]) -> list[EmaGroup]:
    """Launch tables for ``targets``/``onlines`` (contiguous, one device, float32/float16/bfloat16),
    one group per dtype, computed on the host. Empty tensors get no chunk."""
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
        aligned = all(p % _ALIGN == 0 for p, n in zip(tptrs + optrs, numels + numels) if n)
        layout = tptrs + optrs + numels + c_tensor + c_start
        groups.append(EmaGroup(dtype, layout, len(idxs), len(c_start), aligned))
    return groups


def ema_update(groups: list[EmaGroup], tables: list[torch.Tensor], momentum: float | torch.Tensor) -> None:
    """Run the EMA over every group; ``tables[i]`` is ``groups[i].layout`` as an int64 tensor on the
    tensors' device, readable on the current stream; ``momentum`` a float or a 0-d float32 tensor on the
    device. Launches on the current device (the caller makes it the tensors')."""
    from_ptr = isinstance(momentum, torch.Tensor)
    w_value = 0.0 if from_ptr else float(1.0 - float(momentum))
    for g, table in zip(groups, tables, strict=True):
        m_ptr = momentum if from_ptr else table  # placeholder pointer, unused when M_FROM_PTR is False
        _ema_kernel[(g.num_chunks,)](
            table, m_ptr, w_value, g.num_tensors, g.num_chunks,
            DTYPE=TORCH_TO_TL[g.dtype], M_FROM_PTR=from_ptr, CHUNK=CHUNK, BLOCK=_BLOCK, ALIGNED=g.aligned,
            num_warps=4,
        )
