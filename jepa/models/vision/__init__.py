"""jepa.models.vision: Vision Transformer encoder (with ``keep=`` token dropping), presets, and
I-JEPA's masked predictor."""

from jepa.models.vision.pos_embed import sincos_2d
from jepa.models.vision.predictor import MaskedPredictor
from jepa.models.vision.presets import VIT_PRESETS, build_vit, vit_base, vit_huge, vit_large, vit_small, vit_tiny
from jepa.models.vision.vit import VisionTransformer, masked_mean

__all__ = [
    "VIT_PRESETS",
    "MaskedPredictor",
    "VisionTransformer",
    "build_vit",
    "masked_mean",
    "sincos_2d",
    "vit_base",
    "vit_huge",
    "vit_large",
    "vit_small",
    "vit_tiny",
]
