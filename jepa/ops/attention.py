"""Scaled dot-product attention used by the predictor and the transformer encoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jepa.ops._backend import BackendUnavailableError, requested_backend


def attention_reference(q, k, v, *, causal=False, key_padding_mask=None, scale=None):
    """Torch reference: ``F.scaled_dot_product_attention`` with a boolean key padding mask."""
    attn_mask = None
    if key_padding_mask is not None:
        # True = ignore that key -> SDPA wants True = attend.
        attn_mask = (~key_padding_mask)[:, None, None, :]
        if causal:
            n_q, n_k = q.shape[-2], k.shape[-2]
            tri = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril()
            attn_mask = attn_mask & tri
            causal = False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal, scale=scale)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Multi-head attention over ``(B, H, N, d)`` tensors.

    ``key_padding_mask`` is ``(B, N)`` bool with True marking keys to ignore.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            f"attention: q, k, v must be (B, H, N, d); got shapes {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(f"attention: key_padding_mask must be bool, got {key_padding_mask.dtype}")
        if tuple(key_padding_mask.shape) != (k.shape[0], k.shape[2]):
            raise ValueError(
                f"attention: key_padding_mask must be (B, N_k)={(k.shape[0], k.shape[2])}, "
                f"got {tuple(key_padding_mask.shape)}"
            )
    backend = requested_backend()
    if backend not in ("auto", "torch"):
        raise BackendUnavailableError(
            f"attention: backend {backend!r} is not implemented yet for attention (available: torch)"
        )
    return attention_reference(q, k, v, causal=causal, key_padding_mask=key_padding_mask, scale=scale)
