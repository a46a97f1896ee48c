"""Seeded, stratified train/validation splits for datasets that ship without one."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["train_val_split"]


def train_val_split(
    labels: Sequence[int] | np.ndarray, val_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)`` of a seeded split that keeps ``val_fraction`` of every class for validation.

    Each class (every distinct label; unlabelled items, label -1, form one group) is shuffled with
    ``numpy.random.default_rng(seed)`` and its first ``round(n * val_fraction)`` items go to
    validation. Both index arrays are sorted. The same labels and seed always give the same split.
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"train_val_split: val_fraction must be in (0, 1), got {val_fraction!r}")
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"train_val_split: labels must be 1-D, got shape {labels.shape}")
    rng = np.random.default_rng(seed)
    val_mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        val_mask[idx[: int(round(len(idx) * float(val_fraction)))]] = True
    return np.flatnonzero(~val_mask), np.flatnonzero(val_mask)
