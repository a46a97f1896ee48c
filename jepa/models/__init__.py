"""jepa.models: nn.Modules only (no training logic)."""

from jepa.models.base import BaseModel, build_model
from jepa.models.encoder import Encoder
from jepa.models.jepa import JEPA, JEPAAction
from jepa.models.predictor import Predictor, Projector, TransformerPredictor
from jepa.models.world_model import WorldModel

__all__ = ["JEPA", "BaseModel", "Encoder", "JEPAAction", "Predictor", "Projector", "TransformerPredictor", "WorldModel", "build_model"]
