"""The embedded default dataset: scikit-learn's handwritten digits as JEPA pairs.

1,797 8x8 grey images (values 0..16) with labels ship inside scikit-learn, so the default run needs
no download. An image becomes a sequence of ``T = (8 / patch)**2`` tokens of ``patch*patch``
pixels (patch=2: 16 tokens of 4 values). A training pair ``(state_t, state_t1)`` is two random
views of the same image (a shift of up to ``max_shift`` pixels, pixel noise, and, for the context
view only, a random fraction of hidden tokens set to zero), so the predictor must infer the target
view's embedding from a partial, displaced context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from jepa.data.splits import train_val_split

IMAGE_SIZE = 8


def _load_images() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # noqa: PLC0415  (bundled with scikit-learn, no download)

    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0  # (N, 8, 8) in [0, 1]
    return images, bunch.target.astype(np.int64)


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``(B, H, W)`` -> ``(B, (H/patch)*(W/patch), patch*patch)`` tokens in raster order."""
    b, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"patch={patch} must divide the image size {h}x{w}")
    x = images.reshape(b, h // patch, patch, w // patch, patch).permute(0, 1, 3, 2, 4)
    return x.reshape(b, (h // patch) * (w // patch), patch * patch)


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each image by an integer offset in ``[-max_shift, max_shift]`` (zero fill)."""
    if max_shift <= 0:
        return images
    b, h, w = images.shape
    pad = torch.nn.functional.pad(images, (max_shift, max_shift, max_shift, max_shift))
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, :, None].expand(b, h, w)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, :].expand(b, h, w)
    return pad[torch.arange(b)[:, None, None], rows, cols]


def random_affine(
    images: torch.Tensor, max_rotation: float = 0.0, max_scale: float = 0.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Rotate each image by an angle in ``[-max_rotation, max_rotation]`` degrees and scale it by a
    factor in ``[1 - max_scale, 1 + max_scale]`` about its centre (bilinear, zero fill)."""
    if max_rotation < 0 or not 0 <= max_scale < 1:
        raise ValueError(f"random_affine: need max_rotation >= 0 and 0 <= max_scale < 1, got {max_rotation!r}, {max_scale!r}")
    if max_rotation == 0 and max_scale == 0:
        return images
    b = images.shape[0]
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(max_rotation)
    scale = 1 + (torch.rand(b, generator=generator) * 2 - 1) * max_scale
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale  # grid maps output -> input coords
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    grid = F.affine_grid(theta, (b, 1, *images.shape[1:]), align_corners=False)
    return F.grid_sample(images[:, None], grid, align_corners=False, padding_mode="zeros")[:, 0]


def token_mask(num_tokens: int, ratio: float, mode: str = "random", generator: torch.Generator | None = None) -> torch.Tensor:
    """Bool mask (True = hidden) over ``num_tokens`` raster-ordered tokens of a square grid.

    ``"random"`` hides ``round(ratio * num_tokens)`` tokens anywhere; ``"block"`` hides one random
    axis-aligned rectangle of about that many tokens (I-JEPA-style block masking).
    """
    count = int(round(ratio * num_tokens))
    mask = torch.zeros(num_tokens, dtype=torch.bool)
    if count == 0:
        return mask
    if mode == "random":
        mask[torch.randperm(num_tokens, generator=generator)[:count]] = True
        return mask
    if mode != "block":
        raise ValueError(f"mask mode must be 'random' or 'block', got {mode!r}")
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"block masking needs a square token grid, got {num_tokens} tokens")
    # pick a height, then the width whose area is closest to ``count``
    h = int(torch.randint(max(1, -(-count // side)), min(side, count) + 1, (1,), generator=generator))
    w = min(side, max(1, round(count / h)))
    top = int(torch.randint(0, side - h + 1, (1,), generator=generator))
    left = int(torch.randint(0, side - w + 1, (1,), generator=generator))
    grid = mask.view(side, side)
    grid[top : top + h, left : left + w] = True
    return mask


@dataclass
class DigitsSplit:
    """Images, tokens and labels of one split (for probes and evaluation)."""

    images: torch.Tensor  # (N, 8, 8) float32 in [0, 1]
    tokens: torch.Tensor  # (N, T, patch*patch)
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)


def load_digits_split(split: str = "train", *, patch: int = 2, test_fraction: float = 0.2, seed: int = 0) -> DigitsSplit:
    """The fixed train/test split of the digits (stratified, decided by ``seed``)."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    images, labels = _load_images()
    if split != "all":
        train_idx, test_idx = train_val_split(labels, test_fraction, seed)  # stratified
        keep = test_idx if split == "test" else train_idx
        images, labels = images[keep], labels[keep]
    imgs = torch.from_numpy(images)
    return DigitsSplit(images=imgs, tokens=patchify(imgs, patch), labels=torch.from_numpy(labels))


class DigitsPairs(Dataset):
    """``(state_t, state_t1)`` pairs of two random views of the same digit.

    Each item is a pair of ``(T, patch*patch)`` float tensors. Views are drawn from torch's global
    RNG (so ``torch.manual_seed`` and a restored RNG state reproduce them). With
    ``augment=False`` both views are the clean image (for deterministic validation).

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``.
        patch: patch size (must divide 8).
        max_shift: largest translation of a view, in pixels.
        noise: std of Gaussian pixel noise added to each view.
        context_mask_ratio: fraction of the context view's tokens set to zero.
        augment: draw random views (True) or return the clean image twice (False).
        seed: seed of the fixed train/test split.
        max_rotation: largest rotation of a view, in degrees (0: none).
        max_scale: largest relative zoom of a view (0.1: factors in [0.9, 1.1]).
        mask_mode: ``"random"`` tokens or one ``"block"`` (rectangle) hidden in the context.
        clean_target: the target view is the unaugmented image (only the context is perturbed).
    """

    def __init__(
        self,
        split: str = "train",
        *,
        patch: int = 2,
        max_shift: int = 1,
        noise: float = 0.05,
        context_mask_ratio: float = 0.25,
        augment: bool = True,
        seed: int = 0,
        max_rotation: float = 0.0,
        max_scale: float = 0.0,
        mask_mode: str = "random",
        clean_target: bool = False,
    ) -> None:
        if not 0.0 <= context_mask_ratio < 1.0:
            raise ValueError(f"context_mask_ratio must be in [0, 1), got {context_mask_ratio!r}")
        if max_shift < 0 or noise < 0:
            raise ValueError(f"max_shift and noise must be >= 0, got {max_shift!r}, {noise!r}")
        if max_rotation < 0 or not 0.0 <= max_scale < 1.0:
            raise ValueError(f"need max_rotation >= 0 and 0 <= max_scale < 1, got {max_rotation!r}, {max_scale!r}")
        if mask_mode not in ("random", "block"):
            raise ValueError(f"mask_mode must be 'random' or 'block', got {mask_mode!r}")
        self.data = load_digits_split(split, patch=patch, seed=seed)
        self.patch = patch
        self.max_shift = max_shift
        self.noise = noise
        self.context_mask_ratio = context_mask_ratio
        self.augment = augment
        self.max_rotation = max_rotation
        self.max_scale = max_scale
        self.mask_mode = mask_mode
        self.clean_target = clean_target

    @property
    def labels(self) -> torch.Tensor:
        return self.data.labels

    def probe_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The clean tokens and labels of this split, ``((N, T, patch*patch), (N,))``: what online probes
        embed and classify (:class:`~jepa.trainer.callbacks.OnlineProbe`)."""
        return self.data.tokens, self.data.labels

    @property
    def num_tokens(self) -> int:
        return self.data.tokens.shape[1]

    @property
    def token_dim(self) -> int:
        return self.data.tokens.shape[2]

    def __len__(self) -> int:
        return len(self.data)

    def _view(self, image: torch.Tensor, mask_ratio: float) -> torch.Tensor:
        img = random_affine(image[None], self.max_rotation, self.max_scale)
        img = random_shift(img, self.max_shift)[0]
        if self.noise > 0:
            img = img + self.noise * torch.randn_like(img)
        tokens = patchify(img[None], self.patch)[0]
        if mask_ratio > 0:
            tokens[token_mask(tokens.shape[0], mask_ratio, self.mask_mode)] = 0.0
        return tokens

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.data.images[index]
        if not self.augment:
            tokens = self.data.tokens[index]
            return tokens, tokens.clone()
        target = self.data.tokens[index].clone() if self.clean_target else self._view(image, 0.0)
        return self._view(image, self.context_mask_ratio), target

    def _views(self, images: torch.Tensor, mask_ratio: float) -> torch.Tensor:
        """:meth:`_view` of a batch of images ``(B, 8, 8)`` in a few tensor operations."""
        img = random_shift(random_affine(images, self.max_rotation, self.max_scale), self.max_shift)
        if self.noise > 0:
            img = img + self.noise * torch.randn_like(img)
        tokens = patchify(img, self.patch)
        count = int(round(mask_ratio * tokens.shape[1]))
        if count > 0 and self.mask_mode == "random":  # token_mask's random mode for every row at once
            hidden = torch.zeros(tokens.shape[:2], dtype=torch.bool)
            hidden.scatter_(1, torch.rand(tokens.shape[:2]).argsort(dim=1)[:, :count], True)
            tokens = tokens.masked_fill(hidden[..., None], 0.0)
        elif count > 0:
            hidden = torch.stack([token_mask(tokens.shape[1], mask_ratio, self.mask_mode) for _ in range(len(tokens))])
            tokens = tokens.masked_fill(hidden[..., None], 0.0)
        return tokens

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The pairs of several samples at once (what a DataLoader asks a dataset that has this method
        for): the views of :meth:`__getitem__`, each random draw made for the whole batch at once, so
        loading costs a few tensor operations per batch instead of per sample. Deterministic for a
        given RNG state, like :meth:`__getitem__` (the two draw in a different order)."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        if not self.augment:
            tokens = self.data.tokens[index]
            return [(t, t.clone()) for t in tokens]
        target = self.data.tokens[index].clone() if self.clean_target else self._views(self.data.images[index], 0.0)
        return list(zip(self._views(self.data.images[index], self.context_mask_ratio), target))
