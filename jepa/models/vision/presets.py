"""ViT presets: the widths and depths of ViT / I-JEPA's ``vit_tiny`` ... ``vit_huge``, as one-liners over
:class:`~jepa.models.vision.VisionTransformer`."""

from __future__ import annotations

from typing import Any

from jepa.models.vision.vit import VisionTransformer

__all__ = ["VIT_PRESETS", "build_vit", "vit_base", "vit_huge", "vit_large", "vit_small", "vit_tiny"]

#: Constructor arguments of each preset (any of them can be overridden).
VIT_PRESETS: dict[str, dict[str, Any]] = {
    "vit_tiny": {"patch_size": 16, "embed_dim": 192, "depth": 12, "num_heads": 3},
    "vit_small": {"patch_size": 16, "embed_dim": 384, "depth": 12, "num_heads": 6},
    "vit_base": {"patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12},
    "vit_large": {"patch_size": 16, "embed_dim": 1024, "depth": 24, "num_heads": 16},
    "vit_huge": {"patch_size": 14, "embed_dim": 1280, "depth": 32, "num_heads": 16},  # I-JEPA's ViT-H/14
}


def build_vit(arch: str, **overrides: Any) -> VisionTransformer:
    """The preset ``arch`` (a key of :data:`~jepa.models.vision.presets.VIT_PRESETS`) with ``overrides`` applied."""
    if arch not in VIT_PRESETS:
        raise ValueError(f"build_vit: arch must be one of {sorted(VIT_PRESETS)}, got {arch!r}")
    return VisionTransformer(**{**VIT_PRESETS[arch], **overrides})


def vit_tiny(**overrides: Any) -> VisionTransformer:
    """ViT-Ti/16: width 192, 12 blocks, 3 heads."""
    return build_vit("vit_tiny", **overrides)


def vit_small(**overrides: Any) -> VisionTransformer:
    """ViT-S/16: width 384, 12 blocks, 6 heads."""
    return build_vit("vit_small", **overrides)


def vit_base(**overrides: Any) -> VisionTransformer:
    """ViT-B/16: width 768, 12 blocks, 12 heads."""
    return build_vit("vit_base", **overrides)


def vit_large(**overrides: Any) -> VisionTransformer:
    """ViT-L/16: width 1024, 24 blocks, 16 heads."""
    return build_vit("vit_large", **overrides)


def vit_huge(**overrides: Any) -> VisionTransformer:
    """ViT-H/14 (I-JEPA's): width 1280, 32 blocks, 16 heads, 14-pixel patches."""
    return build_vit("vit_huge", **overrides)
