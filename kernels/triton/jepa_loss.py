"""Triton kernels of the fused JEPA prediction loss (``jepa.ops.jepa_loss``).

Rows are the ``R = numel / D`` vectors of length ``D`` along the last dimension. One program owns
``BLOCK_R`` whole rows (``BLOCK_D = next_pow2(D)`` columns), so the layer-norm statistics of a target
row never leave registers:

- forward: load pred and target rows, layer-norm the target (no affine, biased variance, eps 1e-5 as
  ``F.layer_norm``), elementwise distance, multiply by the row's mask bit, then either store the
  elementwise loss (``reduction="none"``) or one float32 partial sum (and the mask bit) per row.
  A one-program finalize kernel sums the partials in a fixed order (deterministic, unlike atomics),
  counts the selected tokens, divides for ``"mean"`` and writes the loss and the count.
- backward: recompute the normalized target (cheaper than storing it: it is one more read of a
  tensor we read anyway) and write ``d loss / d pred`` directly. The upstream gradient of a scalar
  loss and the count are read from device memory, so neither pass ever syncs with the host, and a
  backward is a single launch.

Fused target gather (I-JEPA): with ``target_index`` (B, M), ``pred`` is (B, M, D), ``target`` (B, N, D),
and pred row (b, m) is compared with target row ``(b, target_index[b, m])``, read in place: the gathered
(and repeated) target rows are never written to memory. An index outside ``[0, N)`` is not read; it
makes the loss NaN (and its gradient row NaN), the one signal a kernel can give without a host sync.

The target gets no gradient here: in JEPA it is the EMA target encoder's output (stop-gradient).
The dispatcher in jepa/ops/jepa_loss.py only routes a target that needs no gradient here in ``auto``.
Mask rows are read as uint8 (a bool tensor viewed as bytes); masked-out rows still load their data,
so NaN in a masked-out row propagates exactly as in the torch reference (NaN * 0 = NaN).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import next_pow2, num_warps_for, sign

__all__ = ["LOSS_CODES", "MAX_D", "forward", "backward"]

LOSS_CODES = {"smooth_l1": 0, "mse": 1, "l1": 2}
# Whole rows live in registers; past this the kernel would spill heavily. Wider rows use the torch path.
MAX_D = 16384
# Elements one program handles (rows x padded columns): enough bytes in flight per program.
_ELEMS_PER_PROGRAM = 4096


@triton.jit
def _target_offsets(IDX, rows, rmask, cols, M_PER_B, N_T, D, GATHER: tl.constexpr):
    """Element offsets of the target rows that pred rows ``rows`` are compared with, and which rows have
    a valid target: row r itself, or (with GATHER) row ``b * N_T + IDX[r]`` of the (B, N_T, D) target,
    b = r // M_PER_B."""
    if GATHER:
        ti = tl.load(IDX + rows, mask=rmask, other=0)
        ok = (ti >= 0) & (ti < N_T)
        trow = (rows // M_PER_B) * N_T + tl.where(ok, ti, 0)
    else:
        ok = rmask
        trow = rows
    return trow[:, None] * D + cols[None, :], ok


@triton.jit
def _normalized_rows(T, offs, m2, D, eps, NORMALIZE: tl.constexpr):
    t = tl.load(T + offs, mask=m2, other=0.0).to(tl.float32)
    if NORMALIZE:
        mean = tl.sum(t, axis=1) / D
        tc = tl.where(m2, t - mean[:, None], 0.0)
        var = tl.sum(tc * tc, axis=1) / D
        t = tc * (1.0 / tl.sqrt(var + eps))[:, None]  # one division per row, not per element
    return t


@triton.jit
def _jepa_loss_fwd_kernel(
    P, T, M, IDX, OUT, PARTIAL, R, D, M_PER_B, N_T, beta, eps,
    LOSS: tl.constexpr, NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr, REDUCE: tl.constexpr,
    GATHER: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # int64 before any multiplication: R * D may exceed 2**31.
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    rmask = rows < R
    m2 = rmask[:, None] & (cols < D)[None, :]
    offs = rows[:, None] * D + cols[None, :]
    toffs, t_ok = _target_offsets(IDX, rows, rmask, cols, M_PER_B, N_T, D, GATHER)
    t = _normalized_rows(T, toffs, m2 & t_ok[:, None], D, eps, NORMALIZE)
    p = tl.load(P + offs, mask=m2, other=0.0).to(tl.float32)
    d = p - t
    if LOSS == 0:
        a = tl.abs(d)
        e = tl.where(a < beta, 0.5 * d * d / beta, a - 0.5 * beta)
    elif LOSS == 1:
        e = d * d
    else:
        e = tl.abs(d)
    if HAS_MASK:
        w = tl.load(M + rows, mask=rmask, other=0).to(tl.float32)
        e = e * w[:, None]
    if GATHER:
        e = tl.where(t_ok[:, None], e, float("nan"))  # an out-of-range index poisons the loss
    e = tl.where(m2, e, 0.0)
    if REDUCE:
        tl.store(PARTIAL + rows, tl.sum(e, axis=1), mask=rmask)
        if HAS_MASK:  # the row's mask bit, for the selected-token count of "mean"
            tl.store(PARTIAL + R + rows, w, mask=rmask)
    else:
        tl.store(OUT + offs, e.to(OUT.dtype.element_ty), mask=m2)


@triton.jit
def _jepa_loss_finalize_kernel(PARTIAL, OUT, COUNT, R, D, HAS_MASK: tl.constexpr, MEAN: tl.constexpr, BLOCK: tl.constexpr):
    # One program, a fixed summation order: deterministic, and one launch instead of torch's
    # sum + count + clamp + divide + cast.
    total = tl.zeros([BLOCK], tl.float32)
    selected = tl.zeros([BLOCK], tl.float32)
    for start in range(0, R, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        total += tl.load(PARTIAL + idx, mask=idx < R, other=0.0)
        if HAS_MASK:
            selected += tl.load(PARTIAL + R + idx, mask=idx < R, other=0.0)
    t = tl.sum(total, axis=0)
    if HAS_MASK:
        n = tl.maximum(tl.sum(selected, axis=0), 1.0) * D  # at least one token, as the reference
    else:
        # Not R.to(...): launched with R == 1, Triton passes R as the constant 1, which has no .to.
        n = (tl.zeros([], tl.float32) + R) * D
    if MEAN:
        t = t / n
    tl.store(OUT, t.to(OUT.dtype.element_ty))
    tl.store(COUNT, n)


@triton.jit
def _jepa_loss_bwd_kernel(
    P, T, M, IDX, G, COUNT, GP, R, D, M_PER_B, N_T, beta, eps,
    LOSS: tl.constexpr, NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr, G_FULL: tl.constexpr,
    MEAN: tl.constexpr, GATHER: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    rmask = rows < R
    m2 = rmask[:, None] & (cols < D)[None, :]
    offs = rows[:, None] * D + cols[None, :]
    toffs, t_ok = _target_offsets(IDX, rows, rmask, cols, M_PER_B, N_T, D, GATHER)
    t = _normalized_rows(T, toffs, m2 & t_ok[:, None], D, eps, NORMALIZE)
    p = tl.load(P + offs, mask=m2, other=0.0).to(tl.float32)
    d = p - t
    if LOSS == 0:
        # torch: x/beta inside (-beta, beta), sign(x) outside (both give +-1 at |x| == beta).
        de = tl.where(tl.abs(d) < beta, d / beta, sign(d))
    elif LOSS == 1:
        de = 2.0 * d
    else:
        de = sign(d)
    if G_FULL:
        g = tl.load(G + offs, mask=m2, other=0.0).to(tl.float32)
    else:
        g = tl.load(G).to(tl.float32)  # the scalar upstream gradient, read on the device: no host sync
        if MEAN:
            g = g / tl.load(COUNT)
    gp = de * g
    if HAS_MASK:
        w = tl.load(M + rows, mask=rmask, other=0).to(tl.float32)
        gp = gp * w[:, None]
    if GATHER:
        gp = tl.where(t_ok[:, None], gp, float("nan"))
    tl.store(GP + offs, gp.to(GP.dtype.element_ty), mask=m2)


def _launch_shape(R: int, D: int) -> tuple[int, int, int, int]:
    block_d = next_pow2(D)
    block_r = max(1, min(128, _ELEMS_PER_PROGRAM // block_d))
    block_r = min(block_r, next_pow2(R))
    return block_r, block_d, triton.cdiv(R, block_r), num_warps_for(block_r * block_d)


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1]).contiguous()


def _mask_bytes(mask: torch.Tensor | None) -> torch.Tensor | None:
    return None if mask is None else mask.reshape(-1).contiguous().view(torch.uint8)


def _gather_args(pred: torch.Tensor, target: torch.Tensor, target_index: torch.Tensor | None):
    """(target rows, index or placeholder, rows per batch, target rows per batch, GATHER)."""
    if target_index is None:
        return _rows(target), None, 1, 1, False
    b, m, _ = pred.shape
    n_t = target.shape[1]
    return _rows(target), target_index.reshape(-1).contiguous(), m, n_t, True


def forward(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    loss: str,
    normalize_target: bool,
    beta: float,
    reduction: str,
    eps: float = 1e-5,
    target_index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of ``pred`` against (layer-normed) ``target``; both ``(..., D)``, same dtype, ``D <= MAX_D``;
    with ``target_index`` (B, M) int64, ``pred`` is (B, M, D) and ``target`` (B, N, D), gathered in place.

    Returns ``(loss, count)``: the loss (scalar, or ``pred``'s shape for ``"none"``) in ``pred.dtype``,
    and a float32 ``(1,)`` tensor with the element count ``"mean"`` divides by (selected tokens, at
    least 1, x D), which :func:`backward` reads on the device (empty for ``"none"``).
    Launches on the current device (the caller makes it the tensors').
    """
    D = pred.shape[-1]
    p, m = _rows(pred), _mask_bytes(mask)
    t, idx, m_per_b, n_t, gather = _gather_args(pred, target, target_index)
    R = p.shape[0]
    block_r, block_d, grid, warps = _launch_shape(R, D)
    reduce = reduction != "none"
    out = partial = p  # unused pointer placeholders (the constexpr branches never touch them)
    if reduce:
        partial = torch.empty(2 * R if m is not None else R, dtype=torch.float32, device=p.device)
    else:
        out = torch.empty_like(p)
    _jepa_loss_fwd_kernel[(grid,)](
        p, t, m if m is not None else p, idx if idx is not None else p, out, partial, R, D, m_per_b, n_t,
        float(beta), float(eps),
        LOSS=LOSS_CODES[loss], NORMALIZE=bool(normalize_target), HAS_MASK=m is not None, REDUCE=reduce,
        GATHER=gather, BLOCK_R=block_r, BLOCK_D=block_d, num_warps=warps,
    )
    if not reduce:
        return out.view(pred.shape), torch.empty(0, dtype=torch.float32, device=p.device)
    total = torch.empty((), dtype=pred.dtype, device=p.device)
    n = torch.empty(1, dtype=torch.float32, device=p.device)
    _jepa_loss_finalize_kernel[(1,)](
        partial, total, n, R, D, HAS_MASK=m is not None, MEAN=reduction == "mean", BLOCK=1024, num_warps=4
    )
    return total, n


def backward(
    grad: torch.Tensor,
    count: torch.Tensor,
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    loss: str,
    normalize_target: bool,
    beta: float,
    reduction: str,
    eps: float = 1e-5,
    target_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """``d loss / d pred`` given the upstream gradient ``grad`` (a scalar, or ``pred``'s shape for "none")
    and the ``count`` :func:`forward` returned."""
    D = pred.shape[-1]
    p, m = _rows(pred), _mask_bytes(mask)
    t, idx, m_per_b, n_t, gather = _gather_args(pred, target, target_index)
    R = p.shape[0]
    block_r, block_d, grid, warps = _launch_shape(R, D)
    full = reduction == "none"
    g = _rows(grad.expand(pred.shape)) if full else grad.reshape(1)
    gp = torch.empty_like(p)
    _jepa_loss_bwd_kernel[(grid,)](
        p, t, m if m is not None else p, idx if idx is not None else p, g, count if count.numel() else g, gp,
        R, D, m_per_b, n_t, float(beta), float(eps),
        LOSS=LOSS_CODES[loss], NORMALIZE=bool(normalize_target), HAS_MASK=m is not None, G_FULL=full,
        MEAN=reduction == "mean", GATHER=gather, BLOCK_R=block_r, BLOCK_D=block_d, num_warps=warps,
    )
    return gp.view(pred.shape)
