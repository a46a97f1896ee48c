"""Two tiny Triton kernels for tests/ops/test_triton_aot.py: the same row copy with its offset ``row * D``
multiplied in 32 bits (wraps past 2**31 elements) and in 64 bits. They check that the TTIR scan of
``_aot_worker.size_products`` tells the two apart on kernels Triton really compiled."""

import triton
import triton.language as tl


@triton.jit
def narrow_row_copy(X, Y, D, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    tl.store(Y + row * D + cols, tl.load(X + row * D + cols, mask=cols < D), mask=cols < D)


@triton.jit
def wide_row_copy(X, Y, D, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    tl.store(Y + row * D + cols, tl.load(X + row * D + cols, mask=cols < D), mask=cols < D)
