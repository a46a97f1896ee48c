"""create_trainer: a :class:`~jepa.trainer.JEPATrainer` with the optimizer and schedule that suit
most runs (the v1 API's one-liner)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from jepa.trainer import distributed as dist_glue
from jepa.trainer.batches import resolve_device
from jepa.trainer.optimizers import build_adamw
from jepa.trainer.trainer import JEPATrainer

__all__ = ["create_trainer"]


def create_trainer(
    model: nn.Module,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.05,
    device: str | torch.device = "auto",
    logger: Any = None,
    loss_fn: Callable[..., Any] | None = None,
    distributed: bool = False,
    world_size: int | None = None,
    local_rank: int | None = None,
    *,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    **trainer_kwargs: Any,
) -> JEPATrainer:
    """A :class:`~jepa.trainer.JEPATrainer` with AdamW (fused where supported; no decay on biases/norms) and a
    warmup + cosine schedule sized to the real number of steps when :meth:`~jepa.trainer.trainer.BaseTrainer.train` runs.

    Extra keyword arguments go to :class:`~jepa.trainer.JEPATrainer` (``gradient_clip_norm``,
    ``gradient_accumulation``, ``progress_bar``, ``save_dir``, ``warmup_fraction``, ``resume``, ...).

    ``distributed=True`` (under ``torchrun``): joins the process group (NCCL on CUDA, gloo on CPU),
    moves the model to ``cuda:LOCAL_RANK`` and trains it under DistributedDataParallel, or, with
    ``strategy="fsdp"``, shards it over the ranks with FSDP2 (each rank's shards move to its device;
    the optimizer built here is pointed at them); see :class:`~jepa.trainer.trainer.BaseTrainer`.
    ``world_size``/``local_rank`` are checked against the environment.
    """
    sharded = trainer_kwargs.get("strategy") == "fsdp"
    ctx: Any = dist_glue.init_distributed(world_size, local_rank, device) if distributed else False
    dev = ctx.device if distributed else resolve_device(device)
    if not sharded:  # (FSDP moves each shard to the device: the whole model never has to fit there)
        model = model.to(dev)
    optimizer = build_adamw(model, learning_rate=learning_rate, weight_decay=weight_decay, betas=tuple(betas), eps=eps, device=dev)
    return JEPATrainer(model, optimizer, scheduler="cosine", device=dev, logger=logger, loss_fn=loss_fn, distributed=ctx, **trainer_kwargs)
