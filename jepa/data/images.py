"""Reading image files with Pillow into ``(C, H, W)`` tensors.

Files are opened, decoded and closed inside :func:`read_image` (no handle outlives the call), so the
datasets that use it stay picklable and decode in DataLoader workers.
"""

from __future__ import annotations

import os

import numpy as np
import torch

__all__ = ["IMAGE_EXTENSIONS", "ImageDecodeError", "is_image_file", "read_image"]

#: File suffixes treated as images (compared case-insensitively).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

#: Transparent pixels are composited over this colour (white) when alpha is dropped.
_BACKGROUND = (255, 255, 255)


class ImageDecodeError(ValueError):
    """An image file could not be read or decoded (missing, truncated, not an image); the message names it."""


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` has one of :data:`~jepa.data.images.IMAGE_EXTENSIONS` (and is not a hidden file)."""
    name = os.path.basename(os.fspath(path))
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _pillow():
    try:
        from PIL import Image  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - pillow is a dependency of jepa
        raise ImportError("reading image files needs Pillow: pip install pillow") from exc
    return Image


def read_image(path: str | os.PathLike, channels: int = 3) -> torch.Tensor:
    """Decode the image file ``path`` into a ``(channels, H, W)`` uint8 tensor.

    Grayscale, palette, 16-bit and CMYK images are converted; images with an alpha channel (RGBA,
    LA, palette with transparency) are composited over white. ``channels`` is 3 (RGB) or 1 (grey).

    Raises:
        ImageDecodeError: the file cannot be opened or decoded (the message names the file).
    """
    if channels not in (1, 3):
        raise ValueError(f"read_image: channels must be 1 or 3, got {channels!r}")
    Image = _pillow()
    path = os.fspath(path)
    try:
        with Image.open(path) as img:
            img.load()  # decode now: truncated files fail here, inside the try
            img = _to_mode(img, "RGB" if channels == 3 else "L", Image)
            array = np.array(img, dtype=np.uint8)  # a writable copy (torch refuses read-only arrays)
    except Exception as exc:  # noqa: BLE001  (Pillow raises many types; all mean "this file is unreadable")
        raise ImageDecodeError(f"cannot decode image file {path!r}: {type(exc).__name__}: {exc}") from exc
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _to_mode(img, mode: str, Image):
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping (convert("L") would clip).
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if a.max() > 255 else 255.0
        img = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        img = Image.alpha_composite(background, rgba)
    return img.convert(mode) if img.mode != mode else img
