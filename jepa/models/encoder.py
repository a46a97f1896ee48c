"""Encoder: a transformer over token sequences ``(B, T, D)``."""

from __future__ import annotations

import torch
from torch import nn

from jepa.models.base import BaseModel
from jepa.models.layers import TransformerBlock, as_sequence, init_weights


class Encoder(BaseModel):
    """Transformer encoder mapping ``(B, T, input_dim)`` to ``(B, T, hidden_dim)``.

    Args:
        hidden_dim: width of the embeddings (and of the input when ``input_dim`` is None).
        input_dim: feature size of the input tokens; a linear patch embedding maps it to
            ``hidden_dim``. Defaults to ``hidden_dim``.
        num_layers: transformer blocks.
        num_heads: attention heads (must divide ``hidden_dim``).
        mlp_ratio: MLP width as a multiple of ``hidden_dim``.
        dropout: dropout inside the blocks.
        max_seq_len: longest sequence the learned positional embedding covers.

    A ``(B, input_dim)`` input is treated as one token and returns ``(B, hidden_dim)``.
    ``mask`` (``(B, T)`` bool, True = hidden) replaces those input tokens by a learned mask token,
    which is how context blocks are hidden for I-JEPA-style masking.
    """

    def __init__(
        self,
        hidden_dim: int,
        input_dim: int | None = None,
        num_layers: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        max_seq_len: int = 1024,
    ) -> None:
        super().__init__()
        for name, value in (("hidden_dim", hidden_dim), ("num_layers", num_layers), ("num_heads", num_heads), ("max_seq_len", max_seq_len)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Encoder: {name} must be a positive int, got {value!r}")
        if input_dim is not None and (not isinstance(input_dim, int) or input_dim <= 0):
            raise ValueError(f"Encoder: input_dim must be a positive int or None, got {input_dim!r}")
        if hidden_dim % num_heads != 0:
            raise ValueError(f"Encoder: hidden_dim={hidden_dim} must be divisible by num_heads={num_heads}")
        self.hidden_dim = hidden_dim
        self.input_dim = input_dim or hidden_dim
        self.embed = nn.Linear(self.input_dim, hidden_dim) if self.input_dim != hidden_dim else nn.Identity()
        self.pos_embed = nn.Parameter(torch.zeros(1, max_seq_len, hidden_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        self.blocks = nn.ModuleList(TransformerBlock(hidden_dim, num_heads, mlp_ratio, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(hidden_dim)
        init_weights(self)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    @property
    def embedding_dim(self) -> int:
        return self.hidden_dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x, squeezed = as_sequence(x, "Encoder input", self.input_dim)
        t = x.shape[1]
        if t > self.pos_embed.shape[1]:
            raise ValueError(f"Encoder: sequence length {t} exceeds max_seq_len={self.pos_embed.shape[1]}")
        h = self.embed(x)
        if mask is not None:
            if mask.shape != h.shape[:2] or mask.dtype != torch.bool:
                raise ValueError(f"Encoder: mask must be bool of shape {tuple(h.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}")
            h = torch.where(mask.unsqueeze(-1), self.mask_token.to(h.dtype), h)
        h = h + self.pos_embed[:, :t]
        for block in self.blocks:
            h = block(h)
        h = self.norm(h)
        return h.squeeze(1) if squeezed else h
