"""Activation checkpointing per transformer block, and the model parts it (and FSDP) works on.

``activation_checkpointing=True`` on the trainer (``training.activation_checkpointing`` in a config)
keeps only each block's input during the forward and recomputes the block's activations in backward
(non-reentrant :func:`torch.utils.checkpoint.checkpoint`, RNG replayed: dropout draws the same masks,
so the gradients are the same as without it). Activation memory then grows with the number of blocks
times one block's input instead of everything every block computes. It applies to the blocks of the
online modules (encoder, predictor, projector); the EMA target encoder runs without gradient and keeps
no activations anyway. It works with or without DDP/FSDP.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from jepa.models.layers import TransformerBlock

__all__ = ["apply_activation_checkpointing", "model_components", "target_encoders", "transformer_blocks"]


def transformer_blocks(module: nn.Module) -> list[nn.Module]:
    """Transformer blocks inside ``module``: :class:`~jepa.models.layers.TransformerBlock` instances and
    the children (with parameters) of any ``blocks`` ``ModuleList``; a block inside a block is not
    listed on its own."""
    found: list[nn.Module] = []

    def visit(m: nn.Module) -> None:
        for name, child in m.named_children():
            if isinstance(child, TransformerBlock):
                found.append(child)
            elif name == "blocks" and isinstance(child, nn.ModuleList):
                found.extend(b for b in child if any(True for _ in b.parameters()))
            else:
                visit(child)

    visit(module)
    unique: dict[int, nn.Module] = {}
    for b in found:
        unique.setdefault(id(b), b)
    return list(unique.values())


def target_encoders(model: nn.Module) -> list[nn.Module]:
    """The EMA target encoders of the JEPAs inside ``model`` (their ``target_encoder`` modules)."""
    out: dict[int, nn.Module] = {}
    for m in model.modules():
        target = getattr(m, "target_encoder", None)
        if isinstance(target, nn.Module) and target is not m:
            out.setdefault(id(target), target)
    return list(out.values())


def model_components(model: nn.Module) -> list[nn.Module]:
    """The parts of ``model`` that train or follow training: its online modules (``online_modules()``;
    else its children holding parameters), then its EMA target encoders."""
    online = model.online_modules() if callable(getattr(model, "online_modules", None)) else None
    if online is None:
        online = [c for c in model.children() if any(True for _ in c.parameters())]
    out: dict[int, nn.Module] = {}
    for c in [*online, *target_encoders(model)]:
        if c is not model:
            out.setdefault(id(c), c)
    return list(out.values())


def _checkpoint_forward(block: nn.Module) -> None:
    forward = block.forward

    def checkpointed(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)

    # An instance attribute: hooks on __call__ (FSDP's all-gather, DDP's) still run around it.
    block.forward = checkpointed
    block._jepa_activation_checkpointing = True


def apply_activation_checkpointing(model: nn.Module) -> int:
    """Checkpoint the activations of every transformer block of ``model``'s online modules (in place;
    applying it twice changes nothing). Returns the number of blocks checkpointed."""
    targets = {id(t) for t in target_encoders(model)}
    count = 0
    for comp in model_components(model):
        if id(comp) in targets:
            continue
        for block in transformer_blocks(comp):
            if not getattr(block, "_jepa_activation_checkpointing", False):
                _checkpoint_forward(block)
            count += 1
    return count
