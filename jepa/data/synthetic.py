"""Procedural labelled images ("shapes"): a small vision task whose labels raw pixels barely predict.

Each image shows one filled shape (the class: circle, square, triangle, plus, ring, diamond, cross,
star, crescent, frame) of a random colour, size, position and small rotation (+-15 degrees, so a
square stays distinguishable from a diamond) on a textured background: two random colours mixed
by a random sinusoidal grating, plus pixel noise. The class is invariant to all of that, so a
linear probe on raw pixels sits near chance while a model that sees shape does well.

Everything is drawn from ``numpy.random.default_rng((seed, split, index))``: an image depends only
on its seed, split and index, and the train/val streams never share an image.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["SHAPE_CLASSES", "make_shapes", "write_shapes_folder"]

#: Class names of the shapes set, in label order.
SHAPE_CLASSES = ("circle", "square", "triangle", "plus", "ring", "diamond", "cross", "star", "crescent", "frame")
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_SUPERSAMPLE = 4  # render at 4x and average down: anti-aliased edges


def _star(u: np.ndarray, v: np.ndarray, points: int = 5, inner: float = 0.42) -> np.ndarray:
    """Inside a ``points``-pointed star of outer radius 1 pointing up."""
    r = np.hypot(u, v)
    phi = np.mod(np.arctan2(u, -v), 2 * math.pi / points)  # 0 at the top vertex
    phi = np.minimum(phi, 2 * math.pi / points - phi)  # fold onto [0, pi/points]
    ax, ay = 1.0, 0.0  # outer vertex
    bx, by = inner * math.cos(math.pi / points), inner * math.sin(math.pi / points)  # inner vertex
    px, py = r * np.cos(phi), r * np.sin(phi)
    # inside when P is on the origin's side of the edge A-B
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax) <= 0


def _shape_mask(label: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of points ``(u, v)`` (shape frame: radius 1, y down) in shape ``label``."""
    au, av = np.abs(u), np.abs(v)
    r = np.hypot(u, v)
    name = SHAPE_CLASSES[label]
    if name == "circle":
        return r <= 1.0
    if name == "square":
        return np.maximum(au, av) <= 0.8
    if name == "triangle":
        return (v <= 0.75) & (v >= -0.95 + (1.7 / 0.95) * au)
    if name == "plus":
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    if name == "ring":
        return (r <= 1.0) & (r >= 0.55)
    if name == "diamond":
        return au + av <= 1.05
    if name == "cross":
        s = math.sqrt(0.5)
        ru, rv = np.abs((u + v) * s), np.abs((v - u) * s)
        return ((ru <= 0.28) & (rv <= 1.0)) | ((rv <= 0.28) & (ru <= 1.0))
    if name == "star":
        return _star(u, v)
    if name == "crescent":
        return (r <= 1.0) & (np.hypot(u - 0.5, v) > 0.8)
    return (np.maximum(au, av) <= 0.85) & (np.maximum(au, av) >= 0.5)  # frame


def _luma(c: np.ndarray) -> float:
    return float(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2])


def _render(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``(size, size, 3)`` uint8 image of class ``label``."""
    n = size * _SUPERSAMPLE
    coords = (np.arange(n) + 0.5) / _SUPERSAMPLE  # pixel units
    x, y = np.meshgrid(coords, coords)
    # background: two nearby colours mixed by a grating
    base = rng.uniform(0.0, 1.0, 3)
    other = np.clip(base + rng.uniform(-0.35, 0.35, 3), 0.0, 1.0)
    freq = rng.uniform(1.5, 6.0) / size
    theta = rng.uniform(0, math.pi)
    phase = rng.uniform(0, 2 * math.pi)
    t = 0.5 + 0.5 * np.sin(2 * math.pi * freq * (x * math.cos(theta) + y * math.sin(theta)) + phase)
    image = base[None, None, :] * (1 - t[..., None]) + other[None, None, :] * t[..., None]
    # foreground colour: far enough in brightness from the background to be seen
    bg_luma = 0.5 * (_luma(base) + _luma(other))
    for _ in range(100):
        fg = rng.uniform(0.0, 1.0, 3)
        if abs(_luma(fg) - bg_luma) >= 0.25:
            break
    radius = rng.uniform(0.2, 0.42) * size
    cx, cy = rng.uniform(radius, size - radius, 2)
    angle = math.radians(rng.uniform(-15.0, 15.0))
    dx, dy = x - cx, y - cy
    u = (dx * math.cos(angle) + dy * math.sin(angle)) / radius
    v = (-dx * math.sin(angle) + dy * math.cos(angle)) / radius
    inside = _shape_mask(label, u, v)
    shade = 1.0 + 0.15 * (u * rng.uniform(-1, 1) + v * rng.uniform(-1, 1))  # a soft gradient on the shape
    fg_pixels = np.clip(fg[None, None, :] * shade[..., None], 0.0, 1.0)
    image = np.where(inside[..., None], fg_pixels, image)
    image = image.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE, 3).mean(axis=(1, 3))
    image = image + rng.normal(0.0, 0.03, image.shape)
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _check(num_images: int, image_size: int, num_classes: int, split: str) -> None:
    for name, value, low in (("num_images", num_images, 1), ("image_size", image_size, 8)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"shapes: {name} must be an int >= {low}, got {value!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 2 <= num_classes <= len(SHAPE_CLASSES):
        raise ValueError(f"shapes: num_classes must be an int in [2, {len(SHAPE_CLASSES)}], got {num_classes!r}")
    if split not in _SPLIT_CODES:
        raise ValueError(f"shapes: split must be one of {sorted(_SPLIT_CODES)}, got {split!r}")


def make_shapes(
    num_images: int, image_size: int = 32, *, seed: int = 0, split: str = "train", num_classes: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)``: ``(N, 3, S, S)`` uint8 and ``(N,)`` int64, classes balanced
    (``labels[i]`` indexes :data:`~jepa.data.synthetic.SHAPE_CLASSES`), shuffled, reproducible from ``seed`` and ``split``."""
    _check(num_images, image_size, num_classes, split)
    code = _SPLIT_CODES[split]
    order = np.random.default_rng((seed, code, 1 << 20)).permutation(num_images)
    labels = (np.arange(num_images) % num_classes)[order]
    images = np.stack([_render(int(c), image_size, np.random.default_rng((seed, code, i))) for i, c in enumerate(labels)])
    return torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), torch.from_numpy(labels.astype(np.int64))


def write_shapes_folder(
    root: str | os.PathLike,
    num_train: int = 1200,
    num_val: int = 300,
    image_size: int = 32,
    *,
    seed: int = 0,
    num_classes: int = 10,
) -> Path:
    """Write the shapes set as PNGs in the ImageNet layout ``root/{train,val}/<class>/<index>.png``
    (``num_val=0``: no ``val`` folder). Returns ``root``."""
    from PIL import Image  # noqa: PLC0415

    root = Path(os.fspath(root))
    for split, count in (("train", num_train), ("val", num_val)):
        if split == "val" and count == 0:
            continue
        images, labels = make_shapes(count, image_size, seed=seed, split=split, num_classes=num_classes)
        for c in range(num_classes):
            (root / split / SHAPE_CLASSES[c]).mkdir(parents=True, exist_ok=True)
        for i, (img, c) in enumerate(zip(images, labels.tolist())):
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(root / split / SHAPE_CLASSES[c] / f"{i:06d}.png")
    return root
