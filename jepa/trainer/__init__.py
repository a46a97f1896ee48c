"""jepa.trainer: the trainers, losses, callbacks, evaluator and helpers."""

from jepa.trainer.eval import JEPAEvaluator
from jepa.trainer.losses import ContrastiveLoss, JEPALoss, ReconstructionLoss, VICRegLoss, get_loss
from jepa.trainer.trainer import BaseTrainer, JEPATrainer, create_trainer

__all__ = [
    "BaseTrainer",
    "ContrastiveLoss",
    "JEPAEvaluator",
    "JEPALoss",
    "JEPATrainer",
    "ReconstructionLoss",
    "VICRegLoss",
    "create_trainer",
    "get_loss",
]
