"""``with evaluating(model): ...``: eval mode (and no gradients) inside, the previous mode after.

A leaf module: it imports nothing else from :mod:`jepa.trainer`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["evaluating"]


@contextlib.contextmanager
def evaluating(*modules: nn.Module, no_grad: bool = True) -> Iterator[None]:
    """Put ``modules`` in eval mode (dropout off, norms use running statistics) and, with
    ``no_grad``, disable autograd; on exit every module gets back the train/eval mode it had,
    whether the block returned or raised."""
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        with torch.no_grad() if no_grad else contextlib.nullcontext():
            yield
    finally:
        for m, mode in zip(modules, was_training):
            m.train(mode)
