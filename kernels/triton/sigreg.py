"""Triton kernels of SIGReg's empirical characteristic function (``jepa.ops.sigreg_ecf``).

For ``z (N, D)``, directions ``a (D, M)`` and knots ``t_k = k * dt`` (``k < KNOTS``, ``dt = t_max / (KNOTS - 1)``)
the op returns the ``(2, M, KNOTS)`` means over ``n`` of ``cos(t_k x_nm)`` and ``sin(t_k x_nm)``,
``x = z @ a``. Neither the projections ``x`` nor the ``(N, M, KNOTS)`` cosines and sines are stored.

- ``_ecf_fwd_kernel``: one program per (chunk of ``BLOCKS_PER_PROG`` row blocks, ``BLOCK_M`` directions).
  A projection tile ``x = z @ a`` (``BLOCK_N x BLOCK_M``) is a small matmul over the features in
  ``BLOCK_K`` chunks; one ``cos``/``sin`` of ``theta = dt * x`` per element, then the knots by exact
  rotations ``e^{i(k+1)theta} = e^{ik theta} e^{i theta}`` (4 multiply-adds a knot instead of two
  transcendental calls: 17 knots cost about what 2 do; the rounding error grows by about one ulp a
  knot, far below the float32 tolerance). Column sums over the tile's rows accumulate in a
  ``(BLOCK_M, KP)`` float32 register tile per function; each program writes its partial sums, and
  the host sums the partials in a fixed order (deterministic: no atomics).
- ``_ecf_bwd_kernel``: given ``g = dL/d ecf`` (pre-scaled on the host by ``t_k / N``), recomputes the tiles
  and writes ``dL/dx_nm = sum_k g_sin[m,k] cos(t_k x_nm) - g_cos[m,k] sin(t_k x_nm)`` (``N x M``, float32,
  ``KNOTS`` times smaller than the eager intermediates); the host finishes ``dz = dL/dx @ a.T`` with one
  float32 matmul (cuBLAS), the gradient of the projection.

Dots: 16-bit ``z`` is widened to float32 on load (exact in tf32) and multiplied in ``tf32``: only the
directions are rounded (2^-11), well inside the 16-bit tolerance. float32 uses ``tf32x3`` on NVIDIA GPUs
(about float32 accuracy) and IEEE elsewhere (the interpreter). Accumulation is float32 throughout.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import next_pow2

__all__ = ["NUM_STAGES", "NUM_WARPS", "ecf_backward", "ecf_forward"]

# Programs a forward launch aims for (row chunks x direction blocks): enough to fill 132 SMs a few
# times over, few enough that the partial sums (chunks x 2 x M x KNOTS float32) stay small.
_TARGET_PROGRAMS = 1024
NUM_WARPS = 8
NUM_STAGES = 2

# pi/2 in three parts (Cody-Waite): q * _PIO2_HI and q * _PIO2_MID are exact in float32 for |q| < 2^11.
_PIO2_HI = tl.constexpr(1.5703125)
_PIO2_MID = tl.constexpr(4.837512969970703125e-4)
_PIO2_LO = tl.constexpr(7.54978995489188216e-8)
_TWO_OVER_PI = tl.constexpr(0.6366197723675814)


@triton.jit
def _sincos(theta):
    """(cos(theta), sin(theta)) in float32, about 1 ulp for |theta| < 2^11 * pi/2 (accuracy degrades
    slowly beyond). One shared range reduction to [-pi/4, pi/4] (quadrant q), then Taylor polynomials
    whose truncation error (< 2e-9) is below float32 rounding. Plain arithmetic, so the interpreter
    runs exactly what the GPU runs, and far fewer registers than two libdevice calls (each with its
    own reduction and a Payne-Hanek slow path)."""
    q = tl.floor(theta * _TWO_OVER_PI + 0.5)
    r = theta - q * _PIO2_HI
    r = r - q * _PIO2_MID
    r = r - q * _PIO2_LO
    r2 = r * r
    sin_r = r + r * r2 * (-1.0 / 6.0 + r2 * (1.0 / 120.0 + r2 * (-1.0 / 5040.0 + r2 * (1.0 / 362880.0))))
    cos_r = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24.0 + r2 * (-1.0 / 720.0 + r2 * (1.0 / 40320.0 + r2 * (-1.0 / 3628800.0)))))
    # theta = q pi/2 + r: rotate (cos r, sin r) by q quarter turns.
    quadrant = q.to(tl.int32) & 3
    cos_t = tl.where(quadrant == 0, cos_r, tl.where(quadrant == 1, -sin_r, tl.where(quadrant == 2, -cos_r, sin_r)))
    sin_t = tl.where(quadrant == 0, sin_r, tl.where(quadrant == 1, cos_r, tl.where(quadrant == 2, -sin_r, -cos_r)))
    return cos_t, sin_t


@triton.jit
def _projection_tile(Z, A, rows, cols, rm, cm, D, M, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
                     BLOCK_K: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """x = z[rows] @ a[:, cols] (BLOCK_N x BLOCK_M, float32), over the features in BLOCK_K chunks."""
    x = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
    for k0 in range(0, D, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        km = ks < D
        z = tl.load(Z + rows[:, None] * D + ks[None, :], mask=rm[:, None] & km[None, :], other=0.0).to(tl.float32)
        # 64-bit offsets: ks * M (like rows * D) may pass 2**31 on large problems.
        a = tl.load(A + ks[:, None].to(tl.int64) * M + cols[None, :], mask=km[:, None] & cm[None, :],
                    other=0.0).to(tl.float32)
        x = tl.dot(z, a, x, input_precision=DOT_PRECISION)
    return x


@triton.jit
def _ecf_fwd_kernel(
    Z, A, PART, N, D, M, dt, n_blocks, BLOCKS_PER_PROG,
    KNOTS: tl.constexpr, KP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    chunk = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    cm = cols < M
    kk = tl.arange(0, KP)[None, :]
    acc_c = tl.zeros([BLOCK_M, KP], tl.float32)
    acc_s = tl.zeros([BLOCK_M, KP], tl.float32)
    first = chunk * BLOCKS_PER_PROG
    for b in range(0, tl.minimum(BLOCKS_PER_PROG, n_blocks - first)):
        rows = (first + b) * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
        rm = rows < N
        x = _projection_tile(Z, A, rows, cols, rm, cm, D, M, BLOCK_N, BLOCK_M, BLOCK_K, DOT_PRECISION)
        theta = x * dt
        c1, s1 = _sincos(theta)
        # e^{i t_0 x} = 1 on the rows that exist, 0 on the padding rows (rotations keep it 0).
        c = tl.where(rm[:, None], 1.0, 0.0) + tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
        s = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
        acc_c += tl.where(kk == 0, tl.sum(c, axis=0)[:, None], 0.0)  # knot 0: the row count
        for k in range(1, KNOTS):
            c, s = c * c1 - s * s1, s * c1 + c * s1
            acc_c += tl.where(kk == k, tl.sum(c, axis=0)[:, None], 0.0)
            acc_s += tl.where(kk == k, tl.sum(s, axis=0)[:, None], 0.0)
    # PART is (chunks, 2, M, KNOTS): cos sums, then sin sums.
    offs = chunk * 2 * M * KNOTS + cols[:, None] * KNOTS + kk
    mask = cm[:, None] & (kk < KNOTS)
    tl.store(PART + offs, acc_c, mask=mask)
    tl.store(PART + offs + tl.cast(M, tl.int64) * KNOTS, acc_s, mask=mask)  # tl.cast: M may be the constant 1


@triton.jit
def _ecf_bwd_kernel(
    Z, A, G, DX, N, D, M, dt,
    KNOTS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    rm = rows < N
    cm = cols < M
    x = _projection_tile(Z, A, rows, cols, rm, cm, D, M, BLOCK_N, BLOCK_M, BLOCK_K, DOT_PRECISION)
    theta = x * dt
    c1, s1 = _sincos(theta)
    c = tl.full([BLOCK_N, BLOCK_M], 1.0, tl.float32)
    s = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
    dx = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
    # G is (2, M, KNOTS), already multiplied by t_k / N; knot 0 has t_0 = 0 and contributes nothing.
    for k in range(1, KNOTS):
        c, s = c * c1 - s * s1, s * c1 + c * s1
        g_cos = tl.load(G + cols * KNOTS + k, mask=cm, other=0.0)
        g_sin = tl.load(G + tl.cast(M, tl.int64) * KNOTS + cols * KNOTS + k, mask=cm, other=0.0)
        dx += g_sin[None, :] * c - g_cos[None, :] * s
    tl.store(DX + rows[:, None] * M + cols[None, :], dx, mask=rm[:, None] & cm[None, :])


def _blocks(N: int, M: int, D: int) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_M, BLOCK_K) from the shape; every dimension >= 16 for tl.dot.

    64 rows x 32 directions with ``NUM_WARPS`` 8 and ``NUM_STAGES`` 2 is 8 elements of each float32 tile a
    thread: the worst build (sm_80, float32 inputs, tf32x3 splits in registers) needs 200 registers
    and no spill; 64 x 64 tiles spill there (and use 200-255 registers on sm_90). Checked for sm_80 and
    sm_90 by the aot tests in tests/ops/test_sigreg_triton.py."""
    block_n = max(16, min(64, next_pow2(N)))
    block_m = max(16, min(32, next_pow2(M)))
    block_k = max(16, min(32, next_pow2(D)))
    return block_n, block_m, block_k


def _dot_precision(z: torch.Tensor) -> str:
    if z.device.type != "cuda" or torch.version.hip is not None:
        return "ieee"
    # 16-bit z is exact in tf32, so "tf32" only rounds the directions; float32 needs the 3-pass split.
    return "tf32x3" if z.dtype == torch.float32 else "tf32"


def ecf_forward(z: torch.Tensor, directions: torch.Tensor, *, t_max: float, knots: int) -> torch.Tensor:
    """The ``(2, M, knots)`` float32 ECF means of ``x = z @ directions`` at ``linspace(0, t_max, knots)``.

    ``z (N, D)`` and ``directions (D, M)`` of float32/float16/bfloat16 (each its own dtype), ``N >= 1``.
    """
    z, a = z.contiguous(), directions.contiguous()
    N, D = z.shape
    M = a.shape[1]
    block_n, block_m, block_k = _blocks(N, M, D)
    n_blocks, m_blocks = triton.cdiv(N, block_n), triton.cdiv(M, block_m)
    per_prog = max(1, triton.cdiv(n_blocks * m_blocks, _TARGET_PROGRAMS))
    chunks = triton.cdiv(n_blocks, per_prog)
    part = torch.empty(chunks, 2, M, knots, dtype=torch.float32, device=z.device)
    dt = float(t_max) / (knots - 1)
    _ecf_fwd_kernel[(chunks, m_blocks)](
        z, a, part, N, D, M, dt, n_blocks, per_prog,
        KNOTS=knots, KP=next_pow2(knots), BLOCK_N=block_n, BLOCK_M=block_m, BLOCK_K=block_k,
        DOT_PRECISION=_dot_precision(z), num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    # Fixed-order reduction of the partials: the same result on every run.
    return part.sum(0) * (1.0 / N)


def ecf_backward(
    grad: torch.Tensor, z: torch.Tensor, directions: torch.Tensor, *, t_max: float, knots: int
) -> torch.Tensor:
    """``dL/dz`` (``z``'s dtype) given ``grad = dL/d ecf`` of shape ``(2, M, knots)``."""
    z, a = z.contiguous(), directions.contiguous()
    N, D = z.shape
    M = a.shape[1]
    block_n, block_m, block_k = _blocks(N, M, D)
    dt = float(t_max) / (knots - 1)
    t = torch.arange(knots, dtype=torch.float32, device=z.device) * dt
    g = (grad.to(torch.float32) * (t / N)).contiguous()
    dx = torch.empty(N, M, dtype=torch.float32, device=z.device)
    _ecf_bwd_kernel[(triton.cdiv(N, block_n), triton.cdiv(M, block_m))](
        z, a, g, dx, N, D, M, dt,
        KNOTS=knots, BLOCK_N=block_n, BLOCK_M=block_m, BLOCK_K=block_k, DOT_PRECISION=_dot_precision(z),
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    with torch.autocast(z.device.type, enabled=False):  # the float32 matmul stays float32 under autocast
        dz = dx @ a.to(torch.float32).T
    return dz.to(z.dtype)
