"""Image transforms as plain torch code, on ``(C, H, W)`` float tensors with values in ``[0, 1]``.

Random transforms draw from torch's global RNG unless a ``generator`` is passed. Inside DataLoader
workers that RNG is seeded by the loader (from the main process's RNG, per worker and per epoch),
so ``torch.manual_seed`` in the main process reproduces a run's augmentations.

Every transform is a small picklable object (no lambdas), so datasets holding one can be sent to
DataLoader worker processes.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "CenterCrop",
    "ColorJitter",
    "Compose",
    "Normalize",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Resize",
    "eval_transform",
    "resize_to",
    "train_transform",
]


def _size_pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(size, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got {size!r}")
    if isinstance(size, int):
        pair = (size, size)
    elif isinstance(size, Sequence) and len(size) == 2 and all(isinstance(s, int) and not isinstance(s, bool) for s in size):
        pair = (int(size[0]), int(size[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints (height, width), got {size!r}")
    if min(pair) <= 0:
        raise ValueError(f"{name} must be positive, got {size!r}")
    return pair


def _check_image(img: torch.Tensor, who: str) -> None:
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"{who}: expected an image tensor (C, H, W), got {type(img).__name__}")
    if img.dim() != 3 or not img.is_floating_point():
        raise ValueError(f"{who}: expected a floating-point image tensor of shape (C, H, W), got {img.dtype} {tuple(img.shape)}")


def _check_range(value: Sequence[float], name: str, low: float, high: float | None = None) -> tuple[float, float]:
    if not (isinstance(value, Sequence) and len(value) == 2):
        raise TypeError(f"{name} must be a pair (min, max), got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if not (low <= lo <= hi) or (high is not None and hi > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must satisfy min <= max within {bound}, got {value!r}")
    return lo, hi


def resize_to(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(C, H, W)`` to ``size=(height, width)`` (antialiased when shrinking)."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    out = F.interpolate(img[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return out.clamp_(0.0, 1.0) if img.dtype.is_floating_point else out


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[torch.Tensor], torch.Tensor]]) -> None:
        for i, t in enumerate(transforms):
            if not callable(t):
                raise TypeError(f"Compose: transforms[{i}] must be callable, got {type(t).__name__}")
        self.transforms = list(transforms)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        for t in self.transforms:
            img = t(img)
        return img

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class Resize:
    """Resize so that the shorter side is ``size`` (int; aspect ratio kept) or to ``(height, width)``."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.pair = _size_pair(size, "Resize: size")
        self.shorter = isinstance(size, int)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        _check_image(img, "Resize")
        if not self.shorter:
            return resize_to(img, self.pair)
        h, w = img.shape[-2:]
        s = self.pair[0]
        if h <= w:
            size = (s, max(1, round(w * s / h)))
        else:
            size = (max(1, round(h * s / w)), s)
        return resize_to(img, size)

    def __repr__(self) -> str:
        return f"Resize({self.pair[0] if self.shorter else self.pair})"


class CenterCrop:
    """Crop the central ``size`` region (an image smaller than ``size`` is resized up first)."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _size_pair(size, "CenterCrop: size")

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        _check_image(img, "CenterCrop")
        th, tw = self.size
        h, w = img.shape[-2:]
        if h < th or w < tw:
            scale = max(th / h, tw / w)
            img = resize_to(img, (max(th, math.ceil(h * scale)), max(tw, math.ceil(w * scale))))
            h, w = img.shape[-2:]
        top, left = (h - th) // 2, (w - tw) // 2
        return img[:, top : top + th, left : left + tw]

    def __repr__(self) -> str:
        return f"CenterCrop({self.size})"


class RandomResizedCrop:
    """Crop a random region of ``scale`` times the image area and aspect ratio in ``ratio``
    (log-uniform), resized to ``size``; falls back to a central crop after 10 unlucky draws.

    The I-JEPA recipe uses ``scale=(0.3, 1.0)``.
    """

    def __init__(
        self, size: int | Sequence[int], scale: Sequence[float] = (0.3, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3)
    ) -> None:
        self.size = _size_pair(size, "RandomResizedCrop: size")
        self.scale = _check_range(scale, "RandomResizedCrop: scale", 0.0, 1.0)
        if self.scale[1] <= 0:
            raise ValueError(f"RandomResizedCrop: scale must have max > 0, got {scale!r}")
        self.ratio = _check_range(ratio, "RandomResizedCrop: ratio", 1e-6)

    def crop_box(self, height: int, width: int, generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
        """``(top, left, crop_height, crop_width)`` of one random crop of a ``height x width`` image."""
        area = height * width
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            u = torch.rand(2, generator=generator).tolist()
            target = area * (self.scale[0] + u[0] * (self.scale[1] - self.scale[0]))
            aspect = math.exp(log_lo + u[1] * (log_hi - log_lo))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
                left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
                return top, left, h, w
        # Fallback: the largest central crop whose aspect ratio is inside the range.
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_image(img, "RandomResizedCrop")
        top, left, h, w = self.crop_box(img.shape[-2], img.shape[-1], generator)
        return resize_to(img[:, top : top + h, left : left + w], self.size)

    def __repr__(self) -> str:
        return f"RandomResizedCrop({self.size}, scale={self.scale}, ratio={self.ratio})"


class RandomHorizontalFlip:
    """Mirror the image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p!r}")
        self.p = float(p)

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_image(img, "RandomHorizontalFlip")
        if float(torch.rand((), generator=generator)) < self.p:
            return img.flip(-1)
        return img

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


def _gray(img: torch.Tensor) -> torch.Tensor:
    if img.shape[0] == 1:
        return img
    r, g, b = img[0], img[1], img[2]
    return (0.299 * r + 0.587 * g + 0.114 * b)[None]


class ColorJitter:
    """Random brightness, contrast and saturation, applied with probability ``p`` in a random order.

    Each strength ``s`` draws a factor uniformly from ``[max(0, 1 - s), 1 + s]``: brightness scales
    the pixels, contrast blends with the mean grey level, saturation with the grey image (RGB only).
    Hue is not changed.
    """

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, p: float = 0.8) -> None:
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"ColorJitter: {name} must be a number >= 0, got {value!r}")
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"ColorJitter: p must be in [0, 1], got {p!r}")
        self.strengths = (float(brightness), float(contrast), float(saturation))
        self.p = float(p)

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_image(img, "ColorJitter")
        if float(torch.rand((), generator=generator)) >= self.p:
            return img
        order = torch.randperm(3, generator=generator).tolist()
        u = torch.rand(3, generator=generator).tolist()
        for i in order:
            s = self.strengths[i]
            if s == 0:
                continue
            factor = max(0.0, 1.0 - s) + u[i] * (1.0 + s - max(0.0, 1.0 - s))
            if i == 0:
                img = img * factor
            elif i == 1:
                mean = _gray(img).mean()
                img = (img - mean) * factor + mean
            elif img.shape[0] == 3:
                grey = _gray(img)
                img = (img - grey) * factor + grey
            img = img.clamp(0.0, 1.0)
        return img

    def __repr__(self) -> str:
        b, c, s = self.strengths
        return f"ColorJitter(brightness={b}, contrast={c}, saturation={s}, p={self.p})"


class Normalize:
    """``(img - mean) / std`` per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std) or not len(mean):
            raise ValueError(f"Normalize: mean and std must be non-empty and of one length, got {mean!r}, {std!r}")
        if any(float(s) <= 0 for s in std):
            raise ValueError(f"Normalize: std must be > 0, got {std!r}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        _check_image(img, "Normalize")
        if img.shape[0] != len(self.mean):
            raise ValueError(f"Normalize: image has {img.shape[0]} channels but mean/std have {len(self.mean)}")
        mean = torch.tensor(self.mean, dtype=img.dtype, device=img.device)[:, None, None]
        std = torch.tensor(self.std, dtype=img.dtype, device=img.device)[:, None, None]
        return (img - mean) / std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


def train_transform(
    image_size: int | Sequence[int],
    *,
    scale: Sequence[float] = (0.3, 1.0),
    flip: bool = True,
    color_jitter: float = 0.0,
) -> Compose:
    """I-JEPA's pretraining augmentation: random resized crop (``scale``), horizontal flip, and
    colour jitter of strength ``color_jitter`` (0 disables it, as in I-JEPA)."""
    steps: list[Callable[[torch.Tensor], torch.Tensor]] = [RandomResizedCrop(image_size, scale=scale)]
    if flip:
        steps.append(RandomHorizontalFlip())
    if color_jitter:
        steps.append(ColorJitter(color_jitter, color_jitter, color_jitter))
    return Compose(steps)


def eval_transform(image_size: int | Sequence[int], *, crop_fraction: float = 1.0) -> Compose:
    """Deterministic evaluation transform: resize the shorter side to ``image_size / crop_fraction``,
    then crop the centre ``image_size`` (``crop_fraction=0.875`` is the usual ImageNet recipe)."""
    if not 0.0 < float(crop_fraction) <= 1.0:
        raise ValueError(f"eval_transform: crop_fraction must be in (0, 1], got {crop_fraction!r}")
    h, w = _size_pair(image_size, "eval_transform: image_size")
    return Compose([Resize(int(math.ceil(max(h, w) / crop_fraction))), CenterCrop((h, w))])
