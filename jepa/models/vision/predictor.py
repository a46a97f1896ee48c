"""MaskedPredictor: I-JEPA's narrow ViT that predicts target-patch embeddings from context tokens."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from jepa.models.base import BaseModel
from jepa.models.layers import TransformerBlock, init_weights
from jepa.models.vision.pos_embed import sincos_2d
from jepa.models.vision.vit import _check_bool, check_indices, rescale_residual_init, to_pair

__all__ = ["MaskedPredictor"]


class MaskedPredictor(BaseModel):
    """Predict the encoder embeddings of target patches from the context tokens and the targets' positions.

    The context tokens ``(B, Lc, embed_dim)`` are projected to ``predictor_embed_dim`` and given the
    position embeddings of their patches; each target block contributes one learned mask token per
    target patch plus that patch's position embedding. Each of the K target blocks is predicted in
    its own sequence (context + that block's mask tokens, as in I-JEPA), so blocks do not see each
    other. Padded context or target rows (``*_valid`` False) are ignored as attention keys, and
    padded target rows of the output are zero.

    Args:
        grid_size: patch grid ``(gh, gw)`` (or an int for a square grid) of the encoder.
        embed_dim: width of the encoder's tokens (input and output of the predictor).
        predictor_embed_dim: width inside the predictor (I-JEPA: 384).
        depth: transformer blocks.
        num_heads: attention heads (I-JEPA: the encoder's).
        mlp_ratio: MLP width as a multiple of ``predictor_embed_dim``.
        dropout: dropout inside the blocks.
        norm_eps: epsilon of the layer norms.
        init_std: std of the truncated-normal weight init.
        qkv_bias: whether the query/key/value projections have a bias (I-JEPA: True).
        learned_pos_embed: False (default, I-JEPA): fixed 2-D sin-cos position embeddings (a buffer,
            not saved); True: a trained, saved parameter ``pos_embed`` ``(N, predictor_embed_dim)``
            initialised with that table.
    """

    def __init__(
        self,
        grid_size: int | Sequence[int],
        embed_dim: int,
        predictor_embed_dim: int = 384,
        depth: int = 6,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        norm_eps: float = 1e-6,
        init_std: float = 0.02,
        qkv_bias: bool = True,
        learned_pos_embed: bool = False,
    ) -> None:
        super().__init__()
        grid = to_pair(grid_size, "MaskedPredictor: grid_size")
        _check_bool(qkv_bias, "MaskedPredictor: qkv_bias")
        _check_bool(learned_pos_embed, "MaskedPredictor: learned_pos_embed")
        for name, value in (("embed_dim", embed_dim), ("predictor_embed_dim", predictor_embed_dim), ("depth", depth), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MaskedPredictor: {name} must be an int >= 1, got {value!r}")
        if predictor_embed_dim % 4 or predictor_embed_dim % num_heads:
            raise ValueError(
                f"MaskedPredictor: predictor_embed_dim={predictor_embed_dim} must be divisible by 4 and by num_heads={num_heads}"
            )
        self.grid_size = grid
        self.embed_dim = embed_dim
        self.predictor_embed_dim = predictor_embed_dim
        self.input_proj = nn.Linear(embed_dim, predictor_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_embed_dim))
        table = sincos_2d(predictor_embed_dim, grid)
        if learned_pos_embed:
            self.pos_embed = nn.Parameter(table)
        else:
            self.register_buffer("pos_embed", table, persistent=False)
        self.blocks = nn.ModuleList(
            TransformerBlock(predictor_embed_dim, num_heads, mlp_ratio, dropout, norm_eps=norm_eps, qkv_bias=qkv_bias)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(predictor_embed_dim, eps=norm_eps)
        self.proj = nn.Linear(predictor_embed_dim, embed_dim)
        init_weights(self, std=init_std)
        nn.init.trunc_normal_(self.mask_token, std=init_std)
        rescale_residual_init(self.blocks)

    @property
    def num_patches(self) -> int:
        """Patches of the grid (``gh * gw``)."""
        return self.grid_size[0] * self.grid_size[1]

    def forward(
        self,
        context: torch.Tensor,
        context_idx: torch.Tensor,
        target_idx: torch.Tensor,
        context_valid: torch.Tensor | None = None,
        target_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predicted embeddings of the target patches.

        Args:
            context: ``(B, Lc, embed_dim)`` context-encoder tokens.
            context_idx: ``(B, Lc)`` long, the patch index of each context token.
            target_idx: ``(B, K, Lt)`` long patch indices of K target blocks (or ``(B, Lt)``: one block).
            context_valid: ``(B, Lc)`` bool, False for padded context rows.
            target_valid: bool, the shape of ``target_idx``, False for padded target rows.

        Returns:
            ``(B, K, Lt, embed_dim)`` (``(B, Lt, embed_dim)`` for a 2-D ``target_idx``).
        """
        if not isinstance(context, torch.Tensor) or context.dim() != 3 or context.shape[-1] != self.embed_dim:
            got = tuple(context.shape) if isinstance(context, torch.Tensor) else type(context).__name__
            raise ValueError(f"MaskedPredictor: context must be (B, Lc, {self.embed_dim}), got {got}")
        b, lc, _ = context.shape
        check_indices(context_idx, context_valid, self.num_patches, "MaskedPredictor: context_idx", 2)
        if tuple(context_idx.shape) != (b, lc):
            raise ValueError(f"MaskedPredictor: context_idx must be {(b, lc)} like the context, got {tuple(context_idx.shape)}")
        one_block = isinstance(target_idx, torch.Tensor) and target_idx.dim() == 2
        if one_block:
            target_idx = target_idx[:, None]
            target_valid = None if target_valid is None else target_valid[:, None]
        check_indices(target_idx, target_valid, self.num_patches, "MaskedPredictor: target_idx", 3)
        if target_idx.shape[0] != b:
            raise ValueError(f"MaskedPredictor: target_idx has {target_idx.shape[0]} rows but the context has {b}")
        k, lt = target_idx.shape[1], target_idx.shape[2]
        d = self.predictor_embed_dim
        x = self.input_proj(context) + self.pos_embed[context_idx]
        x = x[:, None].expand(b, k, lc, d).reshape(b * k, lc, d)
        queries = (self.mask_token + self.pos_embed[target_idx]).to(x.dtype).reshape(b * k, lt, d)
        h = torch.cat([x, queries], dim=1)
        padding = None
        if context_valid is not None or target_valid is not None:
            cv = context_valid if context_valid is not None else torch.ones(b, lc, dtype=torch.bool, device=context.device)
            tv = target_valid if target_valid is not None else torch.ones(b, k, lt, dtype=torch.bool, device=context.device)
            valid = torch.cat([cv[:, None].expand(b, k, lc), tv], dim=2).reshape(b * k, lc + lt)
            padding = ~valid
        for block in self.blocks:
            h = block(h, padding)
        out = self.proj(self.norm(h[:, lc:])).view(b, k, lt, self.embed_dim)
        if target_valid is not None:
            out = out.masked_fill(~target_valid[..., None], 0.0)
        return out[:, 0] if one_block else out
