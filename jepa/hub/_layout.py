"""Helpers shared by the converters: is a position table the sin-cos one, and which MLP ratio gives a width."""

from __future__ import annotations

import math

import torch

from jepa.models.vision.pos_embed import sincos_2d

__all__ = ["SINCOS_ATOL", "is_sincos_table", "mlp_ratio_for"]

#: Tolerance under which a position table counts as the fixed 2-D sin-cos table.
SINCOS_ATOL = 1e-6


def is_sincos_table(table: torch.Tensor, grid: tuple[int, int]) -> bool:
    """Whether ``table`` (``(N, D)`` or ``(1, N, D)``) is the fixed 2-D sin-cos table of ``grid`` (within
    :data:`SINCOS_ATOL`): the table of every released I-JEPA checkpoint."""
    dim = table.shape[-1]
    if dim % 4 or table.shape[-2] != grid[0] * grid[1]:
        return False
    reference = sincos_2d(dim, grid).to(device=table.device)
    return bool(torch.allclose(table.detach().reshape(reference.shape).float(), reference, atol=SINCOS_ATOL, rtol=0.0))


def mlp_ratio_for(dim: int, hidden: int) -> float:
    """A float ``r`` with ``int(dim * r) == hidden`` (how :class:`~jepa.models.layers.TransformerBlock`
    sizes its MLP), robust to the rounding of ``hidden / dim``."""
    ratio = hidden / dim
    while int(dim * ratio) < hidden:
        ratio = math.nextafter(ratio, math.inf)
    return ratio
