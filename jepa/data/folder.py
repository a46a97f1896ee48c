"""ImageFolderDataset: a user's folder of images, with or without class labels.

Three layouts are recognised under ``root``:

* **split** (ImageNet): ``root/train/<class>/*`` and optionally ``root/val/<class>/*``;
* **classes**: ``root/<class>/*`` (one folder per class, searched recursively);
* **flat**: image files directly in ``root`` (no labels: every label is -1).

Labels are the positions of the class-folder names in their sorted list (``dataset.classes``).
Without a ``val`` folder, ``split="train"``/``"val"`` take a seeded, stratified 80/20 split of the
images (:func:`jepa.data.train_val_split`).
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset

from jepa.data.images import IMAGE_EXTENSIONS, ImageDecodeError, is_image_file, read_image
from jepa.data.splits import train_val_split
from jepa.data.transforms import eval_transform

__all__ = ["ImageFolderDataset", "scan_image_folder"]

SPLITS = (None, "train", "val")
ON_ERROR = ("raise", "skip")


def _walk_images(folder: Path) -> tuple[list[str], int]:
    """Sorted image paths under ``folder`` (recursively, hidden entries skipped) and the count of other files."""
    images, others = [], 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if is_image_file(name):
                images.append(os.path.join(dirpath, name))
            else:
                others += 1
    return images, others


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_folder_samples(folder: Path, classes: Sequence[str] | None = None) -> tuple[list[str], list[tuple[str, int]]]:
    """``(classes, samples)`` of a folder of class folders; images directly in ``folder`` are refused."""
    loose = [p.name for p in folder.iterdir() if p.is_file() and is_image_file(p)]
    if loose:
        raise ValueError(
            f"ImageFolderDataset: {str(folder)!r} holds both class folders and loose images (e.g. {loose[0]!r}); "
            "put every image in a class folder, or use a flat folder without sub-folders"
        )
    dirs = _subdirs(folder)
    names = [d.name for d in dirs] if classes is None else list(classes)
    index = {name: i for i, name in enumerate(names)}
    samples: list[tuple[str, int]] = []
    empty = []
    for d in dirs:
        if d.name not in index:
            raise ValueError(
                f"ImageFolderDataset: class folder {str(d)!r} is not one of the training classes {names}"
            )
        files, _ = _walk_images(d)
        if not files:
            empty.append(d.name)
        samples.extend((f, index[d.name]) for f in files)
    if empty:
        raise ValueError(
            f"ImageFolderDataset: class folder(s) {empty} under {str(folder)!r} contain no image files "
            f"({', '.join(IMAGE_EXTENSIONS)})"
        )
    return names, samples


def scan_image_folder(root: str | os.PathLike) -> dict:
    """Describe the folder ``root``: ``{"layout": "split"|"classes"|"flat", "classes": [...],
    "train": [(path, label), ...], "val": [...] or None}``.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        NotADirectoryError: ``root`` is a file.
        ValueError: the folder is empty, holds no image files, or mixes loose images with class folders.
    """
    folder = Path(os.fspath(root)).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"ImageFolderDataset: root={str(root)!r} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"ImageFolderDataset: root={str(root)!r} is a file; expected a folder of images")
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise ValueError(f"ImageFolderDataset: root={str(root)!r} is an empty folder; expected images or class folders")
    train_dir, val_dir = folder / "train", folder / "val"
    if train_dir.is_dir():
        classes, train = _class_folder_samples(train_dir) if _subdirs(train_dir) else ([], _flat(train_dir))
        val = None
        if val_dir.is_dir():
            if classes:
                _, val = _class_folder_samples(val_dir, classes)
            else:
                val = _flat(val_dir)
        info = {"layout": "split", "classes": classes, "train": train, "val": val}
    elif _subdirs(folder):
        classes, samples = _class_folder_samples(folder)
        info = {"layout": "classes", "classes": classes, "train": samples, "val": None}
    else:
        info = {"layout": "flat", "classes": [], "train": _flat(folder), "val": None}
    if not info["train"] and not info["val"]:
        _, others = _walk_images(folder)
        raise ValueError(
            f"ImageFolderDataset: no image files ({', '.join(IMAGE_EXTENSIONS)}) found under root={str(root)!r} "
            f"({others} other file(s))"
        )
    return info


def _flat(folder: Path) -> list[tuple[str, int]]:
    files = sorted(str(p) for p in folder.iterdir() if p.is_file() and is_image_file(p))
    return [(f, -1) for f in files]


class ImageFolderDataset(Dataset):
    """Images from a folder, as ``(image, label)`` items: a float ``(C, H, W)`` tensor in ``[0, 1]``
    (before ``transform``'s own normalisation, if any) and an int label (-1 without class folders).

    PNG, JPEG, WebP and BMP files are read with Pillow; grayscale and palette images are converted
    to RGB (``channels=3``) and transparency is composited over white. Images are decoded in
    ``__getitem__``, so in DataLoader workers; the dataset holds only paths and settings (picklable,
    no open files).

    Args:
        root: the folder (see the module docstring for the layouts).
        image_size: side of the square output images (or ``(height, width)``); used by the default
            transform.
        split: ``None`` (every image under ``root``), ``"train"`` or ``"val"``. Without a ``val``
            folder, ``"train"``/``"val"`` are a seeded stratified split of the images
            (``val_fraction``, ``split_seed``).
        transform: callable on the decoded ``(C, H, W)`` float image; default
            :func:`jepa.data.eval_transform` (resize the shorter side, centre crop): images of mixed
            sizes all come out ``image_size``. For pretraining pass
            :func:`jepa.data.train_transform`.
        on_error: ``"raise"`` (default): an unreadable or truncated file raises
            :class:`~jepa.data.ImageDecodeError` naming it when it is loaded; ``"skip"``: every file
            is decoded once at construction, unreadable ones are left out and listed in
            ``.skipped`` (a warning gives the count).
        channels: 3 (RGB) or 1 (greyscale).
        val_fraction: share of each class held out as ``"val"`` when there is no ``val`` folder.
        split_seed: seed of that split.

    Attributes:
        classes: sorted class-folder names (empty for a flat folder).
        samples: ``(path, label)`` pairs, in a fixed order.
        layout: ``"split"``, ``"classes"`` or ``"flat"``.
        skipped: ``(path, reason)`` of the files left out with ``on_error="skip"``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int | Sequence[int],
        split: str | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        *,
        on_error: str = "raise",
        channels: int = 3,
        val_fraction: float = 0.2,
        split_seed: int = 0,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"ImageFolderDataset: split must be None, 'train' or 'val', got {split!r}")
        if on_error not in ON_ERROR:
            raise ValueError(f"ImageFolderDataset: on_error must be 'raise' or 'skip', got {on_error!r}")
        if channels not in (1, 3):
            raise ValueError(f"ImageFolderDataset: channels must be 1 or 3, got {channels!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"ImageFolderDataset: transform must be callable or None, got {type(transform).__name__}")
        default_transform = eval_transform(image_size)  # also validates image_size
        info = scan_image_folder(root)
        self.root = str(root)
        self.image_size = image_size
        self.split = split
        self.layout = info["layout"]
        self.classes: list[str] = list(info["classes"])
        self.channels = channels
        self.transform = transform if transform is not None else default_transform
        self.on_error = on_error
        train, val = info["train"], info["val"]
        if split is None:
            samples = train + (val or [])
        elif val is not None:
            samples = train if split == "train" else val
        else:
            train_idx, val_idx = train_val_split([label for _, label in train], val_fraction, split_seed)
            samples = [train[i] for i in (train_idx if split == "train" else val_idx)]
        if not samples:
            raise ValueError(f"ImageFolderDataset: split={split!r} of root={self.root!r} holds no images")
        self.skipped: list[tuple[str, str]] = []
        if on_error == "skip":
            samples, self.skipped = _drop_unreadable(samples, channels)
            if self.skipped:
                warnings.warn(
                    f"ImageFolderDataset: skipped {len(self.skipped)} unreadable image file(s) under {self.root!r} "
                    f"(first: {self.skipped[0][0]!r}); see dataset.skipped",
                    stacklevel=2,
                )
            if not samples:
                raise ValueError(f"ImageFolderDataset: every image file under root={self.root!r} is unreadable")
        self.samples: list[tuple[str, int]] = samples

    @property
    def targets(self) -> list[int]:
        """The label of every item (torchvision's name)."""
        return [label for _, label in self.samples]

    @property
    def labels(self) -> torch.Tensor:
        """Labels as an int64 tensor (-1 for unlabelled images)."""
        return torch.tensor(self.targets, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        image = read_image(path, self.channels).float().div_(255.0)
        return self.transform(image), label

    def __repr__(self) -> str:
        return (
            f"ImageFolderDataset(root={self.root!r}, split={self.split!r}, layout={self.layout!r}, "
            f"{len(self)} images, {len(self.classes)} classes)"
        )


def _drop_unreadable(samples: list[tuple[str, int]], channels: int) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
    def check(path: str) -> str:
        try:
            read_image(path, channels)
        except ImageDecodeError as exc:
            return str(exc)
        return ""

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        reasons = list(pool.map(check, [p for p, _ in samples]))
    kept = [s for s, why in zip(samples, reasons) if not why]
    skipped = [(s[0], why) for s, why in zip(samples, reasons) if why]
    return kept, skipped
