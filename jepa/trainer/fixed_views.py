"""Deterministic views of an augmenting dataset, for validation: :class:`FixedViews`.

A leaf of :mod:`jepa.trainer`: it imports nothing else from it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from jepa.trainer.checks import check_int, check_type

__all__ = ["FixedViews", "sample_seed", "seeded_rngs"]

_MASK64 = (1 << 64) - 1


def sample_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for sample ``index`` of a dataset seeded with ``seed`` (splitmix64 of
    the pair, so neighbouring samples and neighbouring seeds get unrelated streams)."""
    z = (seed * 0x9E3779B97F4A7C15 + index + 1) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


@contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Inside: the global torch (CPU), numpy and python RNGs seeded with ``seed``; after: each of
    them exactly where it was before (the caller's random streams are not disturbed)."""
    # torch.default_generator, not torch.manual_seed: that one also queues a (lazy) CUDA seeding
    # with a captured traceback on every call, which costs more than the item itself.
    gen = torch.default_generator
    torch_state, numpy_state, python_state = gen.get_state(), np.random.get_state(), random.getstate()
    gen.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        gen.set_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


class FixedViews(Dataset):
    """``dataset`` whose item ``i`` is always the same: drawn with the global torch, numpy and
    python RNGs seeded from ``(seed, i)``.

    For validation of augmenting datasets (random crops, shifts, noise, context masks, multi-block
    mask samplers, trajectory windows): the views keep the training distribution, so the
    validation loss measures the training task, but ``validate()`` twice gives the same number and
    ``best_model.pt``/early stopping compare like with like. The RNG state around each item is
    restored afterwards, so the training run's random streams are unaffected, and the result does
    not depend on the order in which items are read (shuffling, workers, sharding over ranks).

    Covers datasets that draw their randomness from the global RNGs (``torch.rand*``,
    ``np.random.*``, ``random.*``, torchvision transforms); a dataset holding its own
    ``torch.Generator`` must be seeded by its owner. Other attributes are read through from
    ``dataset`` (``FixedViews(ds).labels`` is ``ds.labels``).

    Args:
        dataset: a map-style dataset (``__getitem__`` and ``__len__``).
        seed: the seed of the views (another seed gives another fixed set of views).
    """

    def __init__(self, dataset: Any, seed: int = 0) -> None:
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            check_type("dataset", dataset, Dataset, owner="FixedViews", what="a map-style dataset (__getitem__ and __len__)")
        self.dataset = dataset
        self.seed = check_int("seed", seed, minimum=0, owner="FixedViews")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        with seeded_rngs(sample_seed(self.seed, int(index))):
            return self.dataset[index]

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes this wrapper lacks; "dataset" itself is looked up normally
        # (guarded so that unpickling, which runs before __init__, does not recurse).
        if name == "dataset" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __repr__(self) -> str:
        return f"FixedViews({self.dataset!r}, seed={self.seed})"
