"""Triton kernels of the fused InfoNCE loss (``jepa.ops.info_nce``).

``S = normalize(a) @ normalize(b).T / T``; the loss is the mean over rows of ``lse_i(S) - S_ii``
(and, with ``symmetric``, the mean of that and the same over columns). The ``N x N`` logits are never
stored: each program owns ``BLOCK_M`` rows and walks the columns in ``BLOCK_N`` tiles, keeping an online
log-sum-exp (running max and rescaled sum, in base 2), like flash attention does for softmax.

- ``_inv_norm_kernel``: ``1 / max(||x||, eps)`` per row (``F.normalize``'s eps 1e-12).
- ``_lse_kernel``: per-row log-sum-exp of ``S`` (rows of x against all rows of y) and, once, the
  positive logit ``S_ii`` computed elementwise in float32 (not through the tile dot). Called with
  (a, b) for the rows and, for ``symmetric``, with (b, a) for the columns (``S.T`` has the same form).
- ``_bwd_kernel``: ``dL/dS = c * (P - I) [+ c * (Q - I)]`` with ``P = softmax_rows(S)``,
  ``Q = softmax_cols(S)`` rebuilt tile by tile from the saved log-sum-exps, multiplied into the other
  side's rows and pushed through the normalization (``dx = (dx^ - x^ (x^ . dx^)) / ||x||``), written
  as the gradient of x in the input dtype. Called with (a, b) for ``da`` and (b, a) for ``db``.
  The common factor ``c = grad * (1/2 if symmetric) / N`` is applied after the tile dots, so the
  half-precision operand of the dot stays O(1) (``c`` alone would underflow float16 for large N).

Row tiles hold the whole feature dimension (``BLOCK_D = next_pow2(D)``), so D is capped at ``MAX_D``
(wider inputs use the torch path). ``tl.dot`` on float32 inputs uses ``tf32x3`` (about float32
accuracy at a fraction of the IEEE cost) on NVIDIA GPUs, IEEE elsewhere.
"""

from __future__ import annotations


import torch
import triton
import triton.language as tl

from ._common import next_pow2

__all__ = ["MAX_D", "forward", "backward"]

MAX_D = 4096
_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453


@triton.jit
def _inv_norm_kernel(X, OUT, N, D, eps, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    rm = rows < N
    x = tl.load(X + rows[:, None] * D + cols[None, :], mask=rm[:, None] & (cols < D)[None, :], other=0.0)
    x = x.to(tl.float32)
    nrm = tl.sqrt(tl.sum(x * x, axis=1))
    tl.store(OUT + rows, 1.0 / tl.maximum(nrm, eps), mask=rm)


@triton.jit
def _lse_kernel(
    X, Y, RX, RY, LSE, POS, N, D, scale2, inv_t,
    WRITE_POS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    dcols = tl.arange(0, BLOCK_D)
    rm = rows < N
    dm = dcols < D
    x = tl.load(X + rows[:, None] * D + dcols[None, :], mask=rm[:, None] & dm[None, :], other=0.0)
    rx = tl.load(RX + rows, mask=rm, other=0.0)
    # Logits in base 2: s2 = S * log2(e), so exp(S - lse) == exp2(s2 - lse * log2(e)).
    row_scale = rx * scale2
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N).to(tl.int64)
        cm = cols < N
        y = tl.load(Y + cols[:, None] * D + dcols[None, :], mask=cm[:, None] & dm[None, :], other=0.0)
        ry = tl.load(RY + cols, mask=cm, other=0.0)
        s = tl.dot(x, tl.trans(y), input_precision=DOT_PRECISION)
        s = s * row_scale[:, None] * ry[None, :]
        s = tl.where(cm[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        l_i = l_i * tl.exp2(m_i - m_new) + tl.sum(tl.exp2(s - m_new[:, None]), axis=1)
        m_i = m_new
    tl.store(LSE + rows, (m_i + tl.log2(l_i)) * 0.6931471805599453, mask=rm)
    if WRITE_POS:
        yd = tl.load(Y + rows[:, None] * D + dcols[None, :], mask=rm[:, None] & dm[None, :], other=0.0)
        ryd = tl.load(RY + rows, mask=rm, other=0.0)
        pos = tl.sum(x.to(tl.float32) * yd.to(tl.float32), axis=1) * rx * ryd * inv_t
        tl.store(POS + rows, pos, mask=rm)


@triton.jit
def _bwd_kernel(
    X, Y, RX, RY, LSE_ROW, LSE_COL, COEF, DX, N, D, scale2, inv_t, eps,
    ROW_TERM: tl.constexpr, COL_TERM: tl.constexpr, DIAG: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    dcols = tl.arange(0, BLOCK_D)
    rm = rows < N
    dm = dcols < D
    xm = rm[:, None] & dm[None, :]
    x = tl.load(X + rows[:, None] * D + dcols[None, :], mask=xm, other=0.0)
    rx = tl.load(RX + rows, mask=rm, other=0.0)
    row_scale = rx * scale2
    lse_r2 = tl.zeros([BLOCK_M], tl.float32)
    if ROW_TERM:
        lse_r2 = tl.load(LSE_ROW + rows, mask=rm, other=0.0) * 1.4426950408889634
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N).to(tl.int64)
        cm = cols < N
        y = tl.load(Y + cols[:, None] * D + dcols[None, :], mask=cm[:, None] & dm[None, :], other=0.0)
        ry = tl.load(RY + cols, mask=cm, other=0.0)
        s = tl.dot(x, tl.trans(y), input_precision=DOT_PRECISION)
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
        # d S_ij / d x^_i = y^_j / T = y_j * ry_j / T: fold ry / T into the columns of g.
        g = g * (ry * inv_t)[None, :]
        acc += tl.dot(g.to(y.dtype), y, input_precision=DOT_PRECISION)
    acc = acc * tl.load(COEF).to(tl.float32)
    xf = x.to(tl.float32)
    xh = xf * rx[:, None]
    nrm = tl.sqrt(tl.sum(xf * xf, axis=1))
    proj = tl.sum(xh * acc, axis=1)
    # F.normalize divides by max(||x||, eps): below eps the denominator is a constant.
    dx = tl.where((nrm > eps)[:, None], (acc - xh * proj[:, None]) * rx[:, None], acc * rx[:, None])
    tl.store(DX + rows[:, None] * D + dcols[None, :], dx.to(DX.dtype.element_ty), mask=xm)


def _blocks(N: int, D: int) -> tuple[int, int, int]:
    block_d = max(16, next_pow2(D))  # tl.dot needs every dimension >= 16
    if block_d >= 1024:
        block = 16
    elif block_d >= 256:
        block = 32
    else:
        block = 64
    block = max(16, min(block, next_pow2(N)))
    warps = 4 if block * block_d < 16384 else 8  # whole-row tiles: more threads, fewer registers each
    return block, block_d, warps


def _dot_precision(x: torch.Tensor) -> str:
    if x.dtype != torch.float32:
        return "tf32"  # Triton's default; irrelevant for 16-bit operands (exact products, float32 accumulation)
    if x.device.type == "cuda" and torch.version.hip is None:
        return "tf32x3"
    return "ieee"


def _inv_norms(x: torch.Tensor, eps: float) -> torch.Tensor:
    N, D = x.shape
    block_d = next_pow2(D)
    block_r = max(1, min(64, 4096 // block_d, next_pow2(N)))
    out = torch.empty(N, dtype=torch.float32, device=x.device)
    _inv_norm_kernel[(triton.cdiv(N, block_r),)](x, out, N, D, float(eps), BLOCK_R=block_r, BLOCK_D=block_d)
    return out


def forward(
    a: torch.Tensor, b: torch.Tensor, *, temperature: float, symmetric: bool, eps: float = 1e-12
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE of ``(N, D)`` rows ``a`` against ``b`` (same dtype, contiguous, ``D <= MAX_D``).

    Returns ``(loss, stats)``: the scalar loss in ``a.dtype`` and a float32 ``(4, N)`` tensor of
    ``1/||a_i||``, ``1/||b_i||``, row log-sum-exps and column log-sum-exps (zeros unless ``symmetric``),
    which :func:`backward` needs.
    """
    a, b = a.contiguous(), b.contiguous()
    N, D = a.shape
    block, block_d, warps = _blocks(N, D)
    prec = _dot_precision(a)
    stats = torch.zeros(4, N, dtype=torch.float32, device=a.device)
    ra, rb, lse_r, lse_c = stats.unbind(0)
    ra.copy_(_inv_norms(a, eps))
    rb.copy_(_inv_norms(b, eps))
    pos = torch.empty(N, dtype=torch.float32, device=a.device)
    inv_t = 1.0 / float(temperature)
    grid = (triton.cdiv(N, block),)
    common = dict(BLOCK_M=block, BLOCK_N=block, BLOCK_D=block_d, DOT_PRECISION=prec, num_warps=warps)
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
    block, block_d, warps = _blocks(N, D)
    prec = _dot_precision(a)
    ra, rb, lse_r, lse_c = stats.unbind(0)
    # Device scalar (no host sync): grad * (1/2 if symmetric) / N.
    coef = (grad.reshape(1).to(torch.float32) * ((0.5 if symmetric else 1.0) / N)).contiguous()
    inv_t = 1.0 / float(temperature)
    grid = (triton.cdiv(N, block),)
    common = dict(BLOCK_M=block, BLOCK_N=block, BLOCK_D=block_d, DOT_PRECISION=prec, num_warps=warps)
    da = torch.empty_like(a)
    db = torch.empty_like(b)
    # da: rows of a against columns b; the row softmax always counts, the column one when symmetric.
    _bwd_kernel[grid](a, b, ra, rb, lse_r, lse_c, coef, da, N, D, inv_t * _LOG2E, inv_t, float(eps),
                      ROW_TERM=True, COL_TERM=bool(symmetric), DIAG=1.0 + bool(symmetric), **common)
    # db: the transpose; rows are b, so the roles of the two log-sum-exps swap.
    _bwd_kernel[grid](b, a, rb, ra, lse_c, lse_r, coef, db, N, D, inv_t * _LOG2E, inv_t, float(eps),
                      ROW_TERM=bool(symmetric), COL_TERM=True, DIAG=1.0 + bool(symmetric), **common)
    return da, db
