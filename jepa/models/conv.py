"""ConvEncoder: a small convolutional state encoder for image observations (world models)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from jepa.models.base import BaseModel


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"ConvEncoder: {name} must be a positive int, got {value!r}")
    return value


class ConvEncoder(BaseModel):
    """Images ``(B, C, H, W)`` -> latents ``(B, latent_dim)``.

    ``len(channels)`` blocks of a 3x3 convolution with stride 2 (each halves the side, rounding up)
    and GELU, then the flattened feature map through ``Linear -> LayerNorm -> GELU -> Linear``.
    Small on purpose: a state encoder for the low-resolution renders of an embedded environment
    (e.g. :class:`jepa.envs.TwoRooms` with ``observation="image"``), cheap enough to train on a CPU.

    Args:
        in_chans: image channels ``C``.
        image_size: side ``H = W`` in pixels (int) or ``(H, W)``.
        latent_dim: width of the latent.
        channels: output channels of each convolution block.
        hidden_dim: width of the hidden linear layer.
    """

    def __init__(
        self,
        in_chans: int = 1,
        image_size: int | Sequence[int] = 32,
        latent_dim: int = 32,
        channels: Sequence[int] = (16, 32),
        hidden_dim: int = 128,
    ) -> None:
        super().__init__()
        _positive("in_chans", in_chans)
        _positive("latent_dim", latent_dim)
        _positive("hidden_dim", hidden_dim)
        size = (image_size, image_size) if isinstance(image_size, int) and not isinstance(image_size, bool) else tuple(image_size)
        if len(size) != 2:
            raise ValueError(f"ConvEncoder: image_size must be an int or (height, width), got {image_size!r}")
        h, w = (_positive("image_size", s) for s in size)
        if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence) or not channels:
            raise ValueError(f"ConvEncoder: channels must be a non-empty sequence of positive ints, got {channels!r}")
        blocks: list[nn.Module] = []
        width = in_chans
        for c in channels:
            blocks += [nn.Conv2d(width, _positive("channels[]", c), 3, stride=2, padding=1), nn.GELU()]
            width = c
            h, w = (h + 1) // 2, (w + 1) // 2
        self.in_chans, self.image_size = in_chans, (size[0], size[1])
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(width * h * w, hidden_dim), nn.LayerNorm(hidden_dim), nn.GELU(), nn.Linear(hidden_dim, latent_dim)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or tuple(images.shape[1:]) != (self.in_chans, *self.image_size):
            raise ValueError(
                f"ConvEncoder: images must have shape (B, {self.in_chans}, {self.image_size[0]}, {self.image_size[1]}), got {tuple(images.shape)}"
            )
        return self.head(self.features(images))
