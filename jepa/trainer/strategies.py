"""The trainer's ``strategy`` argument: which multi-process strategy a run gets, checked and built.

* ``"ddp"`` (default): :class:`~jepa.trainer.distributed.DataParallel`, the model replicated on every
  rank under ``DistributedDataParallel``;
* ``"fsdp"``: :class:`~jepa.trainer.fsdp.ShardedDataParallel`, the model sharded in place by FSDP2
  (needs ``distributed=True`` and torch >= 2.6).

``activation_checkpointing`` applies to either (and to single-process runs).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from jepa.trainer.activation_checkpointing import apply_activation_checkpointing
from jepa.trainer.checks import check_choice, check_type
from jepa.trainer.distributed import DataParallel, DistributedContext, ParallelStrategy
from jepa.trainer.fsdp import ShardedDataParallel, check_fsdp_support

log = logging.getLogger("jepa")

__all__ = ["STRATEGIES", "build_strategy", "check_strategy"]

#: The values of ``strategy`` (``training.strategy`` in a config, ``--strategy`` on the command line).
STRATEGIES = ("ddp", "fsdp")


def check_strategy(strategy: Any, distributed: Any, activation_checkpointing: Any = False) -> str:
    """``strategy`` when it is one of :data:`STRATEGIES` and can run with ``distributed``; else a
    ``ValueError`` (an unknown name; ``"fsdp"`` without ``distributed``) or a ``RuntimeError`` (a torch
    without FSDP2)."""
    check_choice("strategy", strategy, STRATEGIES)
    check_type("activation_checkpointing", activation_checkpointing, bool, what="a bool")
    if strategy == "fsdp":
        if not distributed:
            raise ValueError(
                "strategy='fsdp' shards the model over the processes of a distributed run: pass distributed=True "
                "and launch with torchrun (e.g. torchrun --nproc_per_node=2 train.py), or use strategy='ddp'"
            )
        check_fsdp_support()
    return strategy


def build_strategy(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ctx: DistributedContext | None,
    *,
    strategy: str,
    mixed_precision: str | None,
    activation_checkpointing: bool,
    find_unused_parameters: bool,
) -> ParallelStrategy | None:
    """The trainer's ``parallel`` (None without a process group); applies activation checkpointing."""
    if ctx is not None and strategy == "fsdp":
        return ShardedDataParallel(model, ctx, optimizer, mixed_precision=mixed_precision, activation_checkpointing=activation_checkpointing)
    if activation_checkpointing:
        apply_activation_checkpointing(model)
    if ctx is None:
        return None
    return DataParallel(model, ctx, find_unused_parameters=find_unused_parameters)
