"""Triton kernels of the fused InfoNCE loss (``jepa.ops.info_nce``).

``S = normalize(a) @ normalize(b).T / T``; the loss is the mean over rows of ``lse_i(S) - S_ii``
(and, with ``symmetric``, the mean of that and the same over columns). The ``N x N`` logits are never
stored: each program owns ``BLOCK_M`` rows and walks the columns in ``BLOCK_N`` tiles, keeping an online
log-sum-exp (running max and rescaled sum, in base 2), as flash attention does for its softmax. Every
logit tile is a small matmul over the features in ``BLOCK_K`` chunks, so no tile holds a whole row and
nothing spills whatever D is.

- ``_inv_norm_kernel``: ``1 / max(||x||, eps)`` per row (``F.normalize``'s eps 1e-12).
- ``_lse_kernel``: per-row log-sum-exp of ``S`` (rows of x against all rows of y) and, once, the
  positive logit ``S_ii`` computed elementwise in float32. Called with (a, b) for the rows and, for
  ``symmetric``, with (b, a) for the columns (``S.T`` has the same form).
- ``_bwd_kernel``: ``dL/dS = c * (P - I) [+ c * (Q - I)]`` with ``P = softmax_rows(S)``,
  ``Q = softmax_cols(S)`` rebuilt tile by tile from the saved log-sum-exps, multiplied into the other
  side's rows: ``d x^`` (the gradient of the normalized rows) for ``BLOCK_M`` rows x ``BLOCK_DO``
  features per program (a second grid axis over the features, each recomputing the logit tiles).
  Called with (a, b) for ``da`` and (b, a) for ``db``. The dot operands stay O(1) in the input dtype:
  the normalized rows ``y^`` (formed in float32) and ``g = P - I`` times a power of two (``2**14`` for
  float16, keeping large-N softmax terms out of its subnormals); ``1/T``, that power of two and the
  common factor ``c = grad * (1/2 if symmetric) / N`` are applied to the float32 sums after the dots
  (folded into ``g`` they overflow float16 for collapsed embeddings, ``||y|| < 1.5e-4``, or underflow
  it at large N).
- ``_finish_kernel``: through the normalization, ``dx = (dx^ - x^ (x^ . dx^)) / max(||x||, eps)``
  (just ``dx^ / eps`` where the norm is clamped), written in the input dtype.

``tl.dot`` on float32 inputs uses ``tf32x3`` (about float32 accuracy at a fraction of the IEEE cost) on
NVIDIA GPUs, IEEE elsewhere; 16-bit inputs multiply exactly and accumulate in float32.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ._common import next_pow2

__all__ = ["MAX_D", "forward", "backward"]

# The kernels loop over the features, so D is not limited by registers; this bound only keeps the
# float32 d x^ scratch (N x D) and the feature-axis recomputation of the backward reasonable.
MAX_D = 65536
_LOG2E = 1.4426950408889634


@triton.jit
def _inv_norm_kernel(X, OUT, N, D, eps, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    rm = rows < N
    ss = tl.zeros([BLOCK_R], tl.float32)
    for k in range(0, D, BLOCK_K):
        ks = k + tl.arange(0, BLOCK_K)
        x = tl.load(X + rows[:, None] * D + ks[None, :], mask=rm[:, None] & (ks < D)[None, :], other=0.0)
        x = x.to(tl.float32)
        ss += tl.sum(x * x, axis=1)
    tl.store(OUT + rows, 1.0 / tl.maximum(tl.sqrt(ss), eps), mask=rm)


@triton.jit
def _logit_tile(X, Y, rows, cols, rm, cm, D, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_K: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Raw dot products x_i . y_j of a BLOCK_M x BLOCK_N tile, over the features in BLOCK_K chunks."""
    s = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k in range(0, D, BLOCK_K):
        ks = k + tl.arange(0, BLOCK_K)
        km = (ks < D)[None, :]
        x = tl.load(X + rows[:, None] * D + ks[None, :], mask=rm[:, None] & km, other=0.0)
        y = tl.load(Y + cols[:, None] * D + ks[None, :], mask=cm[:, None] & km, other=0.0)
        s = tl.dot(x, tl.trans(y), s, input_precision=DOT_PRECISION)
    return s


@triton.jit
def _lse_kernel(
    X, Y, RX, RY, LSE, POS, N, D, scale2, inv_t,
    WRITE_POS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    rm = rows < N
    rx = tl.load(RX + rows, mask=rm, other=0.0)
    # Logits in base 2: s2 = S * log2(e), so exp(S - lse) == exp2(s2 - lse * log2(e)).
    row_scale = rx * scale2
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N).to(tl.int64)
        cm = cols < N
        ry = tl.load(RY + cols, mask=cm, other=0.0)
        s = _logit_tile(X, Y, rows, cols, rm, cm, D, BLOCK_M, BLOCK_N, BLOCK_K, DOT_PRECISION)
        s = s * row_scale[:, None] * ry[None, :]
        s = tl.where(cm[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        l_i = l_i * tl.exp2(m_i - m_new) + tl.sum(tl.exp2(s - m_new[:, None]), axis=1)
        m_i = m_new
    tl.store(LSE + rows, (m_i + tl.log2(l_i)) * 0.6931471805599453, mask=rm)
    if WRITE_POS:
        pos = tl.zeros([BLOCK_M], tl.float32)
        for k in range(0, D, BLOCK_K):
            ks = k + tl.arange(0, BLOCK_K)
            m2 = rm[:, None] & (ks < D)[None, :]
            x = tl.load(X + rows[:, None] * D + ks[None, :], mask=m2, other=0.0).to(tl.float32)
            y = tl.load(Y + rows[:, None] * D + ks[None, :], mask=m2, other=0.0).to(tl.float32)
            pos += tl.sum(x * y, axis=1)
        ryd = tl.load(RY + rows, mask=rm, other=0.0)
        tl.store(POS + rows, pos * rx * ryd * inv_t, mask=rm)


@triton.jit
def _bwd_kernel(
    X, Y, RX, RY, LSE_ROW, LSE_COL, DXH, N, D, scale2, inv_t,
    ROW_TERM: tl.constexpr, COL_TERM: tl.constexpr, DIAG: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_DO: tl.constexpr,
    DOT_PRECISION: tl.constexpr, G_SCALE: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    d0 = tl.program_id(1).to(tl.int64) * BLOCK_DO
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    dcols = d0 + tl.arange(0, BLOCK_DO)
    rm = rows < N
    dm = dcols < D
    rx = tl.load(RX + rows, mask=rm, other=0.0)
    row_scale = rx * scale2
    lse_r2 = tl.zeros([BLOCK_M], tl.float32)
    if ROW_TERM:
        lse_r2 = tl.load(LSE_ROW + rows, mask=rm, other=0.0) * 1.4426950408889634
    acc = tl.zeros([BLOCK_M, BLOCK_DO], tl.float32)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N).to(tl.int64)
        cm = cols < N
        ry = tl.load(RY + cols, mask=cm, other=0.0)
        s = _logit_tile(X, Y, rows, cols, rm, cm, D, BLOCK_M, BLOCK_N, BLOCK_K, DOT_PRECISION)
        s = s * row_scale[:, None] * ry[None, :]
        g = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        if ROW_TERM:
            g += tl.exp2(s - lse_r2[:, None])
        if COL_TERM:
            lse_c2 = tl.load(LSE_COL + cols, mask=cm, other=0.0) * 1.4426950408889634
            g += tl.exp2(s - lse_c2[None, :])
        # the positives: -1 per softmax term on the diagonal (DIAG = ROW_TERM + COL_TERM)
        g -= tl.where(rows[:, None] == cols[None, :], DIAG, 0.0)
        g = tl.where(rm[:, None] & cm[None, :], g, 0.0)
        # d S_ij / d x^_i = y^_j / T. Both dot operands are kept O(1) in the input dtype: the normalized
        # rows y^ = y * ry (|y^_jd| <= 1, formed in float32), and g in [-2, 2] times G_SCALE (a power of
        # two: exact), which lifts the small softmax terms of large N out of float16's subnormals.
        # Folding ry / T into g instead overflows float16 once ||y|| < 1.5e-4 (collapsed embeddings).
        # 1 / T and 1 / G_SCALE are applied to the float32 sum after the dots.
        y = tl.load(Y + cols[:, None] * D + dcols[None, :], mask=cm[:, None] & dm[None, :], other=0.0)
        yh = (y.to(tl.float32) * ry[:, None]).to(Y.dtype.element_ty)
        acc = tl.dot((g * G_SCALE).to(Y.dtype.element_ty), yh, acc, input_precision=DOT_PRECISION)
    acc = acc * (inv_t / G_SCALE)
    tl.store(DXH + rows[:, None] * D + dcols[None, :], acc, mask=rm[:, None] & dm[None, :])


@triton.jit
def _finish_kernel(X, RX, DXH, COEF, DX, N, D, eps, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    rm = rows < N
    rx = tl.load(RX + rows, mask=rm, other=0.0)
    c = tl.load(COEF).to(tl.float32)
    proj = tl.zeros([BLOCK_R], tl.float32)
    ss = tl.zeros([BLOCK_R], tl.float32)
    for k in range(0, D, BLOCK_K):
        ks = k + tl.arange(0, BLOCK_K)
        m2 = rm[:, None] & (ks < D)[None, :]
        offs = rows[:, None] * D + ks[None, :]
        x = tl.load(X + offs, mask=m2, other=0.0).to(tl.float32)
        dxh = tl.load(DXH + offs, mask=m2, other=0.0)
        proj += tl.sum(x * rx[:, None] * dxh, axis=1)
        ss += tl.sum(x * x, axis=1)
    # F.normalize divides by max(||x||, eps): below eps the denominator is a constant.
    clamped = tl.sqrt(ss) <= eps
    proj = tl.where(clamped, 0.0, proj)
    for k in range(0, D, BLOCK_K):
        ks = k + tl.arange(0, BLOCK_K)
        m2 = rm[:, None] & (ks < D)[None, :]
        offs = rows[:, None] * D + ks[None, :]
        x = tl.load(X + offs, mask=m2, other=0.0).to(tl.float32)
        dxh = tl.load(DXH + offs, mask=m2, other=0.0)
        dx = (dxh - x * rx[:, None] * proj[:, None]) * (rx * c)[:, None]
        tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=m2)


class _Config(NamedTuple):
    """Launch parameters of the info_nce kernels for one (N, D, dtype)."""

    block: int  # BLOCK_M = BLOCK_N of the logit tiles
    block_k: int  # feature chunk of the logit tiles' dots
    block_do: int  # features of d x^ per backward program
    warps: int  # num_warps of the tile kernels (lse, bwd)
    lse_stages: int  # num_stages of _lse_kernel
    bwd_stages: int  # num_stages of _bwd_kernel
    block_r: int  # rows per program of the row kernels (norm, finish; 4 warps)
    block_kr: int  # feature chunk of the row kernels


def _blocks(N: int, D: int, dtype: torch.dtype) -> _Config:
    """The one configuration each kernel runs with (no autotuning), clamped to small N and D.

    Chosen from sm_90 and sm_80 builds (cuobjdump register/stack report, checked by
    tests/ops/test_triton_aot.py), with and without Triton's divisible-by-16 specialization of N and D:
    none spills. 16-bit inputs: 64-row tiles, 32-feature chunks, 128 output features per backward program,
    8 warps. Float32 (tf32x3 splits every operand in two, doubling the dot's registers): 32-row tiles,
    32-feature chunks, 64 output features per backward program, and 2 pipeline stages for the forward
    (3 made ptxas spill on sm_80). The row kernels: 32 x 64 tiles with 4 warps (64 x 64 spilled the
    64-bit addresses of the unspecialized build)."""
    wide = dtype in (torch.float16, torch.bfloat16)
    block = max(16, min(64 if wide else 32, next_pow2(N)))  # tl.dot needs every dimension >= 16
    block_k = max(16, min(32, next_pow2(D)))
    block_do = max(16, min(128 if wide else 64, next_pow2(D)))
    return _Config(block, block_k, block_do, 8, 3 if wide else 2, 3, max(1, min(32, next_pow2(N))),
                   max(16, min(64, next_pow2(D))))


def _g_scale(dtype: torch.dtype) -> float:
    """The power of two the backward's ``P - I`` tile is multiplied by before its cast to ``dtype``:
    2**14 for float16 (|g| <= 2 stays below 65504; softmax terms down to ~4e-9 stay normal), 1 else."""
    return 16384.0 if dtype == torch.float16 else 1.0


def _dot_precision(x: torch.Tensor) -> str:
    if x.dtype != torch.float32:
        return "tf32"  # Triton's default; irrelevant for 16-bit operands (exact products, float32 accumulation)
    if x.device.type == "cuda" and torch.version.hip is None:
        return "tf32x3"
    return "ieee"


def _inv_norms(x: torch.Tensor, out: torch.Tensor, eps: float, block_r: int, block_k: int) -> None:
    N, D = x.shape
    _inv_norm_kernel[(triton.cdiv(N, block_r),)](x, out, N, D, float(eps), BLOCK_R=block_r, BLOCK_K=block_k)


def forward(
    a: torch.Tensor, b: torch.Tensor, *, temperature: float, symmetric: bool, eps: float = 1e-12
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE of ``(N, D)`` rows ``a`` against ``b`` (same dtype, ``D <= MAX_D``).

    Returns ``(loss, stats)``: the scalar loss in ``a.dtype`` and a float32 ``(4, N)`` tensor of
    ``1/||a_i||``, ``1/||b_i||``, row log-sum-exps and column log-sum-exps (zeros unless ``symmetric``),
    which :func:`backward` needs.
    """
    a, b = a.contiguous(), b.contiguous()
    N, D = a.shape
    cfg = _blocks(N, D, a.dtype)
    prec = _dot_precision(a)
    stats = torch.zeros(4, N, dtype=torch.float32, device=a.device)
    ra, rb, lse_r, lse_c = stats.unbind(0)
    _inv_norms(a, ra, eps, cfg.block_r, cfg.block_kr)  # rows of stats are contiguous: written in place
    _inv_norms(b, rb, eps, cfg.block_r, cfg.block_kr)
    pos = torch.empty(N, dtype=torch.float32, device=a.device)
    inv_t = 1.0 / float(temperature)
    grid = (triton.cdiv(N, cfg.block),)
    common = dict(BLOCK_M=cfg.block, BLOCK_N=cfg.block, BLOCK_K=cfg.block_k, DOT_PRECISION=prec,
                  num_warps=cfg.warps, num_stages=cfg.lse_stages)
    _lse_kernel[grid](a, b, ra, rb, lse_r, pos, N, D, inv_t * _LOG2E, inv_t, WRITE_POS=True, **common)
    loss = (lse_r - pos).mean()
    if symmetric:
        _lse_kernel[grid](b, a, rb, ra, lse_c, pos, N, D, inv_t * _LOG2E, inv_t, WRITE_POS=False, **common)
        loss = 0.5 * (loss + (lse_c - pos).mean())
    return loss.to(a.dtype), stats


def backward(
    grad: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    stats: torch.Tensor,
    *,
    temperature: float,
    symmetric: bool,
    eps: float = 1e-12,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients ``(d loss/d a, d loss/d b)`` given the upstream scalar ``grad`` and :func:`forward`'s stats."""
    a, b = a.contiguous(), b.contiguous()
    N, D = a.shape
    cfg = _blocks(N, D, a.dtype)
    prec = _dot_precision(a)
    ra, rb, lse_r, lse_c = stats.unbind(0)
    # Device scalar (no host sync): grad * (1/2 if symmetric) / N.
    coef = (grad.reshape(1).to(torch.float32) * ((0.5 if symmetric else 1.0) / N)).contiguous()
    inv_t = 1.0 / float(temperature)
    grid = (triton.cdiv(N, cfg.block), triton.cdiv(D, cfg.block_do))
    common = dict(BLOCK_M=cfg.block, BLOCK_N=cfg.block, BLOCK_K=cfg.block_k, BLOCK_DO=cfg.block_do,
                  DOT_PRECISION=prec, num_warps=cfg.warps, num_stages=cfg.bwd_stages)
    diag = 1.0 + bool(symmetric)
    dxh = torch.empty(N, D, dtype=torch.float32, device=a.device)  # d x^ scratch, reused for both sides
    grads = []
    # da: rows of a against columns b; the row softmax always counts, the column one when symmetric.
    # db: the transpose; rows are b, so the roles of the two log-sum-exps swap.
    for x, y, rx, ry, lse_row, lse_col, row_term, col_term in (
        (a, b, ra, rb, lse_r, lse_c, True, bool(symmetric)),
        (b, a, rb, ra, lse_c, lse_r, bool(symmetric), True),
    ):
        _bwd_kernel[grid](x, y, rx, ry, lse_row, lse_col, dxh, N, D, inv_t * _LOG2E, inv_t,
                          ROW_TERM=row_term, COL_TERM=col_term, DIAG=diag, G_SCALE=_g_scale(a.dtype), **common)
        dx = torch.empty_like(x)
        _finish_kernel[(triton.cdiv(N, cfg.block_r),)](x, rx, dxh, coef, dx, N, D, float(eps),
                                                       BLOCK_R=cfg.block_r, BLOCK_K=cfg.block_kr)
        grads.append(dx)
    return grads[0], grads[1]
