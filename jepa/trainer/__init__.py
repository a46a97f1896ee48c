"""jepa.trainer: the trainers, losses, callbacks, evaluator and helpers.

Modules, one job each (imports point down this list, never back up):

- ``trainer``: the loop (:class:`BaseTrainer`, :class:`JEPATrainer`) and the model-step protocol
  other models and losses plug into (its module docstring); ``factory``: :func:`create_trainer`;
- ``builders``: config -> objects (:func:`jepa.trainer.builders.trainer_kwargs`);
- ``checkpoints`` (state, RNGs, discovery), ``distributed`` (DDP glue), ``fsdp`` (sharded training;
  ``strategies`` picks it, ``activation_checkpointing``), ``nonfinite`` (the NaN
  policy), ``objective`` (batch -> outputs -> loss terms), ``callbacks``, ``eval`` (evaluator and
  probes), ``losses``, ``optimizers``, ``schedulers``, ``fixed_views`` (deterministic validation
  data), ``batches``, ``modes``, ``checks``;
- the v0 trainer family: ``distributed_trainer``, ``mixed_precision``, ``curriculum``, ``multitask``;
  ``experiment`` (train + probe, what ``jepa train`` runs); ``utils`` re-exports the v0 helpers.
"""

from jepa.trainer import distributed
from jepa.trainer.distributed_trainer import DistributedTrainer
from jepa.trainer.eval import JEPAEvaluator
from jepa.trainer.losses import ContrastiveLoss, IJEPALoss, JEPALoss, ReconstructionLoss, VICRegLoss, get_loss
from jepa.trainer.factory import create_trainer
from jepa.trainer.trainer import BaseTrainer, JEPATrainer

# DistributedTrainer is a JEPATrainer, and the trainer imports jepa.trainer.distributed: the class
# lives in distributed_trainer.py and is published where the v0 docs import it from.
distributed.DistributedTrainer = DistributedTrainer

__all__ = [
    "BaseTrainer",
    "ContrastiveLoss",
    "IJEPALoss",
    "JEPAEvaluator",
    "JEPALoss",
    "JEPATrainer",
    "ReconstructionLoss",
    "VICRegLoss",
    "create_trainer",
    "get_loss",
]
