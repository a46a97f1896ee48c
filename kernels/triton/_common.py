"""Helpers shared by the Triton kernels of jepa (block sizes, dtype names, elementwise math).

Block sizes are computed from the shape (next power of two, capped), never autotuned, so a backward
kernel can reuse exactly the choice its forward made and results do not depend on a tuning run.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["TORCH_TO_TL", "next_pow2", "num_warps_for", "sign"]

# Storage dtypes the Triton kernels accept; arithmetic is always float32 inside the kernels.
TORCH_TO_TL = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


def next_pow2(n: int) -> int:
    """Smallest power of two >= max(n, 1)."""
    return int(triton.next_power_of_2(max(int(n), 1)))


def num_warps_for(elements_per_program: int) -> int:
    """Warps for a program touching ``elements_per_program`` elements: about 8 elements a thread
    per pass keeps loads wide without spilling; 1..8 warps."""
    return max(1, min(8, next_pow2(elements_per_program) // 256))


@triton.jit
def sign(x):
    """sign(x) in {-1, 0, 1} (torch.sign semantics, 0 at 0), in x's dtype."""
    return tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, 0.0)).to(x.dtype)
