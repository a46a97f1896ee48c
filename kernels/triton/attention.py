"""Flash attention in Triton: forward and backward over ``(B, H, N, d)`` tensors.

Forward (``_attn_fwd``): one program per (block of BLOCK_M queries, batch*head). It streams the keys and
values in blocks of BLOCK_N with an online softmax (running max ``m``, running sum ``l``, rescaled
accumulator), so no N x N matrix is ever stored, and writes the output and the per-row log-sum-exp
``lse = log(sum_j exp(s_ij))`` (natural log, float32) that the backward pass needs.

Backward (the FlashAttention-2 split):
  1. ``_attn_bwd_delta``: ``delta_i = sum_d dO_id * O_id`` (float32), so that
     ``dS = P * (dP - delta)`` needs no row reduction inside the main loops.
  2. ``_attn_bwd_dkdv``: one program per (block of keys, batch*head); it walks over the query blocks,
     recomputes ``P = exp(S - lse)`` and accumulates ``dV += P^T dO`` and ``dK += dS^T Q``.
  3. ``_attn_bwd_dq``: one program per (block of queries, batch*head); it walks over the key blocks and
     accumulates ``dQ += dS K``. Two kernels instead of atomics: deterministic results and no zero-fill.

Scores are computed in the base-2 domain (``s * scale * log2(e)``, then ``exp2``): one multiply per
score instead of the multiply inside ``exp``.

Masks:
  * any N: loads and stores are masked on the sequence bounds. In the forward and dQ loops the key bound
    and the causal diagonal are applied only in the last key blocks; full blocks below the diagonal run
    unmasked. The dK/dV loop needs no key-bound mask (a key row of dK/dV depends on that key alone and
    rows past N_k are not stored) and applies the causal mask only on the diagonal query blocks;
  * any head size d <= 128: the head dimension is padded to the next power of two >= 16 inside the
    kernel (masked loads give zeros, which change neither ``q.k`` nor the output), so nothing is copied.
    d is a compile-time constant, so for d = BLOCK_D the head-dim mask folds away and loads stay vectorized;
  * ``key_padding_mask`` (B, N_k), nonzero = ignore that key;
  * ``causal``: query i sees keys j <= i (top-left aligned, as ``scaled_dot_product_attention``).
A query row whose keys are all masked gets output 0, ``lse = +inf`` (so every recomputed ``P`` is 0)
and zero gradients.

Grid: one axis, (batch*head) x blocks flattened (B*H may exceed the 65535 of grid axes 1 and 2).

Offsets: up to each (batch, head) slice they are 64-bit (``b * stride_b`` alone may pass 2**31); inside it
``row * stride_row`` is computed in the constexpr ``OFFS`` type, int32 unless a slice spans 2**31 elements
or more (:func:`offsets_dtype`), so the common case keeps the registers of 32-bit offsets.

Tile configurations (BLOCK_M, BLOCK_N, warps, pipeline stages) come from small tables per kernel, dot
class (16-bit inputs; float32 with ``tf32``; float32 with ``tf32x3``, the float32-accurate split used when
tf32 is not allowed) and padded head size, with ``SM80_TILE_TABLES`` replacing entries on devices below
compute capability 9.0. Every entry compiles without register spills for sm_90 and, where the device
uses it, sm_80 (checked ahead of time by ``tests/ops/test_triton_aot.py``); entries whose shared memory (an upper
bound, :func:`smem_bytes`, checked against the compiled kernels by the same tests) exceeds the device's
limit are dropped at run time, and when none fits the smallest runs, never the largest.

- ``JEPA_TRITON_AUTOTUNE=1`` (default): the fitting entries are autotuned at the first call of each key
  (power-of-two bucket of the sequence length, padded head size, causal, masking, dot precision, dtype).
- ``JEPA_TRITON_AUTOTUNE=0``: the first fitting entry of each table (:func:`pinned_config`), one known-good
  configuration per (head size, dtype): no benchmarking at the first call, the same tile order on every
  run (reproducible), and what the tests run. Launches during CUDA-graph capture use it too (the
  autotuner cannot benchmark inside a capture).
- ``TRITON_INTERPRET=1`` (CPU tests): one small configuration per kernel (``INTERPRET_CONFIGS``), with
  BLOCK_M != BLOCK_N (the tests force other tile shapes too).

Only :mod:`jepa.ops.attention` imports this module (it imports ``triton`` at import time).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

__all__ = [
    "INTERPRET_CONFIGS", "MAX_HEAD_DIM", "SM80_TILE_TABLES", "SUPPORTED_DTYPES", "TILE_TABLES", "attention_backward",
    "attention_forward", "autotune_enabled", "device_capability", "dot_class", "fitting_configs", "padded_head_dim",
    "pinned_config", "smem_bytes",
]

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 128
_LOG2E = 1.4426950408889634


def padded_head_dim(d: int) -> int:
    """The head size the kernels compute with: the next power of two >= 16 (tl.dot needs >= 16)."""
    return max(16, triton.next_power_of_2(int(d)))


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip() not in ("", "0")


# (BLOCK_M, BLOCK_N, num_warps, num_stages) per kernel, dot class and padded head size (16 uses 32's
# list). The first entry that fits the device's shared memory is the pinned one (JEPA_TRITON_AUTOTUNE=0);
# the fitting ones are the autotuning candidates. The float32-accurate tf32x3 path (three dots per tile,
# register-bound: every larger tile spills) has one configuration per head size. Chosen from sm_90 compiles (ptxas registers, stack and
# shared memory): every entry compiles there without spills (tests/ops/test_attention_aot.py keeps it so).
# fwd: BLOCK_M queries per program, BLOCK_N keys per step; dkdv: BLOCK_N keys per program, BLOCK_M queries
# per step; dq: BLOCK_M queries per program, BLOCK_N keys per step.
TILE_TABLES: dict[str, dict[tuple[str, int], list[tuple[int, int, int, int]]]] = {
    "fwd": {
        ("16bit", 32): [(128, 64, 4, 3), (128, 128, 8, 3)],
        ("16bit", 64): [(128, 64, 8, 3), (128, 128, 8, 3)],
        ("16bit", 128): [(128, 64, 8, 3), (64, 32, 4, 3)],
        ("tf32", 32): [(128, 64, 8, 3), (64, 64, 4, 3)],
        ("tf32", 64): [(128, 64, 8, 3), (64, 64, 4, 3)],
        ("tf32", 128): [(64, 32, 4, 2), (32, 64, 4, 2)],
        ("tf32x3", 32): [(64, 64, 4, 3)],
        ("tf32x3", 64): [(64, 32, 4, 3)],
        ("tf32x3", 128): [(32, 32, 8, 2)],
    },
    "dkdv": {
        ("16bit", 32): [(64, 128, 8, 3), (32, 128, 8, 3)],
        ("16bit", 64): [(32, 128, 8, 3), (64, 64, 4, 2)],
        ("16bit", 128): [(32, 128, 8, 2), (32, 32, 4, 2)],
        ("tf32", 32): [(64, 128, 8, 2), (32, 128, 8, 3)],
        ("tf32", 64): [(32, 128, 8, 2), (64, 64, 4, 2)],
        ("tf32", 128): [(32, 32, 4, 2), (32, 16, 4, 2)],
        ("tf32x3", 32): [(32, 128, 8, 2)],
        ("tf32x3", 64): [(32, 16, 4, 2)],
        ("tf32x3", 128): [(32, 16, 8, 2)],
    },
    "dq": {
        ("16bit", 32): [(128, 64, 8, 3), (128, 128, 8, 3)],
        ("16bit", 64): [(128, 64, 8, 3), (128, 128, 8, 2)],
        ("16bit", 128): [(128, 32, 8, 3), (128, 64, 8, 3)],
        ("tf32", 32): [(128, 64, 8, 3), (64, 64, 4, 3)],
        ("tf32", 64): [(64, 64, 4, 3), (64, 32, 4, 2)],
        ("tf32", 128): [(64, 32, 4, 2), (16, 64, 4, 2)],
        ("tf32x3", 32): [(64, 32, 4, 2)],
        ("tf32x3", 64): [(64, 32, 4, 2)],
        ("tf32x3", 128): [(16, 32, 4, 2)],
    },
}

# Devices below compute capability 9.0 (A100 and other mma.sync GPUs: the dot operands live in registers,
# where sm_90's wgmma reads them from shared memory) replace these table entries: the sm_90 ones spill there.
# Every entry compiles for sm_80 without spills (tests/ops/test_triton_aot.py); keys not listed use TILE_TABLES.
SM80_TILE_TABLES: dict[str, dict[tuple[str, int], list[tuple[int, int, int, int]]]] = {
    "fwd": {
        ("16bit", 128): [(128, 32, 8, 3), (64, 32, 4, 3)],
        ("tf32", 32): [(128, 64, 8, 2), (64, 64, 4, 3)],
        ("tf32", 128): [(32, 64, 4, 2)],
        ("tf32x3", 32): [(64, 32, 8, 3), (32, 32, 4, 3)],
        ("tf32x3", 64): [(32, 32, 4, 3), (32, 32, 4, 2)],
    },
    "dkdv": {
        ("16bit", 64): [(32, 128, 8, 3)],
        ("16bit", 128): [(32, 64, 8, 2), (32, 32, 4, 2)],
        ("tf32", 64): [(32, 128, 8, 2)],
        ("tf32x3", 32): [(16, 64, 8, 2), (32, 16, 4, 2)],
    },
    "dq": {
        ("16bit", 32): [(128, 64, 8, 3)],
        ("16bit", 64): [(128, 32, 8, 3)],
        ("16bit", 128): [(64, 32, 8, 3), (64, 64, 8, 2), (64, 32, 4, 3)],
        ("tf32", 32): [(64, 32, 4, 3)],
        ("tf32", 64): [(32, 64, 4, 2), (32, 32, 4, 2)],
        ("tf32x3", 32): [(64, 32, 8, 2), (32, 32, 4, 2)],
        ("tf32x3", 64): [(16, 32, 4, 2), (32, 32, 4, 2)],
    },
}

# Under TRITON_INTERPRET=1: one small configuration per kernel (BLOCK_M != BLOCK_N); tests replace entries.
INTERPRET_CONFIGS = {
    "fwd": triton.Config({"BLOCK_M": 32, "BLOCK_N": 16}, num_warps=4, num_stages=1),
    "dkdv": triton.Config({"BLOCK_M": 16, "BLOCK_N": 32}, num_warps=4, num_stages=1),
    "dq": triton.Config({"BLOCK_M": 32, "BLOCK_N": 16}, num_warps=4, num_stages=1),
}


def dot_class(dtype: torch.dtype, precision: str) -> str:
    """The tile table a launch uses: ``"16bit"`` for float16/bfloat16 inputs, else the float32 dot
    precision (``"tf32"`` or ``"tf32x3"``; ``"ieee"`` uses the ``tf32x3`` tables, the smallest)."""
    if dtype in (torch.float16, torch.bfloat16):
        return "16bit"
    return "tf32" if precision == "tf32" else "tf32x3"


def smem_bytes(kernel: str, cls: str, block_d: int, cfg: tuple[int, int, int, int]) -> int:
    """An upper bound of the shared memory of ``kernel`` with tile ``cfg``: the pipelined tiles (each
    stage holds the two streamed operand tiles) plus the resident tile, in the operand dtype; ``tf32x3``
    keeps a second (low-part) copy of the resident tile. tests/ops/test_attention_aot.py checks it against
    the compiled sm_90 kernels of every table entry."""
    bm, bn, _warps, stages = cfg
    esize = 2 if cls == "16bit" else 4
    copies = 2 if cls == "tf32x3" else 1
    streamed, resident = (bm, bn) if kernel == "dkdv" else (bn, bm)
    if kernel == "fwd":
        return (stages * 2 * streamed * block_d + copies * resident * block_d) * esize
    # backward: the streamed operands (q and dO, or k and v) per stage, two resident tiles, and the
    # transposed/converted P and dS tiles the second and third dots read from shared memory.
    return (stages * 2 * streamed * block_d + copies * 2 * resident * block_d + 2 * bm * bn) * esize


def table_configs(
    kernel: str, dtype: torch.dtype, precision: str, block_d: int, cap: int = 90
) -> list[tuple[int, int, int, int]]:
    """The table entries of ``kernel`` for these inputs (before the shared-memory filter) on a device of
    compute capability ``cap`` (major * 10 + minor): :data:`SM80_TILE_TABLES` below 90, else TILE_TABLES."""
    key = (dot_class(dtype, precision), max(32, block_d))
    if cap < 90 and key in SM80_TILE_TABLES[kernel]:
        return SM80_TILE_TABLES[kernel][key]
    return TILE_TABLES[kernel][key]


def fitting_configs(
    kernel: str, dtype: torch.dtype, precision: str, block_d: int, smem_limit: int, cap: int = 90
) -> list[tuple[int, int, int, int]]:
    """The entries whose shared memory fits ``smem_limit`` bytes, in table order; when none does, the
    smallest one alone (it may still fail to launch on a very small device, but never the largest)."""
    cls = dot_class(dtype, precision)
    table = table_configs(kernel, dtype, precision, block_d, cap)
    fits = [c for c in table if smem_bytes(kernel, cls, max(32, block_d), c) <= smem_limit]
    return fits or [min(table, key=lambda c: smem_bytes(kernel, cls, max(32, block_d), c))]


def pinned_config(
    kernel: str, dtype: torch.dtype, precision: str, block_d: int, smem_limit: int, cap: int = 90
) -> triton.Config:
    """The one configuration ``JEPA_TRITON_AUTOTUNE=0`` runs for these inputs on a device with
    ``smem_limit`` bytes of shared memory per block and compute capability ``cap``."""
    return _config(fitting_configs(kernel, dtype, precision, block_d, smem_limit, cap)[0])


def _config(cfg: tuple[int, int, int, int]) -> triton.Config:
    bm, bn, warps, stages = cfg
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)


def autotune_enabled() -> bool:
    """``JEPA_TRITON_AUTOTUNE`` is not 0 (default on); never while a CUDA graph is being captured."""
    if os.environ.get("JEPA_TRITON_AUTOTUNE", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return not (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())


_SMEM_LIMITS: dict[int, int] = {}


def device_smem_limit() -> int:
    """Shared memory per block (opt-in maximum) of the current CUDA device, as Triton's launcher sees it."""
    index = torch.cuda.current_device()
    limit = _SMEM_LIMITS.get(index)
    if limit is None:
        props = triton.runtime.driver.active.utils.get_device_properties(index)
        limit = _SMEM_LIMITS[index] = int(props["max_shared_mem"])
    return limit


_CAPABILITIES: dict[int, int] = {}


def device_capability() -> int:
    """Compute capability of the current CUDA device as major * 10 + minor (90 for H100/H200)."""
    index = torch.cuda.current_device()
    cap = _CAPABILITIES.get(index)
    if cap is None:
        major, minor = torch.cuda.get_device_capability(index)
        cap = _CAPABILITIES[index] = 10 * major + minor
    return cap


def _pruner(kernel: str):
    def prune(configs, named_args, **kwargs):
        block_d = kwargs.get("BLOCK_D", named_args.get("BLOCK_D"))
        precision = kwargs.get("DOT_PRECISION", named_args.get("DOT_PRECISION"))
        fits = fitting_configs(kernel, named_args["Q"].dtype, precision, block_d, device_smem_limit(),
                               device_capability())
        return [_config(c) for c in fits]

    return prune


def _every_config(kernel: str) -> list[triton.Config]:
    tables = [*TILE_TABLES[kernel].values(), *SM80_TILE_TABLES[kernel].values()]
    seen = sorted({c for table in tables for c in table})
    return [_config(c) for c in seen]


# Tuned per power-of-two bucket of the sequence length, not per exact length: I-JEPA's context and
# target sizes change from batch to batch, and re-tuning for every new N would cost seconds each time.
# (The autotuner adds the tensor dtypes to the key by itself.)
_KEY = ["N_BUCKET", "BLOCK_D", "CAUSAL", "HAS_KPM", "DOT_PRECISION"]


# --------------------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------------------


@triton.jit
def _block_and_head(n, BLOCK: tl.constexpr):
    """(block index along the sequence, batch*head index) of this program. The grid is 1-D: grid axis 0
    takes up to 2**31 - 1 programs, axes 1 and 2 only 65535, which B*H alone can exceed; and the blocks
    of one head come one after the other, so the programs running together share its K/V in L2."""
    pid = tl.program_id(0)
    blocks = tl.cdiv(n, BLOCK)
    return pid % blocks, (pid // blocks).to(tl.int64)


@triton.jit
def _dot(a, b, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr):
    # UPCAST_DOT is set only under TRITON_INTERPRET=1 for bfloat16: the interpreter keeps bf16 as raw
    # uint16 and would multiply the bit patterns. bf16 -> fp32 is exact and the GPU's bf16 dot
    # accumulates in fp32 too, so this computes the same products; compiled kernels never take it.
    if UPCAST_DOT:
        r = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        r = tl.dot(a, b, input_precision=DOT_PRECISION)
    return r


@triton.jit
def _fwd_inner(
    acc, l_i, m_i, q,
    k_base, v_base, kpm_base,
    stride_kn, stride_kd, stride_vn, stride_vd, stride_kpm_n,
    offs_m, offs_d, d_ok,
    lo, hi, N_K, qk_scale,
    BLOCK_N: tl.constexpr,
    HAS_KPM: tl.constexpr,
    MASK_BOUNDS: tl.constexpr,
    CAUSAL_DIAG: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    OFFS: tl.constexpr,
):
    offs_n0 = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        n_ok = offs_n < N_K
        if MASK_BOUNDS:
            kt = tl.load(k_base + offs_n[None, :].to(OFFS) * stride_kn + offs_d[:, None] * stride_kd,
                         mask=n_ok[None, :] & d_ok[:, None], other=0.0)
            v = tl.load(v_base + offs_n[:, None].to(OFFS) * stride_vn + offs_d[None, :] * stride_vd,
                        mask=n_ok[:, None] & d_ok[None, :], other=0.0)
        else:
            kt = tl.load(k_base + offs_n[None, :].to(OFFS) * stride_kn + offs_d[:, None] * stride_kd,
                         mask=d_ok[:, None], other=0.0)
            v = tl.load(v_base + offs_n[:, None].to(OFFS) * stride_vn + offs_d[None, :] * stride_vd,
                        mask=d_ok[None, :], other=0.0)
        s = _dot(q, kt, DOT_PRECISION, UPCAST_DOT) * qk_scale  # base-2 logits
        if MASK_BOUNDS:
            s = tl.where(n_ok[None, :], s, float("-inf"))
        if CAUSAL_DIAG:
            s = tl.where(offs_n[None, :] <= offs_m[:, None], s, float("-inf"))
        if HAS_KPM:
            pad = tl.load(kpm_base + offs_n.to(OFFS) * stride_kpm_n, mask=n_ok, other=1)
            s = tl.where(pad[None, :] == 0, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # Rows with every key masked so far keep m = -inf; shift by 0 there so exp2 gives 0, not NaN.
        m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.math.exp2(m_i - m_shift)
        p = tl.math.exp2(s - m_shift[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, DOT_PRECISION, UPCAST_DOT)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd(
    Q, K, V, KPM, O, LSE,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_kpm_b, stride_kpm_n,
    H, N_Q, N_K, N_BUCKET, qk_scale,
    HEAD_D: tl.constexpr,
    BLOCK_D: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_KPM: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    OFFS: tl.constexpr,
):
    start_m, bh = _block_and_head(N_Q, BLOCK_M)
    b = bh // H
    h = bh % H
    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    kpm_base = KPM + b * stride_kpm_b

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < N_Q
    d_ok = offs_d < HEAD_D
    q = tl.load(q_base + offs_m[:, None].to(OFFS) * stride_qm + offs_d[None, :] * stride_qd,
                mask=m_ok[:, None] & d_ok[None, :], other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    if CAUSAL:
        hi = tl.minimum(N_K, (start_m + 1) * BLOCK_M)
        # Key blocks entirely at or below the first row of this query block need no causal mask.
        full_end = tl.minimum(start_m * BLOCK_M + 1, N_K)
    else:
        hi = N_K
        full_end = N_K
    full_end = (full_end // BLOCK_N) * BLOCK_N
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, kpm_base,
        stride_kn, stride_kd, stride_vn, stride_vd, stride_kpm_n,
        offs_m, offs_d, d_ok, 0, full_end, N_K, qk_scale,
        BLOCK_N, HAS_KPM, False, False, DOT_PRECISION, UPCAST_DOT, OFFS,
    )
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, kpm_base,
        stride_kn, stride_kd, stride_vn, stride_vd, stride_kpm_n,
        offs_m, offs_d, d_ok, full_end, hi, N_K, qk_scale,
        BLOCK_N, HAS_KPM, True, CAUSAL, DOT_PRECISION, UPCAST_DOT, OFFS,
    )

    empty = l_i == 0.0  # every key of the row is masked
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, float("inf"), (m_i + tl.math.log2(tl.where(empty, 1.0, l_i))) * 0.6931471805599453)
    o_base = O + b * stride_ob + h * stride_oh
    tl.store(o_base + offs_m[:, None].to(OFFS) * stride_om + offs_d[None, :] * stride_od,
             out.to(O.dtype.element_ty), mask=m_ok[:, None] & d_ok[None, :])
    tl.store(LSE + bh * N_Q + offs_m, lse, mask=m_ok)


# --------------------------------------------------------------------------------------------------
# Backward
# --------------------------------------------------------------------------------------------------


@triton.jit
def _attn_bwd_delta(
    O, DO, DELTA,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_dob, stride_doh, stride_dom, stride_dod,
    H, N_Q,
    HEAD_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
    OFFS: tl.constexpr,
):
    start_m, bh = _block_and_head(N_Q, BLOCK_M)
    b = bh // H
    h = bh % H
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m < N_Q)[:, None] & (offs_d < HEAD_D)[None, :]
    o = tl.load(O + b * stride_ob + h * stride_oh + offs_m[:, None].to(OFFS) * stride_om + offs_d[None, :] * stride_od,
                mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m[:, None].to(OFFS) * stride_dom + offs_d[None, :] * stride_dod,
                 mask=mask, other=0.0).to(tl.float32)
    tl.store(DELTA + bh * N_Q + offs_m, tl.sum(o * do, 1), mask=offs_m < N_Q)


@triton.jit
def _dkdv_inner(
    dk, dv, k, v, key_ok, offs_n, q_base, do_base, LSE, DELTA, bh,
    stride_qm, stride_qd, stride_dom, stride_dod,
    offs_d, d_ok, lo, hi, N_Q, qk_scale,
    BLOCK_M: tl.constexpr,
    MASK_KEYS: tl.constexpr,
    MASK_CAUSAL: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    OFFS: tl.constexpr,
):
    offs_m0 = tl.arange(0, BLOCK_M)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + offs_m0
        m_ok = offs_m < N_Q
        md_mask = m_ok[:, None] & d_ok[None, :]
        q = tl.load(q_base + offs_m[:, None].to(OFFS) * stride_qm + offs_d[None, :] * stride_qd, mask=md_mask, other=0.0)
        do = tl.load(do_base + offs_m[:, None].to(OFFS) * stride_dom + offs_d[None, :] * stride_dod, mask=md_mask, other=0.0)
        # Rows past N_Q: lse = +inf makes P = 0 there (and q = dO = 0).
        lse2 = tl.load(LSE + bh * N_Q + offs_m, mask=m_ok, other=float("inf")) * 1.4426950408889634
        delta = tl.load(DELTA + bh * N_Q + offs_m, mask=m_ok, other=0.0)
        # Transposed tiles (keys x queries) so that dK and dV accumulate without transposing back.
        st = _dot(k, tl.trans(q), DOT_PRECISION, UPCAST_DOT) * qk_scale
        pt = tl.math.exp2(st - lse2[None, :])
        if MASK_KEYS:
            pt = tl.where(key_ok[:, None], pt, 0.0)
        if MASK_CAUSAL:
            pt = tl.where(offs_n[:, None] <= offs_m[None, :], pt, 0.0)
        dv += _dot(pt.to(do.dtype), do, DOT_PRECISION, UPCAST_DOT)
        dpt = _dot(v, tl.trans(do), DOT_PRECISION, UPCAST_DOT)
        dst = pt * (dpt - delta[None, :])
        dk += _dot(dst.to(q.dtype), q, DOT_PRECISION, UPCAST_DOT)
    return dk, dv


@triton.jit
def _attn_bwd_dkdv(
    Q, K, V, KPM, DO, LSE, DELTA, DK, DV,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    stride_kpm_b, stride_kpm_n,
    H, N_Q, N_K, N_BUCKET, qk_scale, sm_scale,
    HEAD_D: tl.constexpr,
    BLOCK_D: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_KPM: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    OFFS: tl.constexpr,
):
    start_n, bh = _block_and_head(N_K, BLOCK_N)
    b = bh // H
    h = bh % H
    q_base = Q + b * stride_qb + h * stride_qh
    do_base = DO + b * stride_dob + h * stride_doh

    offs_n = start_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    n_ok = offs_n < N_K
    d_ok = offs_d < HEAD_D
    nd_mask = n_ok[:, None] & d_ok[None, :]
    k = tl.load(K + b * stride_kb + h * stride_kh + offs_n[:, None].to(OFFS) * stride_kn + offs_d[None, :] * stride_kd,
                mask=nd_mask, other=0.0)
    v = tl.load(V + b * stride_vb + h * stride_vh + offs_n[:, None].to(OFFS) * stride_vn + offs_d[None, :] * stride_vd,
                mask=nd_mask, other=0.0)
    # Keys past N_K need no mask in the loop: each key row of dK/dV depends only on that key's column
    # of P, and those rows are never stored. Padded keys do: their P must be exactly 0.
    key_ok = n_ok
    if HAS_KPM:
        pad = tl.load(KPM + b * stride_kpm_b + offs_n.to(OFFS) * stride_kpm_n, mask=n_ok, other=1)
        key_ok = key_ok & (pad == 0)

    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    if CAUSAL:
        # Queries before this key block never see it: start at the query block holding row start_n*BLOCK_N.
        # Query blocks from diag_end on see every key of the block: no causal mask there.
        lo = ((start_n * BLOCK_N) // BLOCK_M) * BLOCK_M
        diag_end = tl.cdiv((start_n + 1) * BLOCK_N - 1, BLOCK_M) * BLOCK_M
        dk, dv = _dkdv_inner(
            dk, dv, k, v, key_ok, offs_n, q_base, do_base, LSE, DELTA, bh,
            stride_qm, stride_qd, stride_dom, stride_dod,
            offs_d, d_ok, lo, tl.minimum(diag_end, N_Q), N_Q, qk_scale,
            BLOCK_M, HAS_KPM, True, DOT_PRECISION, UPCAST_DOT, OFFS,
        )
    else:
        diag_end = 0
    dk, dv = _dkdv_inner(
        dk, dv, k, v, key_ok, offs_n, q_base, do_base, LSE, DELTA, bh,
        stride_qm, stride_qd, stride_dom, stride_dod,
        offs_d, d_ok, diag_end, N_Q, N_Q, qk_scale,
        BLOCK_M, HAS_KPM, False, DOT_PRECISION, UPCAST_DOT, OFFS,
    )
    dk = dk * sm_scale
    tl.store(DK + b * stride_dkb + h * stride_dkh + offs_n[:, None].to(OFFS) * stride_dkn + offs_d[None, :] * stride_dkd,
             dk.to(DK.dtype.element_ty), mask=nd_mask)
    tl.store(DV + b * stride_dvb + h * stride_dvh + offs_n[:, None].to(OFFS) * stride_dvn + offs_d[None, :] * stride_dvd,
             dv.to(DV.dtype.element_ty), mask=nd_mask)


@triton.jit
def _dq_inner(
    dq, q, do, lse2, delta, k_base, v_base, kpm_base,
    stride_kn, stride_kd, stride_vn, stride_vd, stride_kpm_n,
    offs_m, offs_d, d_ok, lo, hi, N_K, qk_scale,
    BLOCK_N: tl.constexpr,
    HAS_KPM: tl.constexpr,
    MASK_BOUNDS: tl.constexpr,
    CAUSAL_DIAG: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    OFFS: tl.constexpr,
):
    offs_n0 = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        n_ok = offs_n < N_K
        if MASK_BOUNDS:
            kt = tl.load(k_base + offs_n[None, :].to(OFFS) * stride_kn + offs_d[:, None] * stride_kd,
                         mask=n_ok[None, :] & d_ok[:, None], other=0.0)
            vt = tl.load(v_base + offs_n[None, :].to(OFFS) * stride_vn + offs_d[:, None] * stride_vd,
                         mask=n_ok[None, :] & d_ok[:, None], other=0.0)
        else:
            kt = tl.load(k_base + offs_n[None, :].to(OFFS) * stride_kn + offs_d[:, None] * stride_kd,
                         mask=d_ok[:, None], other=0.0)
            vt = tl.load(v_base + offs_n[None, :].to(OFFS) * stride_vn + offs_d[:, None] * stride_vd,
                         mask=d_ok[:, None], other=0.0)
        s = _dot(q, kt, DOT_PRECISION, UPCAST_DOT) * qk_scale
        p = tl.math.exp2(s - lse2[:, None])
        # Keys past N_K must be masked here (not only zero-loaded): exp2(0 - lse) may overflow to inf.
        if MASK_BOUNDS:
            p = tl.where(n_ok[None, :], p, 0.0)
        if CAUSAL_DIAG:
            p = tl.where(offs_n[None, :] <= offs_m[:, None], p, 0.0)
        if HAS_KPM:
            pad = tl.load(kpm_base + offs_n.to(OFFS) * stride_kpm_n, mask=n_ok, other=1)
            p = tl.where(pad[None, :] == 0, p, 0.0)
        dp = _dot(do, vt, DOT_PRECISION, UPCAST_DOT)
        ds = p * (dp - delta[:, None])
        dq += _dot(ds.to(kt.dtype), tl.trans(kt), DOT_PRECISION, UPCAST_DOT)
    return dq


@triton.jit
def _attn_bwd_dq(
    Q, K, V, KPM, DO, LSE, DELTA, DQ,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    stride_kpm_b, stride_kpm_n,
    H, N_Q, N_K, N_BUCKET, qk_scale, sm_scale,
    HEAD_D: tl.constexpr,
    BLOCK_D: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_KPM: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    OFFS: tl.constexpr,
):
    start_m, bh = _block_and_head(N_Q, BLOCK_M)
    b = bh // H
    h = bh % H
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    kpm_base = KPM + b * stride_kpm_b

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < N_Q
    d_ok = offs_d < HEAD_D
    md_mask = m_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None].to(OFFS) * stride_qm + offs_d[None, :] * stride_qd,
                mask=md_mask, other=0.0)
    do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m[:, None].to(OFFS) * stride_dom + offs_d[None, :] * stride_dod,
                 mask=md_mask, other=0.0)
    lse2 = tl.load(LSE + bh * N_Q + offs_m, mask=m_ok, other=float("inf")) * 1.4426950408889634
    delta = tl.load(DELTA + bh * N_Q + offs_m, mask=m_ok, other=0.0)

    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if CAUSAL:
        hi = tl.minimum(N_K, (start_m + 1) * BLOCK_M)
        full_end = tl.minimum(start_m * BLOCK_M + 1, N_K)
    else:
        hi = N_K
        full_end = N_K
    full_end = (full_end // BLOCK_N) * BLOCK_N
    # Full key blocks below the diagonal: no bound or causal mask (padded keys are still masked).
    dq = _dq_inner(
        dq, q, do, lse2, delta, k_base, v_base, kpm_base,
        stride_kn, stride_kd, stride_vn, stride_vd, stride_kpm_n,
        offs_m, offs_d, d_ok, 0, full_end, N_K, qk_scale,
        BLOCK_N, HAS_KPM, False, False, DOT_PRECISION, UPCAST_DOT, OFFS,
    )
    dq = _dq_inner(
        dq, q, do, lse2, delta, k_base, v_base, kpm_base,
        stride_kn, stride_kd, stride_vn, stride_vd, stride_kpm_n,
        offs_m, offs_d, d_ok, full_end, hi, N_K, qk_scale,
        BLOCK_N, HAS_KPM, True, CAUSAL, DOT_PRECISION, UPCAST_DOT, OFFS,
    )
    dq = dq * sm_scale
    tl.store(DQ + b * stride_dqb + h * stride_dqh + offs_m[:, None].to(OFFS) * stride_dqm + offs_d[None, :] * stride_dqd,
             dq.to(DQ.dtype.element_ty), mask=md_mask)


# --------------------------------------------------------------------------------------------------
# Host functions
# --------------------------------------------------------------------------------------------------


_TUNED = {
    "fwd": triton.autotune(configs=_every_config("fwd"), key=_KEY, prune_configs_by={"early_config_prune": _pruner("fwd")})(_attn_fwd),
    "dkdv": triton.autotune(configs=_every_config("dkdv"), key=_KEY, prune_configs_by={"early_config_prune": _pruner("dkdv")})(_attn_bwd_dkdv),
    "dq": triton.autotune(configs=_every_config("dq"), key=_KEY, prune_configs_by={"early_config_prune": _pruner("dq")})(_attn_bwd_dq),
}
_KERNELS = {"fwd": _attn_fwd, "dkdv": _attn_bwd_dkdv, "dq": _attn_bwd_dq}


def _launch(kernel: str, blocks_of, args: tuple, consts: dict) -> None:
    """Launch ``kernel`` ("fwd", "dkdv", "dq") on a 1-D grid of ``blocks_of(meta)`` programs: the
    interpreter's configuration, the autotuner, or the pinned configuration (module docstring)."""
    if _interpreting():
        cfg = INTERPRET_CONFIGS[kernel]
    elif autotune_enabled():
        _TUNED[kernel][lambda meta: (blocks_of(meta),)](*args, **consts)
        return
    else:
        q = args[0]
        cfg = pinned_config(kernel, q.dtype, consts["DOT_PRECISION"], consts["BLOCK_D"], device_smem_limit(),
                            device_capability())
    meta = dict(cfg.kwargs)
    _KERNELS[kernel][(blocks_of(meta),)](
        *args, **consts, **meta, num_warps=cfg.num_warps, num_stages=cfg.num_stages
    )


def _dot_precision(dtype: torch.dtype) -> str:
    # float32 inputs: tf32 tensor cores where the user allowed tf32 matmuls (torch's default is off);
    # otherwise 3xTF32 ("tf32x3": each operand split in a tf32 high and low part, three dots), which is
    # float32-accurate and far faster to compile and run than FMA ("ieee") dots, kept for the CPU
    # interpreter and ROCm. Half types ignore this.
    if dtype != torch.float32:
        return "tf32"
    if torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    if _interpreting() or torch.version.hip is not None:
        return "ieee"
    return "tf32x3"


def _bucket(n_q: int, n_k: int) -> int:
    """The autotuning key's sequence length: the next power of two >= max(N_q, N_k, 16)."""
    return max(16, triton.next_power_of_2(max(n_q, n_k)))


def _alloc(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Every buffer the host functions hand to a kernel (outputs, lse, delta) comes from here; the tests
    replace it to poison the buffers with NaN and check that the kernels write every element."""
    return torch.empty(shape, dtype=dtype, device=device)


def _upcast_dot(dtype: torch.dtype) -> bool:
    return dtype == torch.bfloat16 and _interpreting()


_MAX_BLOCK = 256  # no tile has more rows: masked rows past the end still compute an address


def offsets_dtype(*tensors: torch.Tensor) -> tl.dtype:
    """The integer type of the kernels' offsets inside one (batch, head) slice (constexpr ``OFFS``).

    Offsets up to a slice (``b * stride_b + h * stride_h``, ``bh * N``) are always 64-bit. Inside it,
    ``row * stride_row`` is 32-bit when every tensor's slice spans less than 2**31 elements (rows padded
    to a whole tile), which keeps the kernels' registers as they are; int64 beyond (huge sequences, or
    views with large row strides), where 32-bit products would wrap and address the wrong memory.
    ``tensors``: the (B, H, N, d) operands and outputs and the (B, N) key padding mask."""
    for t in tensors:
        span = 0
        for dim in range(1 if t.dim() == 2 else 2, t.dim()):
            rows = t.shape[dim] + (_MAX_BLOCK if dim == t.dim() - 2 or t.dim() == 2 else 0)
            span += max(rows - 1, 0) * abs(t.stride(dim))
        if span >= 2**31:
            return tl.int64
    return tl.int32


def _kpm_args(key_padding_mask: torch.Tensor | None, like: torch.Tensor):
    if key_padding_mask is None:
        return like, 0, 0, False  # never read (HAS_KPM=False)
    kpm = key_padding_mask.view(torch.uint8) if key_padding_mask.dtype == torch.bool else key_padding_mask
    return kpm, kpm.stride(0), kpm.stride(1), True


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"attention (triton): q has dtype {q.dtype}; expected float32, float16 or bfloat16")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"attention (triton): q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype})")
    d = q.shape[-1]
    if k.shape[-1] != d or v.shape[-1] != d or not 0 < d <= MAX_HEAD_DIM:
        raise ValueError(
            f"attention (triton): head sizes q={d}, k={k.shape[-1]}, v={v.shape[-1]}; expected equal and in 1..{MAX_HEAD_DIM}"
        )


def attention_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flash-attention forward (launched on the current device: the caller makes it the tensors').
    Returns ``(out, lse)``: ``out`` (B, H, N_q, d) in q's dtype, ``lse`` (B, H, N_q)
    float32 natural-log log-sum-exp of each row's scaled scores (``+inf`` where every key is masked).

    q (B, H, N_q, d), k and v (B, H, N_k, d), any strides; ``key_padding_mask`` (B, N_k) bool, True = ignore.
    """
    _check(q, k, v)
    B, H, n_q, d = q.shape
    n_k = k.shape[2]
    out = _alloc((B, H, n_q, d), q.dtype, q.device)
    lse = _alloc((B, H, n_q), torch.float32, q.device)
    if out.numel() == 0:  # no query row (d >= 1 is checked above)
        return out, lse
    kpm, s_kb, s_kn, has_kpm = _kpm_args(key_padding_mask, q)
    _launch(
        "fwd", lambda meta: triton.cdiv(n_q, meta["BLOCK_M"]) * B * H,
        (q, k, v, kpm, out, lse,
         *q.stride(), *k.stride(), *v.stride(), *out.stride(),
         s_kb, s_kn,
         H, n_q, n_k, _bucket(n_q, n_k), float(scale) * _LOG2E),
        dict(HEAD_D=d, BLOCK_D=padded_head_dim(d), CAUSAL=bool(causal), HAS_KPM=has_kpm,
             DOT_PRECISION=_dot_precision(q.dtype), UPCAST_DOT=_upcast_dot(q.dtype),
             OFFS=offsets_dtype(q, k, v, out, *([kpm] if has_kpm else []))),
    )
    return out, lse


def attention_backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flash-attention backward: ``(dq, dk, dv)`` from the upstream gradient and the forward's ``out``/``lse``."""
    _check(q, k, v)
    B, H, n_q, d = q.shape
    n_k = k.shape[2]
    if grad_out.dtype != q.dtype:
        grad_out = grad_out.to(q.dtype)
    dq = _alloc((B, H, n_q, d), q.dtype, q.device)
    dk = _alloc((B, H, n_k, d), k.dtype, k.device)
    dv = _alloc((B, H, n_k, d), v.dtype, v.device)
    if B * H == 0:
        return dq, dk, dv
    if n_q == 0 or n_k == 0:
        # No query sees any key: every gradient is zero.
        return dq.zero_(), dk.zero_(), dv.zero_()
    lse = lse.contiguous()
    block_d = padded_head_dim(d)
    kpm, s_kb, s_kn, has_kpm = _kpm_args(key_padding_mask, q)
    precision = _dot_precision(q.dtype)
    qk_scale = float(scale) * _LOG2E
    offs = offsets_dtype(q, k, v, out, grad_out, dq, dk, dv, *([kpm] if has_kpm else []))

    delta = _alloc((B, H, n_q), torch.float32, q.device)
    block_delta = 16 if _interpreting() else 64
    _attn_bwd_delta[(triton.cdiv(n_q, block_delta) * B * H,)](
        out, grad_out, delta, *out.stride(), *grad_out.stride(), H, n_q,
        HEAD_D=d,
        BLOCK_M=block_delta, BLOCK_D=block_d, OFFS=offs,
    )
    consts = dict(HEAD_D=d, BLOCK_D=block_d, CAUSAL=bool(causal), HAS_KPM=has_kpm, DOT_PRECISION=precision,
                  UPCAST_DOT=_upcast_dot(q.dtype), OFFS=offs)
    _launch(
        "dkdv", lambda meta: triton.cdiv(n_k, meta["BLOCK_N"]) * B * H,
        (q, k, v, kpm, grad_out, lse, delta, dk, dv,
         *q.stride(), *k.stride(), *v.stride(), *grad_out.stride(), *dk.stride(), *dv.stride(),
         s_kb, s_kn,
         H, n_q, n_k, _bucket(n_q, n_k), qk_scale, float(scale)),
        consts,
    )
    _launch(
        "dq", lambda meta: triton.cdiv(n_q, meta["BLOCK_M"]) * B * H,
        (q, k, v, kpm, grad_out, lse, delta, dq,
         *q.stride(), *k.stride(), *v.stride(), *grad_out.stride(), *dq.stride(),
         s_kb, s_kn,
         H, n_q, n_k, _bucket(n_q, n_k), qk_scale, float(scale)),
        consts,
    )
    return dq, dk, dv

