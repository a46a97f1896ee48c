"""The recipe keys of a config (``model.target_encoder``, ``loss.regularizer``) as objects and names,
shared by token runs (:mod:`jepa.trainer.builders`) and image runs (:mod:`jepa.trainer.images`).

The four recipes of the objectives guide are config choices on every dataset:

* I-JEPA (EMA): ``target_encoder: ema``, ``regularizer: none``;
* I-JEPA + VC: ``ema``, ``vc`` (weighted by ``loss.var_weight``/``cov_weight``);
* I-JEPA + SIGReg: ``ema``, ``sigreg`` (``loss.sigreg.*``);
* LeJEPA-style: ``none`` (the online encoder with gradients, no EMA, no stop-gradient), ``sigreg``.
"""

from __future__ import annotations

from jepa.config import Config
from jepa.trainer.checks import check_choice, check_int, check_number
from jepa.trainer.losses import REGULARIZERS, SIGRegLoss

__all__ = ["active_regularizer", "build_regularizer", "recipe_name"]


def build_regularizer(config: Config, *, distributed: bool = True) -> str | SIGRegLoss:
    """``loss.regularizer`` as :class:`~jepa.trainer.losses.JEPALoss` and
    :class:`~jepa.trainer.losses.IJEPALoss` take it: ``"vc"``, ``"none"``, or a
    :class:`~jepa.trainer.losses.SIGRegLoss` with ``loss.sigreg``'s settings, seeded by
    ``training.seed``, reducing over ranks itself when ``distributed`` (its rows are each rank's own,
    not rows the trainer gathers)."""
    lc = config.loss
    check_choice("loss.regularizer", lc.regularizer, REGULARIZERS)
    check_number("loss.regularizer_weight", lc.regularizer_weight, low=0, noun="")
    if lc.regularizer != "sigreg":
        return lc.regularizer
    sc = lc.sigreg
    check_int("loss.sigreg.num_slices", sc.num_slices, minimum=1, noun="")
    check_int("loss.sigreg.knots", sc.knots, minimum=2, noun="")
    check_number("loss.sigreg.t_max", sc.t_max, low=0, low_open=True, noun="")
    return SIGRegLoss(num_slices=sc.num_slices, t_max=sc.t_max, knots=sc.knots, seed=max(0, int(config.training.seed)),
                      distributed=distributed)


def active_regularizer(config: Config) -> str:
    """The regularizer ``config`` actually trains with: ``loss.regularizer``, or ``"none"`` when its
    weight is 0 (``loss.regularizer_weight``, or both ``var_weight`` and ``cov_weight`` for ``"vc"``)."""
    lc = config.loss
    if lc.regularizer_weight == 0 or (lc.regularizer == "vc" and lc.var_weight == 0 and lc.cov_weight == 0):
        return "none"
    return lc.regularizer


def recipe_name(config: Config) -> str:
    """The recipe ``config`` trains, named by its target encoder and regularizer: ``"I-JEPA (EMA)"``,
    ``"I-JEPA + VC"``, ``"I-JEPA + SIGReg"``, ``"LeJEPA-style"`` (no EMA, no stop-gradient, SIGReg), or a
    plain description for the other combinations (``"shared target + VC"``, ...)."""
    target, reg = config.model.target_encoder, active_regularizer(config)
    named = {("ema", "none"): "I-JEPA (EMA)", ("ema", "vc"): "I-JEPA + VC", ("ema", "sigreg"): "I-JEPA + SIGReg", ("none", "sigreg"): "LeJEPA-style"}
    if (target, reg) in named:
        return named[(target, reg)]
    who = {"shared": "shared target", "none": "online target"}.get(target, f"{target} target")
    return f"{who} + {'VC' if reg == 'vc' else 'SIGReg'}" if reg != "none" else f"{who}, no regularizer"
