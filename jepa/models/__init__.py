"""jepa.models: nn.Modules only (no training logic)."""

from jepa.models.base import BaseModel, build_model
from jepa.models.encoder import Encoder
from jepa.models.jepa import JEPA, JEPAAction
from jepa.models.predictor import Predictor, Projector, TransformerPredictor

__all__ = ["JEPA", "BaseModel", "Encoder", "JEPAAction", "Predictor", "Projector", "TransformerPredictor", "build_model"]
