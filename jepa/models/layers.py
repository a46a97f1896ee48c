"""Transformer building blocks shared by the encoder and the transformer predictor."""

from __future__ import annotations

import torch
from torch import nn

from jepa import ops


class MultiHeadAttention(nn.Module):
    """Self-attention whose core runs through :func:`jepa.ops.attention` (fused kernels on GPU).

    ``qkv_bias=False`` drops the bias of the fused query/key/value projection (the output
    projection always has one).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = ops.attention(qkv[0], qkv[1], qkv[2], key_padding_mask=key_padding_mask)
        return self.dropout(self.proj(out.transpose(1, 2).reshape(b, n, d)))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)); x + mlp(norm(x))."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0, norm_eps: float = 1e-5, qkv_bias: bool = True
    ) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MultiHeadAttention(dim, num_heads, dropout, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_padding_mask)
        return x + self.mlp(self.norm2(x))


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Truncated-normal init of linear layers, as in ViT / I-JEPA."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def as_sequence(x: torch.Tensor, name: str, dim: int) -> tuple[torch.Tensor, bool]:
    """Accept ``(B, D)`` or ``(B, T, D)``; return ``(B, T, D)`` and whether a time axis was added."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() == 2:
        x, squeezed = x.unsqueeze(1), True
    elif x.dim() == 3:
        squeezed = False
    else:
        raise ValueError(f"{name} must have shape (B, D) or (B, T, D), got {tuple(x.shape)}")
    if x.shape[-1] != dim:
        raise ValueError(f"{name} has feature size {x.shape[-1]} but the module expects {dim}")
    return x, squeezed
