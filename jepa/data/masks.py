"""I-JEPA multi-block masks over a grid of image patches, and the collator that pairs them with images.

Per batch, one target block size and one context block size are drawn (as in I-JEPA); per image,
``num_targets`` target blocks and one context block are placed at random, and the target blocks are
removed from the context. Patch ``(row, col)`` of a ``(gh, gw)`` grid has index ``row * gw + col``.

Differences from the reference implementation (facebookresearch/ijepa ``src/masks/multiblock.py``):

* a block may span the whole grid height/width, and its top-left corner is uniform over *every*
  valid position (``0 .. gh - h`` inclusive), so the last row and column are covered as often as
  any other (the reference could never place a block on the last row/column);
* block scale and aspect ratio are drawn independently (the reference reused one random number);
* every image keeps all its context patches: lengths that differ between images are padded and
  marked in ``*_valid`` masks instead of truncating every image to the batch's shortest mask;
* everything is drawn from one ``torch.Generator`` (or torch's global RNG), so a seed reproduces it.

Retry policy: when the targets leave fewer than ``min_keep`` patches of an image's context block,
that image's block positions (targets and context, same sizes) are drawn again, up to
``max_tries`` times; after that a ``ValueError`` says which settings to relax. The sizes of the
batch are never changed, so every image keeps the batch's block sizes.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import torch
from torch.utils.data import default_collate, get_worker_info

__all__ = ["MultiBlockMaskCollator", "MultiBlockMasks"]

_MASK_STREAM = 0x6D61736B  # "mask": offsets the worker seed of the masks' generator


class MultiBlockMasks(NamedTuple):
    """Patch indices of one batch of multi-block masks (padded rows are marked False in ``*_valid``).

    Attributes:
        context_idx: ``(B, Lc)`` long, the context patches of each image in raster order, padded
            with 0 after the image's last one.
        context_valid: ``(B, Lc)`` bool, True for real context patches.
        target_idx: ``(B, K, Lt)`` long, the patches of each of the K target blocks (raster order
            inside the block).
        target_valid: ``(B, K, Lt)`` bool, True for real target patches.
    """

    context_idx: torch.Tensor
    context_valid: torch.Tensor
    target_idx: torch.Tensor
    target_valid: torch.Tensor


def _int_pair(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        if min(value) >= 1:
            return int(value[0]), int(value[1])
    raise ValueError(f"MultiBlockMaskCollator: {name} must be a pair of positive ints (rows, cols), got {value!r}")


def _range(value: Any, name: str, lo: float, hi: float | None) -> tuple[float, float]:
    ok = isinstance(value, (list, tuple)) and len(value) == 2
    if ok:
        a, b = float(value[0]), float(value[1])
        ok = lo < a <= b and (hi is None or b <= hi)
    if not ok:
        bound = f"({lo}, {hi}]" if hi is not None else f"> {lo}"
        raise ValueError(f"MultiBlockMaskCollator: {name} must be a pair (min, max) with min <= max, both {bound}; got {value!r}")
    return a, b


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"MultiBlockMaskCollator: {name} must be an int >= 1, got {value!r}")
    return value


class MultiBlockMaskCollator:
    """I-JEPA multi-block masking on a ``grid=(gh, gw)`` of patches; also a DataLoader ``collate_fn``.

    Args:
        grid: patch grid ``(rows, cols)``, e.g. ``(14, 14)`` for 224-pixel images and 16-pixel patches.
        num_targets: target blocks per image (K).
        target_scale: range of a target block's area, as a fraction of the grid.
        target_aspect: range of a target block's height/width ratio.
        context_scale: range of the context block's area, as a fraction of the grid.
        context_aspect: range of the context block's height/width ratio (I-JEPA: square).
        min_keep: fewest context patches an image may keep once the targets are removed.
        max_tries: position redraws per image before giving up (see the module's retry policy).
        allow_overlap: keep the target patches in the context (I-JEPA's ``allow_overlap``; off).
        generator: the generator ``__call__`` draws from in the main process (``None``: torch's
            global RNG). See "Randomness" below for DataLoader workers.

    :meth:`sample` draws masks for a batch size; calling the collator on a list of dataset items
    (images, or ``(image, label)`` pairs) returns a dict with ``images`` ``(B, C, H, W)``,
    ``labels`` ``(B,)`` when the items have them, and the four tensors of :class:`MultiBlockMasks`.

    **Randomness of** ``__call__``. In the main process (``num_workers=0``) masks come from
    ``generator`` (or torch's global RNG). In a DataLoader worker they come from a generator of the
    worker's own, seeded from the worker's seed (``get_worker_info().seed``, which the loader
    derives from its base seed, drawn at every epoch from the loader's ``generator`` or the global
    RNG, plus the worker id) and kept apart from the worker's global RNG that transforms draw from.
    A ``generator`` set here is never used inside workers (every worker would hold a copy of it and
    draw the same masks). So masks differ per worker and per epoch, differ per rank when each rank's
    loader has its own seeded ``generator``, and a run is reproduced by restoring the loader's
    generator (what the trainer's checkpoints do), whatever the number of workers.
    """

    def __init__(
        self,
        grid: Sequence[int] = (14, 14),
        num_targets: int = 4,
        target_scale: Sequence[float] = (0.15, 0.2),
        target_aspect: Sequence[float] = (0.75, 1.5),
        context_scale: Sequence[float] = (0.85, 1.0),
        min_keep: int = 10,
        *,
        context_aspect: Sequence[float] = (1.0, 1.0),
        max_tries: int = 20,
        allow_overlap: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        self.grid = _int_pair(grid, "grid")
        self.num_targets = _positive_int(num_targets, "num_targets")
        self.target_scale = _range(target_scale, "target_scale", 0.0, 1.0)
        self.target_aspect = _range(target_aspect, "target_aspect", 0.0, None)
        self.context_scale = _range(context_scale, "context_scale", 0.0, 1.0)
        self.context_aspect = _range(context_aspect, "context_aspect", 0.0, None)
        self.min_keep = _positive_int(min_keep, "min_keep")
        self.max_tries = _positive_int(max_tries, "max_tries")
        num_patches = self.grid[0] * self.grid[1]
        if self.min_keep > num_patches:
            raise ValueError(
                f"MultiBlockMaskCollator: min_keep={min_keep} is more than the {num_patches} patches of grid {self.grid}"
            )
        if not isinstance(allow_overlap, bool):
            raise TypeError(f"MultiBlockMaskCollator: allow_overlap must be a bool, got {allow_overlap!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"MultiBlockMaskCollator: generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.allow_overlap = allow_overlap
        self.generator = generator

    @property
    def num_patches(self) -> int:
        """Patches in the grid (``gh * gw``)."""
        return self.grid[0] * self.grid[1]

    def block_size(self, scale: Sequence[float], aspect: Sequence[float], generator: torch.Generator | None = None) -> tuple[int, int]:
        """Draw one block ``(height, width)``: area ``scale`` x grid (uniform), height/width ratio
        ``aspect`` (uniform), rounded and clipped to the grid (a block may span it entirely)."""
        gh, gw = self.grid
        u = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        area = (scale[0] + u[0] * (scale[1] - scale[0])) * gh * gw
        ratio = aspect[0] + u[1] * (aspect[1] - aspect[0])
        h = min(gh, max(1, round(math.sqrt(area * ratio))))
        w = min(gw, max(1, round(math.sqrt(area / ratio))))
        return h, w

    def _corners(self, count: int, h: int, w: int, generator: torch.Generator | None) -> torch.Tensor:
        """``(count,)`` raster indices of top-left corners of ``h x w`` blocks, uniform over every valid one."""
        gh, gw = self.grid
        top = torch.randint(0, gh - h + 1, (count,), generator=generator)
        left = torch.randint(0, gw - w + 1, (count,), generator=generator)
        return top * gw + left

    def _blocks(self, corners: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """``corners.shape + (gh, gw)`` bool masks of the ``h x w`` blocks at ``corners``."""
        gh, gw = self.grid
        top, left = (corners // gw)[..., None], (corners % gw)[..., None]
        rows, cols = torch.arange(gh), torch.arange(gw)
        in_rows = (rows >= top) & (rows < top + h)
        in_cols = (cols >= left) & (cols < left + w)
        return in_rows[..., :, None] & in_cols[..., None, :]

    def _draw(self, count: int, t_size: tuple[int, int], c_size: tuple[int, int], generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Target corners ``(count, K)`` and context masks ``(count, gh, gw)`` (targets removed)."""
        corners = self._corners(count * self.num_targets, *t_size, generator).view(count, self.num_targets)
        context = self._blocks(self._corners(count, *c_size, generator), *c_size)
        if not self.allow_overlap:
            context = context & ~self._blocks(corners, *t_size).any(dim=1)
        return corners, context

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> MultiBlockMasks:
        """Masks for ``batch_size`` images, drawn from ``generator`` (default: torch's global RNG).

        Raises:
            ValueError: some image still keeps fewer than ``min_keep`` context patches after
                ``max_tries`` redraws of its block positions.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"MultiBlockMaskCollator.sample: batch_size must be an int >= 1, got {batch_size!r}")
        gh, gw = self.grid
        t_size = self.block_size(self.target_scale, self.target_aspect, generator)
        c_size = self.block_size(self.context_scale, self.context_aspect, generator)
        corners, context = self._draw(batch_size, t_size, c_size, generator)
        counts = context.flatten(1).sum(1)
        for _ in range(self.max_tries):
            short = (counts < self.min_keep).nonzero().flatten()
            if len(short) == 0:
                break
            new_t, new_c = self._draw(len(short), t_size, c_size, generator)
            corners[short], context[short] = new_t, new_c
            counts[short] = new_c.flatten(1).sum(1)
        if bool((counts < self.min_keep).any()):
            raise ValueError(
                f"MultiBlockMaskCollator: after max_tries={self.max_tries} redraws an image still keeps only "
                f"{int(counts.min())} context patches (< min_keep={self.min_keep}) with {self.num_targets} target "
                f"blocks of {t_size[0]}x{t_size[1]} and a {c_size[0]}x{c_size[1]} context block on grid {self.grid}; "
                "lower num_targets, target_scale or min_keep, or raise context_scale"
            )
        # Targets: the patches of each block, raster order inside it (every block of a batch has one size).
        th, tw = t_size
        offsets = (torch.arange(th)[:, None] * gw + torch.arange(tw)[None, :]).flatten()
        target_idx = corners[..., None] + offsets
        target_valid = torch.ones_like(target_idx, dtype=torch.bool)
        # Context: each image's patches in raster order, padded at the end to the longest.
        flat = context.flatten(1)
        n = gh * gw
        position = torch.arange(n)
        order = torch.where(flat, position, position + n).argsort(dim=1)
        length = int(counts.max())
        context_valid = position[None, :length] < counts[:, None]
        context_idx = torch.where(context_valid, order[:, :length], torch.zeros((), dtype=torch.long))
        return MultiBlockMasks(context_idx, context_valid, target_idx, target_valid)

    def __call__(self, batch: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Collate dataset items (images or ``(image, label)`` pairs) and add masks for them."""
        collated = default_collate(list(batch))
        if isinstance(collated, torch.Tensor):
            images, labels = collated, None
        elif isinstance(collated, (list, tuple)) and len(collated) in (1, 2) and isinstance(collated[0], torch.Tensor):
            images, labels = collated[0], (collated[1] if len(collated) == 2 else None)
        else:
            raise TypeError(
                "MultiBlockMaskCollator: dataset items must be image tensors or (image, label) pairs, got "
                f"{type(batch[0]).__name__} of {len(batch[0]) if isinstance(batch[0], (list, tuple)) else 1} element(s)"
            )
        if images.dim() != 4:
            raise ValueError(f"MultiBlockMaskCollator: images must batch to (B, C, H, W), got {tuple(images.shape)}")
        gh, gw = self.grid
        if images.shape[-2] % gh or images.shape[-1] % gw:
            raise ValueError(
                f"MultiBlockMaskCollator: images of {images.shape[-2]}x{images.shape[-1]} pixels do not split into "
                f"the {gh}x{gw} patch grid"
            )
        out = {"images": images}
        if labels is not None:
            out["labels"] = torch.as_tensor(labels)
        out.update(self.sample(len(images), self._call_generator())._asdict())
        return out

    def _call_generator(self) -> torch.Generator | None:
        """What ``__call__`` draws from: ``generator`` in the main process, a generator seeded from
        the worker's seed inside a DataLoader worker (made once per worker)."""
        info = get_worker_info()
        if info is None:
            return self.generator
        cached = getattr(self, "_worker_generator", None)
        if cached is None or cached[0] != info.seed:
            # Mixed with a constant so the masks are not the stream the worker's global RNG (seeded
            # with the same number by the DataLoader) gives the dataset's transforms.
            gen = torch.Generator().manual_seed((info.seed * 0x9E3779B97F4A7C15 + _MASK_STREAM) % (1 << 63))
            cached = self._worker_generator = (info.seed, gen)
        return cached[1]

    def __repr__(self) -> str:
        return (
            f"MultiBlockMaskCollator(grid={self.grid}, num_targets={self.num_targets}, target_scale={self.target_scale}, "
            f"target_aspect={self.target_aspect}, context_scale={self.context_scale}, min_keep={self.min_keep})"
        )
