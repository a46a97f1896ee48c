"""Splitting a dataset: seeded train/val/test subsets (:func:`create_data_splits`, a v0 helper of
:mod:`jepa.trainer.utils`) and stratified held-out indices (:func:`stratified_holdout`)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

__all__ = ["create_data_splits", "stratified_holdout"]


def create_data_splits(
    dataset: Dataset,
    train_ratio: float = 0.8,
    val_ratio: float = 0.1,
    test_ratio: float | None = None,
    seed: int = 42,
) -> tuple[Subset, Subset, Subset]:
    """Split ``dataset`` into disjoint train/val/test subsets, shuffled by ``seed``.

    ``test_ratio`` defaults to what remains; ratios must be >= 0 and sum to at most 1. Sizes are
    rounded down, leftovers go to train.
    """
    n = len(dataset)
    if n == 0:
        raise ValueError("create_data_splits: the dataset is empty")
    if test_ratio is None:
        test_ratio = max(0.0, 1.0 - train_ratio - val_ratio)
    for name, r in (("train_ratio", train_ratio), ("val_ratio", val_ratio), ("test_ratio", test_ratio)):
        if not 0.0 <= r <= 1.0:
            raise ValueError(f"create_data_splits: {name} must be in [0, 1], got {r!r}")
    if train_ratio + val_ratio + test_ratio > 1.0 + 1e-9:
        raise ValueError(f"create_data_splits: ratios sum to {train_ratio + val_ratio + test_ratio:.3f} > 1")
    n_val, n_test = int(n * val_ratio), int(n * test_ratio)
    n_train = n - n_val - n_test if abs(train_ratio + val_ratio + test_ratio - 1.0) < 1e-9 else int(n * train_ratio)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    train_idx = perm[:n_train]
    val_idx = perm[n_train : n_train + n_val]
    test_idx = perm[n_train + n_val : n_train + n_val + n_test]
    return Subset(dataset, train_idx), Subset(dataset, val_idx), Subset(dataset, test_idx)




def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, held_out)`` sorted indices: ``round(fraction * n_c)`` samples (at least one) of every
    class ``c`` held out, chosen by ``seed``."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        held.append(rng.permutation(idx)[: max(1, int(round(len(idx) * fraction)))])
    mask = np.zeros(len(labels), dtype=bool)
    mask[np.concatenate(held)] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)
