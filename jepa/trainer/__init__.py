"""jepa.trainer: the trainer, its helpers and the evaluator."""

from jepa.trainer.eval import JEPAEvaluator
from jepa.trainer.losses import JEPALoss
from jepa.trainer.trainer import JEPATrainer, create_trainer

__all__ = ["JEPAEvaluator", "JEPALoss", "JEPATrainer", "create_trainer"]
