"""Scaled dot-product attention used by the predictor and the transformer encoder.

Backends (chosen by :func:`jepa.ops._backend.choose`):

- ``torch``: :func:`attention_reference`, ``F.scaled_dot_product_attention`` (any device and dtype).
- ``triton``: the flash-attention kernels of ``jepa.kernels.triton.attention`` (forward and backward;
  float32 / float16 / bfloat16, head size up to 128, any sequence length). They run on CUDA tensors,
  and on CPU tensors under ``TRITON_INTERPRET=1`` (how the tests run them).
- ``cuda`` / ``cpp``: no attention implementation: a global ``JEPA_BACKEND=cpp`` leaves attention on
  ``auto``; a per-op ``attention=cpp`` raises :class:`BackendUnavailableError`.

``auto`` on CUDA tensors: calls with a ``key_padding_mask`` (the padded / variable-length I-JEPA
batches) run the Triton kernel when it supports the inputs (dtype, head size <= 128); unmasked calls run
SDPA (flash / cuDNN), unless Triton was measured faster for that shape bucket on that GPU
(:mod:`jepa.ops.attention_routes`, a table filled by ``benchmarks/gpu_suite.sh``). CPU tensors always
take the reference. A forced ``triton`` that cannot run raises :class:`BackendUnavailableError`; it never
falls back.

Head sizes that are not a power of two (I-JEPA's d=24) are padded to the next power of two >= 16
*inside* the kernel (masked loads read zeros), so no padded copy of q, k, v is made.

Rows whose keys are all masked (every key padded, or, with ``causal``, every key up to the row padded)
give an output of zeros and zero gradients on every backend. (``scaled_dot_product_attention`` alone may
give NaN there, depending on its backend; :func:`attention_reference` unmasks those rows for the softmax
and zeroes their output, so it never produces NaN.)

``torch.compile``: the Triton path is the custom op ``jepa::attention_fwd`` (with autograd through
``jepa::attention_bwd``), both with fake implementations, and the torch path is plain torch ops, so a
model calling :func:`attention` compiles with ``fullgraph=True``. The backend is chosen when the model is
traced (dynamo guards on it: forcing another backend later re-traces). The Triton path supports first
derivatives only (no double backward).
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

import torch
import torch.nn.functional as F

from jepa.ops import _backend, attention_routes

__all__ = ["attention", "attention_reference"]

_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_TRITON_MAX_HEAD_DIM = 128

ATTENTION = _backend.register_op(
    "attention", backends=("torch", "triton"), dtypes={"triton": _TRITON_DTYPES}, auto={"cuda": ("triton", "torch")}
)


def _empty_causal_rows(key_padding_mask: torch.Tensor, n_q: int) -> torch.Tensor:
    """(B, N_q) bool: True where a query row has no key to attend to under the causal mask.

    Row i sees keys 0..i (top-left aligned), so it is empty iff i comes before the first attended key
    (or no key of the batch is attended at all).
    """
    attend = ~key_padding_mask
    n_k = key_padding_mask.shape[1]
    first = attend.to(torch.int32).argmax(dim=1)  # first True (0 when there is none, fixed below)
    first = torch.where(attend.any(dim=1), first, torch.full_like(first, max(n_q, n_k)))
    rows = torch.arange(n_q, device=key_padding_mask.device)
    return rows[None, :] < first[:, None]


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Torch reference: ``F.scaled_dot_product_attention`` with a boolean key padding mask (True = ignore).

    Rows with no key to attend to give zeros (and zero gradients) instead of SDPA's NaN. No input checks:
    call :func:`attention` for those.
    """
    n_q, n_k = q.shape[-2], k.shape[-2]
    if n_k == 0:
        return q.new_zeros(q.shape[:-1] + v.shape[-1:])
    if key_padding_mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    allowed = (~key_padding_mask)[:, None, None, :]  # (B, 1, 1, N_k); SDPA wants True = attend
    if causal:
        tri = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril()
        allowed = allowed & tri
        empty = _empty_causal_rows(key_padding_mask, n_q)[:, None, :, None]  # (B, 1, N_q, 1)
    else:
        empty = key_padding_mask.all(dim=1)[:, None, None, None]  # (B, 1, 1, 1): whole batches are empty
    # Let empty rows attend to every key so that their softmax is finite (no NaN in the forward or
    # the backward), then zero them: masked_fill passes them no gradient.
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed | empty, scale=scale)
    return out.masked_fill(empty, 0.0)


# --------------------------------------------------------------------------------------------------
# Triton path as custom ops (opaque to torch.compile, with fake shapes and autograd)
# --------------------------------------------------------------------------------------------------


@torch.library.custom_op("jepa::attention_fwd", mutates_args=())
def _attention_fwd_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: Optional[torch.Tensor],
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    from jepa.kernels.triton import attention as kern  # noqa: PLC0415  (imports triton)

    with _backend.device_guard(q.device):
        return kern.attention_forward(q, k, v, key_padding_mask, causal, scale)


@_attention_fwd_op.register_fake
def _attention_fwd_fake(q, k, v, key_padding_mask, causal, scale):
    b, h, n_q, _ = q.shape
    out = q.new_empty((b, h, n_q, v.shape[-1]))
    lse = q.new_empty((b, h, n_q), dtype=torch.float32)
    return out, lse


@torch.library.custom_op("jepa::attention_bwd", mutates_args=())
def _attention_bwd_op(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    key_padding_mask: Optional[torch.Tensor],
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from jepa.kernels.triton import attention as kern  # noqa: PLC0415  (imports triton)

    with _backend.device_guard(q.device):
        return kern.attention_backward(grad_out, q, k, v, out, lse, key_padding_mask, causal, scale)


@_attention_bwd_op.register_fake
def _attention_bwd_fake(grad_out, q, k, v, out, lse, key_padding_mask, causal, scale):
    # The kernels return contiguous gradients whatever the strides of q, k, v.
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _attention_setup_context(ctx, inputs, output):
    q, k, v, key_padding_mask, causal, scale = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, k, v, out, lse, key_padding_mask)
    ctx.causal = causal
    ctx.scale = scale


def _attention_backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, key_padding_mask = ctx.saved_tensors
    dq, dk, dv = _attention_bwd_op(grad_out, q, k, v, out, lse, key_padding_mask, ctx.causal, ctx.scale)
    return dq, dk, dv, None, None, None


_attention_fwd_op.register_autograd(_attention_backward, setup_context=_attention_setup_context)


# --------------------------------------------------------------------------------------------------
# Public op
# --------------------------------------------------------------------------------------------------


def _validate(q, k, v, causal, key_padding_mask, scale) -> float:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"attention: {name} must be a torch.Tensor, got {type(t).__name__}")
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            f"attention: q, k, v must be (B, H, N, d); got shapes {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if not q.is_floating_point():
        raise TypeError(f"attention: q has dtype {q.dtype}; expected a floating-point dtype")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"attention: q, k, v have dtypes {q.dtype}, {k.dtype}, {v.dtype}; expected one dtype")
    if not (q.device == k.device == v.device):
        raise ValueError(f"attention: q, k, v are on {q.device}, {k.device}, {v.device}; expected one device")
    if not (q.shape[0] == k.shape[0] == v.shape[0] and q.shape[1] == k.shape[1] == v.shape[1]):
        raise ValueError(
            f"attention: q, k, v must share B and H; got shapes {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.shape[2] != v.shape[2]:
        raise ValueError(f"attention: k has N_k={k.shape[2]} keys but v has {v.shape[2]}; expected equal")
    if q.shape[3] != k.shape[3]:
        raise ValueError(f"attention: q has head size {q.shape[3]} but k has {k.shape[3]}; expected equal")
    if not isinstance(causal, bool):
        raise TypeError(f"attention: causal must be a bool, got {type(causal).__name__} {causal!r}")
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, torch.Tensor):
            raise TypeError(
                f"attention: key_padding_mask must be a bool tensor or None, got {type(key_padding_mask).__name__}"
            )
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(f"attention: key_padding_mask must be bool, got {key_padding_mask.dtype}")
        if tuple(key_padding_mask.shape) != (k.shape[0], k.shape[2]):
            raise ValueError(
                f"attention: key_padding_mask must be (B, N_k)={(k.shape[0], k.shape[2])}, "
                f"got {tuple(key_padding_mask.shape)}"
            )
        if key_padding_mask.device != k.device:
            raise ValueError(f"attention: key_padding_mask is on {key_padding_mask.device} but k is on {k.device}")
    if scale is None:
        return 1.0 / math.sqrt(q.shape[-1]) if q.shape[-1] > 0 else 1.0
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"attention: scale must be a real number or None, got {type(scale).__name__} {scale!r}")
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"attention: scale must be finite, got {scale!r}")
    return scale


def _kernel_reason(q, v) -> str:
    """Why the Triton kernel cannot take these shapes ("" when it can); availability, device and dtype
    are checked by the chooser."""
    if v.shape[-1] != q.shape[-1]:
        return f"v's head size {v.shape[-1]} differs from q's {q.shape[-1]}; the kernel needs equal head sizes"
    if q.shape[-1] > _TRITON_MAX_HEAD_DIM:
        return f"head size {q.shape[-1]} is larger than the kernel's maximum {_TRITON_MAX_HEAD_DIM}"
    if q.shape[-1] == 0:
        return "head size 0 (the kernel needs d >= 1)"
    return ""


def _auto_order(q, k, causal, key_padding_mask) -> tuple[str, ...]:
    """auto on CUDA: Triton for masked calls (SDPA has no fast masked path); SDPA for unmasked ones
    unless the route table says Triton was measured faster for this bucket."""
    if q.device.type != "cuda":
        return ("torch",)
    if key_padding_mask is not None:
        return ("triton", "torch")
    return ("triton", "torch") if attention_routes.route(q, k, causal) == "triton" else ("torch",)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Multi-head scaled dot-product attention ``softmax(q k^T * scale) v`` over ``(B, H, N, d)`` tensors.

    Args:
        q: queries ``(B, H, N_q, d)``.
        k: keys ``(B, H, N_k, d)``.
        v: values ``(B, H, N_k, d_v)``.
        causal: query i attends only to keys j <= i (top-left aligned, as SDPA's ``is_causal``).
        key_padding_mask: ``(B, N_k)`` bool, True marks keys to ignore.
        scale: softmax scale; ``None`` means ``1 / sqrt(d)``.

    Returns:
        ``(B, H, N_q, d_v)`` in q's dtype. Rows with no key to attend to are zeros (zero gradients).

    Raises:
        TypeError: mismatched shapes, dtypes or devices, a non-bool or misshaped mask, a bad scale.
        ValueError: the same checks, for a bad value rather than a bad type.
        BackendUnavailableError: the backend forced for attention cannot run on these tensors
            (``triton`` needs triton, CUDA tensors or ``TRITON_INTERPRET=1``, float32/float16/bfloat16
            and head size <= 128), or a per-op setting names ``cuda``/``cpp`` (no attention there).
    """
    scale = _validate(q, k, v, causal, key_padding_mask, scale)
    backend = _backend.choose(
        ATTENTION, device=q.device, dtypes=(q.dtype,), check=lambda _b: _kernel_reason(q, v),
        auto=_auto_order(q, k, causal, key_padding_mask),
    )
    use_triton = backend == "triton"
    if not use_triton:
        return attention_reference(q, k, v, causal=causal, key_padding_mask=key_padding_mask, scale=scale)
    out, _ = _attention_fwd_op(q, k, v, key_padding_mask, causal, scale)
    return out
