"""Fixed 2-D sine-cosine position embeddings (as in MAE / I-JEPA)."""

from __future__ import annotations

import torch

__all__ = ["sincos_2d"]


def _sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """``(M, dim)``: ``[sin(p * w_i), cos(p * w_i)]`` with ``w_i = 10000 ** (-i / (dim / 2))``."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(embed_dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """``(gh * gw, embed_dim)`` float32 embeddings of the patches of a ``grid=(gh, gw)`` in raster order.

    The first half of each row encodes the patch's column, the second half its row (each as
    ``[sin, cos]`` over ``embed_dim / 4`` frequencies), the layout of I-JEPA's
    ``get_2d_sincos_pos_embed`` so that its trained weights see the embeddings they were trained with.
    """
    if embed_dim % 4 != 0:
        raise ValueError(f"sincos_2d: embed_dim must be divisible by 4, got {embed_dim}")
    gh, gw = grid
    rows = torch.arange(gh).repeat_interleave(gw)
    cols = torch.arange(gw).repeat(gh)
    return torch.cat([_sincos_1d(embed_dim // 2, cols), _sincos_1d(embed_dim // 2, rows)], dim=1).float()
