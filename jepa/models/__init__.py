"""jepa.models: nn.Modules only (no training logic)."""

from jepa.models.base import BaseModel, build_model
from jepa.models.conv import ConvEncoder
from jepa.models.encoder import Encoder
from jepa.models.ijepa import IJEPA
from jepa.models.jepa import JEPA, JEPAAction
from jepa.models.predictor import Predictor, Projector, TransformerPredictor
from jepa.models.vision import MaskedPredictor, VisionTransformer
from jepa.models.world_model import WorldModel

__all__ = [
    "IJEPA",
    "JEPA",
    "BaseModel",
    "ConvEncoder",
    "Encoder",
    "JEPAAction",
    "MaskedPredictor",
    "Predictor",
    "Projector",
    "TransformerPredictor",
    "VisionTransformer",
    "WorldModel",
    "build_model",
]
