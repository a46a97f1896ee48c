"""TensorImageDataset: images already in memory (tensors, numpy arrays) or in ``.npy`` / ``.npz`` files."""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from jepa.data.transforms import eval_transform

__all__ = ["TensorImageDataset"]

_IMAGE_KEYS = ("images", "x", "data", "arr_0")
_LABEL_KEYS = ("labels", "y", "targets", "arr_1")


def _load_file(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"TensorImageDataset: file {path!r} does not exist")
    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False), None
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            image_key = next((k for k in _IMAGE_KEYS if k in keys), None)
            if image_key is None:
                raise ValueError(
                    f"TensorImageDataset: {path!r} has arrays {keys}; expected the images under one of {list(_IMAGE_KEYS)}"
                )
            label_key = next((k for k in _LABEL_KEYS if k in keys and k != image_key), None)
            return archive[image_key], (archive[label_key] if label_key else None)
    raise ValueError(f"TensorImageDataset: file {path!r} must be a .npy or .npz file")


def _as_nchw(images: torch.Tensor, channels_last: bool | None) -> torch.Tensor:
    if images.dim() == 3:
        return images[:, None]
    if images.dim() != 4:
        raise ValueError(
            f"TensorImageDataset: images must have shape (N, H, W), (N, C, H, W) or (N, H, W, C), got {tuple(images.shape)}"
        )
    if channels_last is None:
        channels_last = images.shape[-1] in (1, 3, 4) and images.shape[1] not in (1, 3, 4)
    return images.permute(0, 3, 1, 2) if channels_last else images


class TensorImageDataset(Dataset):
    """``(image, label)`` items from an in-memory image array.

    Args:
        images: a tensor or numpy array ``(N, H, W)`` (greyscale), ``(N, C, H, W)`` or
            ``(N, H, W, C)``; uint8 (0..255) or floating point (already in ``[0, 1]``); or the path
            of a ``.npy`` file (the images) or of a ``.npz`` file (images under ``images``/``x``/
            ``data``/``arr_0``, labels under ``labels``/``y``/``targets``/``arr_1``).
        labels: ``(N,)`` integer labels; default -1 for every item (or the ``.npz``'s labels).
        image_size: output size of the default transform (resize the shorter side + centre crop);
            ``None`` keeps the stored size.
        transform: callable on each ``(C, H, W)`` float image (replaces the default transform).
        channels_last: whether a 4-D array is ``(N, H, W, C)``; ``None`` guesses from the shape
            (a last axis of 1, 3 or 4 with a second axis that is not).

    The array is held in memory (uint8 stays uint8); items are converted to float on access.
    """

    def __init__(
        self,
        images: torch.Tensor | np.ndarray | str | os.PathLike,
        labels: torch.Tensor | np.ndarray | Sequence[int] | None = None,
        *,
        image_size: int | Sequence[int] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        channels_last: bool | None = None,
    ) -> None:
        if isinstance(images, (str, os.PathLike)):
            images, file_labels = _load_file(os.fspath(images))
            labels = file_labels if labels is None else labels
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.ascontiguousarray(images))
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"TensorImageDataset: images must be a tensor, a numpy array or a file path, got {type(images).__name__}")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise TypeError(f"TensorImageDataset: images must be uint8 or floating point, got {images.dtype}")
        images = _as_nchw(images, channels_last)
        if len(images) == 0:
            raise ValueError("TensorImageDataset: images is empty (N = 0)")
        if labels is None:
            labels_t = torch.full((len(images),), -1, dtype=torch.long)
        else:
            labels_t = torch.as_tensor(np.asarray(labels))
            if labels_t.dim() != 1 or len(labels_t) != len(images) or labels_t.is_floating_point() or labels_t.dtype == torch.bool:
                raise ValueError(
                    f"TensorImageDataset: labels must be {len(images)} integers (one per image), got {labels_t.dtype} {tuple(labels_t.shape)}"
                )
            labels_t = labels_t.long()
        if transform is not None and not callable(transform):
            raise TypeError(f"TensorImageDataset: transform must be callable or None, got {type(transform).__name__}")
        if transform is None and image_size is not None:
            transform = eval_transform(image_size)
        self.images = images
        self.labels = labels_t
        self.transform = transform

    @property
    def targets(self) -> list[int]:
        """The label of every item."""
        return self.labels.tolist()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        image = image.float().div_(255.0) if image.dtype == torch.uint8 else image.float()
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])
