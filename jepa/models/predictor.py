"""Predictors: map context embeddings to predicted target embeddings."""

from __future__ import annotations

import torch
from torch import nn

from jepa.models.base import BaseModel
from jepa.models.layers import TransformerBlock, as_sequence, init_weights


class Predictor(BaseModel):
    """MLP predictor applied to every token: ``(B, [T,] hidden_dim) -> (B, [T,] output_dim)``.

    Args:
        hidden_dim: embedding width of the input.
        mlp_dim: width of the hidden layers (default ``2 * hidden_dim``).
        num_layers: linear layers (>= 1); GELU + LayerNorm between them.
        output_dim: width of the prediction (default ``hidden_dim``).
    """

    def __init__(self, hidden_dim: int, mlp_dim: int | None = None, num_layers: int = 2, output_dim: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(hidden_dim, int) or hidden_dim <= 0:
            raise ValueError(f"Predictor: hidden_dim must be a positive int, got {hidden_dim!r}")
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"Predictor: num_layers must be an int >= 1, got {num_layers!r}")
        self.hidden_dim = hidden_dim
        mlp_dim = mlp_dim or 2 * hidden_dim
        output_dim = output_dim or hidden_dim
        layers: list[nn.Module] = []
        width = hidden_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(width, mlp_dim), nn.LayerNorm(mlp_dim), nn.GELU(), nn.Dropout(dropout)]
            width = mlp_dim
        layers.append(nn.Linear(width, output_dim))
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.hidden_dim:
            raise ValueError(f"Predictor: input feature size {x.shape[-1]} != hidden_dim={self.hidden_dim}")
        return self.net(x)


class TransformerPredictor(BaseModel):
    """I-JEPA style narrow transformer predictor over token embeddings.

    Maps ``(B, T, hidden_dim)`` to ``(B, T, hidden_dim)``: project to ``predictor_dim``, add
    positional embeddings, run ``depth`` blocks (attention through :func:`jepa.ops.attention`),
    project back. ``mask`` (``(B, T)`` bool, True = token to predict) replaces those positions by
    a learned mask token, so the predictor fills in what the context did not see.
    """

    def __init__(self, hidden_dim: int, predictor_dim: int | None = None, depth: int = 2, num_heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0, max_seq_len: int = 1024) -> None:
        super().__init__()
        predictor_dim = predictor_dim or hidden_dim
        if predictor_dim % num_heads != 0:
            raise ValueError(f"TransformerPredictor: predictor_dim={predictor_dim} must be divisible by num_heads={num_heads}")
        self.hidden_dim = hidden_dim
        self.embed = nn.Linear(hidden_dim, predictor_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, max_seq_len, predictor_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_dim))
        self.blocks = nn.ModuleList(TransformerBlock(predictor_dim, num_heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(predictor_dim)
        self.out = nn.Linear(predictor_dim, hidden_dim)
        init_weights(self)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x, squeezed = as_sequence(x, "TransformerPredictor input", self.hidden_dim)
        t = x.shape[1]
        h = self.embed(x)
        if mask is not None:
            h = torch.where(mask.unsqueeze(-1), self.mask_token.to(h.dtype), h)
        h = h + self.pos_embed[:, :t]
        for block in self.blocks:
            h = block(h)
        out = self.out(self.norm(h))
        return out.squeeze(1) if squeezed else out


class Projector(BaseModel):
    """VICReg-style expander for the anti-collapse regularizer: ``(B, in_dim) -> (B, out_dim)``.

    Linear -> BatchNorm -> ReLU -> Linear. The regularizer acts on its output, so the encoder's
    own embedding is free of the variance/covariance constraint's scale (a LayerNorm-ed, pooled
    embedding cannot reach unit per-dimension std without distorting itself).
    """

    def __init__(self, in_dim: int, hidden_dim: int = 256, out_dim: int = 256) -> None:
        super().__init__()
        for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Projector: {name} must be a positive int, got {value!r}")
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
