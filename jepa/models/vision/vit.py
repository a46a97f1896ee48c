"""VisionTransformer: a ViT over image patches that can encode only a chosen subset of them (``keep=``)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from jepa.models.base import BaseModel
from jepa.models.layers import TransformerBlock, init_weights
from jepa.models.vision.pos_embed import sincos_2d

__all__ = ["VisionTransformer", "check_indices", "masked_mean", "rescale_residual_init", "to_pair"]


def to_pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """``value`` as ``(height, width)``: an int or a pair of positive ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < 1:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return pair


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def _check_bool(value, name: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")


def rescale_residual_init(blocks: Sequence[TransformerBlock]) -> None:
    """Divide the output projections of block ``i`` (attention and MLP) by ``sqrt(2 * (i + 1))``
    (I-JEPA's ``fix_init_weight``), so deep stacks start with residual updates of similar size."""
    with torch.no_grad():
        for i, block in enumerate(blocks):
            block.attn.proj.weight.div_(math.sqrt(2.0 * (i + 1)))
            block.mlp[-2].weight.div_(math.sqrt(2.0 * (i + 1)))


def check_indices(idx: torch.Tensor, valid: torch.Tensor | None, num_patches: int, name: str, ndim: int) -> None:
    """Validate a patch-index tensor of ``ndim`` dims (long, values in ``[0, num_patches)``) and its valid mask."""
    if not isinstance(idx, torch.Tensor) or idx.dtype != torch.long or idx.dim() != ndim:
        got = f"{idx.dtype} {tuple(idx.shape)}" if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(f"{name} must be a {ndim}-D long tensor of patch indices, got {got}")
    # Range check on CPU only, and not while torch.compile traces (a data-dependent branch): on a GPU
    # it would stall the stream every step (an out-of-range index there trips a device-side assert in
    # the gather instead).
    checkable = idx.device.type == "cpu" and idx.numel() and not torch.compiler.is_compiling()
    if checkable and (int(idx.min()) < 0 or int(idx.max()) >= num_patches):
        raise ValueError(
            f"{name} holds patch indices in [{int(idx.min())}, {int(idx.max())}]; expected values in [0, {num_patches})"
        )
    if valid is not None:
        if not isinstance(valid, torch.Tensor) or valid.dtype != torch.bool or valid.shape != idx.shape:
            got = f"{valid.dtype} {tuple(valid.shape)}" if isinstance(valid, torch.Tensor) else type(valid).__name__
            raise ValueError(f"the valid mask of {name} must be a bool tensor of shape {tuple(idx.shape)}, got {got}")


def _pixel_stats(mean, std, channels: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(1, C, 1, 1)`` buffers of the input standardisation (both None when not asked for)."""
    if mean is None and std is None:
        return None, None
    if mean is None or std is None:
        raise ValueError(f"VisionTransformer: pixel_mean and pixel_std go together, got pixel_mean={mean!r}, pixel_std={std!r}")
    out = []
    for name, value in (("pixel_mean", mean), ("pixel_std", std)):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != channels:
            raise ValueError(f"VisionTransformer: {name} must be {channels} numbers (one per channel), got {value!r}")
        try:
            t = torch.tensor([float(v) for v in value], dtype=torch.float32)
        except (TypeError, ValueError):
            raise ValueError(f"VisionTransformer: {name} must be {channels} numbers (one per channel), got {value!r}") from None
        if not bool(torch.isfinite(t).all()) or (name == "pixel_std" and bool((t <= 0).any())):
            raise ValueError(f"VisionTransformer: {name} must be finite{' and > 0' if name == 'pixel_std' else ''}, got {value!r}")
        out.append(t.view(1, channels, 1, 1))
    return out[0], out[1]


def masked_mean(tokens: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``(B, L, D)`` tokens over ``L``, counting only rows where ``valid`` ``(B, L)`` is True."""
    if valid is None:
        return tokens.mean(dim=1)
    w = valid.to(tokens.dtype).unsqueeze(-1)
    return (tokens * w).sum(dim=1) / w.sum(dim=1).clamp(min=1)


class VisionTransformer(BaseModel):
    """Vision Transformer encoder over ``patch_size`` x ``patch_size`` patches, with fixed 2-D sin-cos
    position embeddings and no class token (I-JEPA's encoder).

    ``forward(images)`` returns ``(B, N, embed_dim)`` patch embeddings (``N = num_patches``, raster
    order). ``forward(images, keep=idx)`` embeds and encodes only the patches ``idx`` ``(B, L)`` of
    each image and returns ``(B, L, embed_dim)``: the cost of the whole forward scales with ``L``, not
    ``N``. With ``keep_valid`` ``(B, L)`` bool, rows marked False are padding: no real token attends
    to them (``key_padding_mask`` of :func:`jepa.ops.attention`) and their outputs are zero.

    Args:
        image_size: input side in pixels (int) or ``(height, width)``; must be divisible by
            ``patch_size``.
        patch_size: patch side in pixels.
        in_chans: image channels.
        embed_dim: token width (divisible by 4 and by ``num_heads``).
        depth: transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP width as a multiple of ``embed_dim``.
        dropout: dropout inside the blocks.
        norm_eps: epsilon of the layer norms (I-JEPA: 1e-6).
        init_std: std of the truncated-normal weight init.
        qkv_bias: whether the query/key/value projections have a bias (I-JEPA and ViT: True).
        learned_pos_embed: False (default, I-JEPA): the position embeddings are the fixed 2-D
            sin-cos table, a buffer that is neither trained nor saved. True: they are a parameter
            ``pos_embed`` ``(1, N, embed_dim)`` initialised with that table, trained and saved (the
            layout of Hugging Face's ``IJepaModel``, whose table is a parameter).
        pixel_mean, pixel_std: per-channel statistics (``in_chans`` numbers each) to standardise the
            input with, ``(images - mean) / std``, before the patch embedding; None (default): the
            images are taken as they come. Part of the model's config, so a saved model takes the
            same ``[0, 1]`` images it was trained on without a separate preprocessing step.

    The patch embedding's weight has the layout of a ``Conv2d(in_chans, embed_dim, patch_size,
    stride=patch_size)`` (``patch_embed.weight`` / ``patch_embed.bias``) but is applied as a matrix
    product on the kept patches only.
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        norm_eps: float = 1e-6,
        init_std: float = 0.02,
        qkv_bias: bool = True,
        learned_pos_embed: bool = False,
        pixel_mean: Sequence[float] | None = None,
        pixel_std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        size = to_pair(image_size, "VisionTransformer: image_size")
        _check_bool(qkv_bias, "VisionTransformer: qkv_bias")
        _check_bool(learned_pos_embed, "VisionTransformer: learned_pos_embed")
        patch_size = _positive_int(patch_size, "VisionTransformer: patch_size")
        in_chans = _positive_int(in_chans, "VisionTransformer: in_chans")
        embed_dim = _positive_int(embed_dim, "VisionTransformer: embed_dim")
        depth = _positive_int(depth, "VisionTransformer: depth")
        num_heads = _positive_int(num_heads, "VisionTransformer: num_heads")
        if size[0] % patch_size or size[1] % patch_size:
            raise ValueError(
                f"VisionTransformer: image_size={image_size!r} is not divisible by patch_size={patch_size}; "
                "choose an image size that is a multiple of the patch size"
            )
        if embed_dim % 4 or embed_dim % num_heads:
            raise ValueError(
                f"VisionTransformer: embed_dim={embed_dim} must be divisible by 4 (2-D sin-cos positions) and by "
                f"num_heads={num_heads}"
            )
        self.image_size = size
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.grid_size = (size[0] // patch_size, size[1] // patch_size)
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        table = sincos_2d(embed_dim, self.grid_size)[None]
        if learned_pos_embed:
            self.pos_embed = nn.Parameter(table)
        else:
            self.register_buffer("pos_embed", table, persistent=False)
        self.blocks = nn.ModuleList(
            TransformerBlock(embed_dim, num_heads, mlp_ratio, dropout, norm_eps=norm_eps, qkv_bias=qkv_bias) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        mean, std = _pixel_stats(pixel_mean, pixel_std, in_chans)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        init_weights(self, std=init_std)
        nn.init.trunc_normal_(self.patch_embed.weight, std=init_std)
        nn.init.zeros_(self.patch_embed.bias)
        rescale_residual_init(self.blocks)

    @property
    def num_patches(self) -> int:
        """Patches per image (``gh * gw``)."""
        return self.grid_size[0] * self.grid_size[1]

    @property
    def embedding_dim(self) -> int:
        """Width of the output tokens."""
        return self.embed_dim

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, N, C * p * p)`` pixel patches in raster order (no arithmetic)."""
        b, c, h, w = images.shape
        p = self.patch_size
        gh, gw = h // p, w // p
        x = images.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, gh * gw, c * p * p)

    def _check_images(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor) or not images.is_floating_point():
            got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
            raise TypeError(f"VisionTransformer: images must be a floating-point tensor, got {got}")
        expected = (self.in_chans, *self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"VisionTransformer: images must have shape (B, {expected[0]}, {expected[1]}, {expected[2]}), "
                f"got {tuple(images.shape)}"
            )

    def forward(
        self, images: torch.Tensor, keep: torch.Tensor | None = None, keep_valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Encode ``images`` ``(B, C, H, W)``: all patches, or only ``keep`` ``(B, L)`` (long indices).

        Returns ``(B, N, embed_dim)``, or ``(B, L, embed_dim)`` with ``keep`` (rows where
        ``keep_valid`` is False are zero).
        """
        self._check_images(images)
        if self.pixel_mean is not None:
            images = (images - self.pixel_mean.to(images.dtype)) / self.pixel_std.to(images.dtype)
        patches = self.patchify(images)
        pos = self.pos_embed
        if keep is not None:
            check_indices(keep, keep_valid, self.num_patches, "VisionTransformer: keep", 2)
            if keep.shape[0] != images.shape[0]:
                raise ValueError(f"VisionTransformer: keep has {keep.shape[0]} rows but there are {images.shape[0]} images")
            patches = patches.gather(1, keep[..., None].expand(-1, -1, patches.shape[-1]))
            pos = self.pos_embed[0][keep]
        elif keep_valid is not None:
            raise ValueError("VisionTransformer: keep_valid needs keep")
        x = F.linear(patches, self.patch_embed.weight.flatten(1), self.patch_embed.bias) + pos
        padding = None if keep_valid is None else ~keep_valid
        for block in self.blocks:
            x = block(x, padding)
        x = self.norm(x)
        if padding is not None:
            x = x.masked_fill(padding[..., None], 0.0)
        return x

    @torch.no_grad()
    def embed(self, images: torch.Tensor, pooled: bool = True) -> torch.Tensor:
        """Features of full images for evaluation (no gradient): the mean of the patch embeddings
        ``(B, embed_dim)`` when ``pooled``, else ``(B, N, embed_dim)``."""
        z = self(images)
        return z.mean(dim=1) if pooled else z
