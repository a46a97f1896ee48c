"""Config -> objects for image runs (I-JEPA): sizes, datasets, loaders, model and loss.

An image run is a config whose ``model.arch`` is set (``auto`` or a ViT preset) or whose
``data.dataset`` is ``image_folder``. :func:`resolve_image_config` fills in what the config leaves
to be chosen (image size from the folder, patch size, the model for ``arch: auto``), so the
``config.yaml`` of a run says what ran; :func:`image_data` builds the datasets, :func:`image_model`
the :class:`~jepa.models.IJEPA`, :func:`image_loaders` the loaders, :func:`image_loss` the
:class:`~jepa.trainer.losses.IJEPALoss`.

Randomness (what makes DDP and exact resume work with masks drawn in DataLoader workers):

* the training loader has its own ``torch.Generator``, seeded from ``(training.seed, rank)``: it
  shuffles (single process) and draws the base seed of the workers at every epoch, from which each
  worker seeds its transforms and its masks (:class:`~jepa.data.MultiBlockMaskCollator`); without
  workers the collator draws from a second generator seeded the same way. So masks differ per rank,
  per worker and per epoch, and both generators are saved in checkpoints (``rng["loaders"]``): a
  resumed run, mid-epoch included, draws the same masks as an uninterrupted one;
* the validation loader starts every pass from the same generator states
  (:class:`RepeatableLoader`), and its images go through the deterministic evaluation transform:
  ``validate()`` gives the same number every time;
* under DDP both loaders are built with a :class:`~torch.utils.data.DistributedSampler` here (the
  trainer keeps such loaders as they are).
"""

from __future__ import annotations

import copy
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from jepa.config import Config
from jepa.data import (
    ImageFolderDataset,
    MultiBlockMaskCollator,
    TensorImageDataset,
    eval_transform,
    load_digits_split,
    scan_image_folder,
    train_transform,
)
from jepa.models import IJEPA, Projector
from jepa.models.vision import VIT_PRESETS
from jepa.trainer.checks import check_choice, check_int, check_number
from jepa.trainer.fixed_views import sample_seed
from jepa.trainer.losses import IJEPALoss
from jepa.trainer.recipes import build_regularizer
from jepa.trainer.splits import stratified_holdout

__all__ = [
    "ARCHS",
    "IMAGE_DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ONLINE_PROBE_HOLDOUT",
    "ImageData",
    "RepeatableLoader",
    "auto_arch",
    "auto_patch_size",
    "check_masks",
    "default_mask_collator",
    "default_num_workers",
    "image_data",
    "image_loaders",
    "image_loss",
    "image_model",
    "is_image_run",
    "mask_collator",
    "pixel_statistics",
    "resolve_image_config",
]

#: ``model.arch`` values of image runs.
ARCHS = ("auto", *VIT_PRESETS)
#: ``data.dataset`` values an image run reads (digits: the embedded 8x8 digits as 1-channel images).
IMAGE_DATASETS = ("image_folder", "digits")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZE = ("dataset", "imagenet", "none")
#: Images read to estimate the per-channel statistics with ``data.normalize: dataset``.
STATS_SAMPLE = 2000
ONLINE_PROBE_HOLDOUT = 0.1  # of every class of a folder's training images: what the online probe scores
_DIGITS_SIZE = 8
_MAX_AUTO_SIZE = 224


def is_image_run(config: Config) -> bool:
    """Whether ``config`` trains I-JEPA on images (``model.arch`` set or an ``image_folder`` dataset)."""
    return config.model.arch is not None or config.data.dataset == "image_folder"


# ----------------------------------------------------------------------------------- sizes
def _folder_image_size(path: str) -> int:
    """Median shorter side of up to 64 images of the folder, at most 224, down to a multiple of 8."""
    from PIL import Image  # noqa: PLC0415  (a dependency of jepa.data; only sizes are read, no decoding)

    samples = scan_image_folder(path)["train"]
    step = max(1, len(samples) // 64)
    sides = []
    for file, _ in samples[::step][:64]:
        try:
            with Image.open(file) as img:
                sides.append(min(img.size))
        except Exception:  # noqa: BLE001  (an unreadable file is reported by the dataset, with its name)
            continue
    if not sides:
        raise ValueError(f"data.path={path!r}: none of the sampled files opens as an image; set data.image_size")
    side = min(_MAX_AUTO_SIZE, int(statistics.median(sides)))
    return max(8, side - side % 8)


def auto_patch_size(image_size: int) -> int:
    """A patch side for ``image_size``: 16 from 192 pixels up (14 when 16 does not divide it), else the
    divisor of ``image_size`` closest to ``image_size / 8`` (an 8x8 grid: 32 -> 4, 64 -> 8, 8 -> 1)."""
    check_int("image_size", image_size, minimum=1, noun="")
    divisors = [p for p in range(1, image_size + 1) if image_size % p == 0]
    goal = 16 if image_size >= 192 else image_size / 8
    if image_size >= 192 and image_size % 14 == 0 and image_size % 16:
        return 14
    return min(divisors, key=lambda p: (abs(p - goal), -p))


def auto_arch(image_size: int, patch_size: int, device: torch.device) -> tuple[str, dict[str, int]]:
    """``(preset, overrides)`` of the ViT ``model.arch: auto`` trains, for the image size and the device.

    On a GPU: ``vit_base`` from 192 pixels on devices with at least 40 GB, ``vit_small`` from 96
    pixels, else ``vit_tiny``. On the CPU, where a ViT-Ti/16 step on 64 tokens already takes
    seconds, smaller ViTs (all written as ``vit_tiny`` with overrides): images of at most 16 pixels
    a ViT 64 wide with 4 blocks (predictor 32 wide, 2 blocks); grids of up to 64 tokens (32-pixel
    images in 4-pixel patches) 128 wide with 6 blocks and 4 heads (predictor 64 wide, 3 blocks),
    which trains 30 epochs of 1,200 images in minutes on 2 cores; larger grids ``vit_tiny``'s width
    (192) with 4 blocks (predictor 96 wide, 2 blocks).
    """
    tokens = (image_size // patch_size) ** 2
    if device.type == "cuda":
        memory = torch.cuda.get_device_properties(device).total_memory / 2**30
        if image_size >= 192 and memory >= 40:
            return "vit_base", {}
        return ("vit_small", {}) if image_size >= 96 else ("vit_tiny", {})
    if image_size <= 16:
        return "vit_tiny", {"embed_dim": 64, "depth": 4, "num_heads": 4, "predictor_embed_dim": 32, "predictor_depth": 2}
    if tokens <= 64:
        return "vit_tiny", {"embed_dim": 128, "depth": 6, "num_heads": 4, "predictor_embed_dim": 64, "predictor_depth": 3}
    return "vit_tiny", {"depth": 4, "predictor_embed_dim": 96, "predictor_depth": 2}


def default_num_workers() -> int:
    """DataLoader workers of an image run with ``data.num_workers: null``: half the CPU cores the
    process may use (at least 1, at most 8), the rest left to the training step."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores // 2))


def _check_image_settings(config: Config) -> None:
    d, m = config.data, config.model
    check_choice("data.dataset", d.dataset, IMAGE_DATASETS)
    if m.arch is not None:
        check_choice("model.arch", m.arch, ARCHS)
    check_choice("data.normalize", d.normalize, NORMALIZE)
    check_choice("data.on_error", d.on_error, ("raise", "skip"))
    check_int("data.image_size", d.image_size, minimum=1, optional=True, noun="")
    check_int("model.patch_size", m.patch_size, minimum=1, optional=True, noun="")
    check_int("data.num_workers", d.num_workers, minimum=0, optional=True, noun="")
    check_number("data.val_fraction", d.val_fraction, low=0, high=1, low_open=True, high_open=True, noun="")
    check_number("data.color_jitter", d.color_jitter, low=0, noun="")
    if len(d.crop_scale) != 2 or not 0 < d.crop_scale[0] <= d.crop_scale[1] <= 1:
        raise ValueError(f"data.crop_scale must be [min, max] with 0 < min <= max <= 1, got {d.crop_scale!r}")
    if d.dataset == "image_folder":
        if not d.path:
            raise ValueError("data.dataset=image_folder needs data.path (the folder of images; --data DIR on the command line)")
        if not Path(d.path).expanduser().exists():
            raise FileNotFoundError(f"data.path: the folder {d.path!r} does not exist")


def resolve_image_config(config: Config, device: torch.device) -> Config:
    """Fill in what an image run's ``config`` leaves to be chosen, in place; returns it.

    ``data.image_size`` (None: from the folder's images, 8 for digits), ``model.patch_size``
    (None: :func:`auto_patch_size`; the image size must be a multiple of it), ``model.arch``
    (None or ``auto``: :func:`auto_arch` for the device, written with its overrides into
    ``model.vit``), ``data.num_workers`` (None: :func:`default_num_workers`).

    Raises:
        ValueError: an unknown dataset/arch/normalisation, a missing ``data.path``, an image size
            that is not a multiple of the patch size.
        FileNotFoundError: ``data.path`` does not exist.
    """
    _check_image_settings(config)
    d, m = config.data, config.model
    if d.image_size is None:
        d.image_size = _DIGITS_SIZE if d.dataset == "digits" else _folder_image_size(d.path)
    if m.patch_size is None:
        m.patch_size = auto_patch_size(d.image_size)
    if d.image_size % m.patch_size:
        raise ValueError(
            f"the image size {d.image_size} (data.image_size / --image-size) is not divisible by the patch size "
            f"{m.patch_size} (model.patch_size / --patch-size); choose an image size that is a multiple of the patch size"
        )
    if m.arch in (None, "auto"):
        arch, overrides = auto_arch(d.image_size, m.patch_size, device)
        m.arch = arch
        for key, value in overrides.items():
            if getattr(m.vit, key) is None:
                setattr(m.vit, key, value)
    if d.num_workers is None:
        d.num_workers = default_num_workers()
    return config


# ----------------------------------------------------------------------------------- data
@dataclass
class ImageData:
    """The datasets of an image run.

    Attributes:
        train: training images (random resized crop, flip/jitter as configured), ``(image, label)``.
        val: validation images (evaluation transform), ``(image, label)``: the validation loss and
            the split the probes are scored on.
        probe_train: the training images through the evaluation transform (what probes are fit on).
        probe_test: what probes are scored on (``val`` for folders; the digits test split for digits).
        in_chans: image channels (3, or 1 for digits).
        labelled: whether the images have class labels (probes run only then).
        online_probe: ``(fit, score)`` of the :class:`~jepa.trainer.callbacks.OnlineProbe`, the
            probe ``best_model.pt`` follows, kept apart from ``probe_test`` (what the final probes
            report), so the checkpoint is not chosen on the numbers it is judged by: for a folder
            :data:`ONLINE_PROBE_HOLDOUT` of every class of the training images is scored and the
            rest fitted; for digits the validation hold-out is scored and the rest of train fitted
            (both through the evaluation transform). None: no labels.
    """

    train: Dataset
    val: Dataset
    probe_train: Dataset
    probe_test: Dataset
    in_chans: int
    labelled: bool
    online_probe: tuple[Dataset, Dataset] | None = None


def _train_tf(config: Config) -> Any:
    d = config.data
    return train_transform(d.image_size, scale=tuple(d.crop_scale), flip=d.flip, color_jitter=d.color_jitter)


def _digits_images(config: Config) -> ImageData:
    d = config.data
    train, test = load_digits_split("train", seed=d.split_seed), load_digits_split("test", seed=d.split_seed)
    kept, held = stratified_holdout(train.labels.numpy(), 0.1, d.split_seed)
    images, labels = train.images[:, None], train.labels
    ev = eval_transform(d.image_size)

    def subset(index, transform):
        return TensorImageDataset(images[index], labels[index], transform=transform)

    return ImageData(
        train=subset(kept, _train_tf(config)), val=subset(held, ev),
        probe_train=TensorImageDataset(images, labels, transform=ev),
        probe_test=TensorImageDataset(test.images[:, None], test.labels, transform=ev),
        in_chans=1, labelled=True, online_probe=(subset(kept, ev), subset(held, ev)),
    )


def image_data(config: Config) -> ImageData:
    """The datasets of a resolved image run (:func:`resolve_image_config`)."""
    d = config.data
    if d.dataset == "digits":
        return _digits_images(config)
    common = {"val_fraction": d.val_fraction, "split_seed": d.split_seed, "on_error": d.on_error}
    train = ImageFolderDataset(d.path, d.image_size, split="train", transform=_train_tf(config), **common)
    val = ImageFolderDataset(d.path, d.image_size, split="val", **common)
    probe_train = copy.copy(train)  # the same files (after any skipped), through the evaluation transform
    probe_train.transform = eval_transform(d.image_size)
    labelled = bool(train.classes)
    online = None
    if labelled:
        fit, score = stratified_holdout(np.asarray(probe_train.labels), ONLINE_PROBE_HOLDOUT, d.split_seed)
        online = (Subset(probe_train, fit.tolist()), Subset(probe_train, score.tolist()))
    return ImageData(train=train, val=val, probe_train=probe_train, probe_test=val, in_chans=3, labelled=labelled,
                     online_probe=online)


def pixel_statistics(config: Config, data: ImageData) -> tuple[list[float] | None, list[float] | None]:
    """Per-channel ``(mean, std)`` the model standardises its input with (``data.normalize``):
    ``dataset``: of up to :data:`STATS_SAMPLE` training images (evaluation transform, an evenly
    spaced sample); ``imagenet``: ImageNet's; ``none``: ``(None, None)``."""
    how = config.data.normalize
    if how == "none":
        return None, None
    if how == "imagenet":
        if data.in_chans == 1:
            return [sum(IMAGENET_MEAN) / 3], [sum(IMAGENET_STD) / 3]
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    ds = data.probe_train
    step = max(1, len(ds) // STATS_SAMPLE)
    total = torch.zeros(data.in_chans, dtype=torch.float64)
    squares = torch.zeros(data.in_chans, dtype=torch.float64)
    count = 0
    for i in range(0, len(ds), step):
        x = ds[i][0].double().flatten(1)
        total += x.sum(1)
        squares += (x * x).sum(1)
        count += x.shape[1]
    mean = total / count
    std = (squares / count - mean * mean).clamp(min=0).sqrt().clamp(min=1e-3)
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


# ----------------------------------------------------------------------------------- model and loss
def image_model(config: Config, in_chans: int, pixel_mean: list[float] | None, pixel_std: list[float] | None) -> IJEPA:
    """The :class:`~jepa.models.IJEPA` of a resolved image run: the ``model.arch`` preset with
    ``model.patch_size`` and the ``model.vit`` overrides, the target encoder (``model.target_encoder``)
    and EMA settings of ``model``, and a projector (``model.projector_*``) when the loss regularises
    (:attr:`~jepa.trainer.losses.IJEPALoss.regularizes`)."""
    m, v = config.model, config.model.vit
    check_choice("model.arch", m.arch, tuple(VIT_PRESETS))
    encoder_overrides = {k: getattr(v, k) for k in ("embed_dim", "depth", "num_heads") if getattr(v, k) is not None}
    model = IJEPA.from_preset(
        m.arch, image_size=config.data.image_size, patch_size=m.patch_size, in_chans=in_chans,
        predictor_embed_dim=v.predictor_embed_dim, predictor_depth=v.predictor_depth, predictor_num_heads=v.predictor_num_heads,
        target_encoder=m.target_encoder, momentum=m.ema_momentum, momentum_end=m.ema_momentum_end,
        pixel_mean=pixel_mean, pixel_std=pixel_std, **encoder_overrides,
    )
    if image_loss(config).regularizes and m.projector_hidden_dim and m.projector_dim:
        projector = Projector(model.encoder.embed_dim, m.projector_hidden_dim, m.projector_dim)
        model = IJEPA(model.encoder, model.predictor, target_encoder=m.target_encoder, momentum=m.ema_momentum,
                      momentum_end=m.ema_momentum_end, projector=projector)
    return model


def image_loss(config: Config) -> IJEPALoss:
    """The :class:`~jepa.trainer.losses.IJEPALoss` of ``config.loss`` (its ``type``, whether targets are
    layer-normed, the regularizer ``loss.regularizer`` with its weights) and ``model.target_encoder``
    (``none``: no stop-gradient on the target tokens, LeJEPA-style)."""
    lc = config.loss
    return IJEPALoss(loss=lc.type, normalize_target=lc.normalize_target, var_weight=lc.var_weight,
                     cov_weight=lc.cov_weight, var_gamma=lc.var_gamma, regularizer=build_regularizer(config),
                     regularizer_weight=lc.regularizer_weight, stop_gradient=config.model.target_encoder != "none")


# ----------------------------------------------------------------------------------- loaders
def _min_keep(grid: tuple[int, int]) -> int:
    """I-JEPA's ``min_keep`` (10), capped at a quarter of the grid for small grids."""
    return max(1, min(10, grid[0] * grid[1] // 4))


def default_mask_collator(grid: tuple[int, int], seed: int = 0) -> MultiBlockMaskCollator:
    """I-JEPA's default multi-block masks on ``grid`` (``min_keep`` capped for small grids), drawn in
    the main process from a generator seeded with ``seed``: what ``jepa evaluate --data`` measures
    the prediction loss with."""
    return MultiBlockMaskCollator(grid=tuple(grid), min_keep=_min_keep(tuple(grid)), generator=_generator(seed))


def mask_collator(config: Config, generator: torch.Generator | None = None) -> MultiBlockMaskCollator:
    """The multi-block mask collator of ``data.masks`` for the run's patch grid (``min_keep`` null:
    I-JEPA's 10, capped at a quarter of the grid for small grids)."""
    mc = config.data.masks
    side = config.data.image_size // config.model.patch_size
    min_keep = mc.min_keep if mc.min_keep is not None else _min_keep((side, side))
    return MultiBlockMaskCollator(
        grid=(side, side), num_targets=mc.num_targets, target_scale=tuple(mc.target_scale),
        target_aspect=tuple(mc.target_aspect), context_scale=tuple(mc.context_scale), min_keep=min_keep,
        generator=generator,
    )


def check_masks(config: Config, batch_size: int, tries: int = 8) -> None:
    """Draw a few batches of masks before training (seeded, in this process): settings under which
    the context keeps fewer than ``min_keep`` patches fail here, with the settings named, instead
    of in a DataLoader worker mid-run."""
    mc = config.data.masks
    side = config.data.image_size // config.model.patch_size
    gen = _generator(0)
    try:
        collator = mask_collator(config)
        for _ in range(tries):
            collator.sample(min(batch_size, 64), gen)
    except ValueError as exc:
        raise ValueError(
            f"data.masks (num_targets={mc.num_targets}, target_scale={mc.target_scale}, context_scale={mc.context_scale}, "
            f"min_keep={mc.min_keep if mc.min_keep is not None else _min_keep((side, side))}) on a {side}x{side} patch grid: {exc}"
        ) from None


class RepeatableLoader(DataLoader):
    """A DataLoader whose every pass draws the same random numbers: when iteration starts, its
    ``generator`` and its ``collate_fn``'s are reset to their states at construction. For validation
    with random masks: ``validate()`` twice gives the same loss (with the same number of workers)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._initial = {"loader": self.generator.get_state() if self.generator is not None else None}
        collate_gen = getattr(self.collate_fn, "generator", None)
        if isinstance(collate_gen, torch.Generator):
            self._initial["collate"] = collate_gen.get_state()

    def __iter__(self):  # noqa: D105
        if self._initial["loader"] is not None:
            self.generator.set_state(self._initial["loader"])
        if "collate" in self._initial:
            self.collate_fn.generator.set_state(self._initial["collate"])
        return super().__iter__()


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def image_loaders(config: Config, data: ImageData, rank: int = 0, world_size: int = 1) -> tuple[DataLoader, DataLoader]:
    """Training loader (shuffled, incomplete last batch dropped, masks per rank/worker/epoch) and
    validation loader (in order, repeatable) of a resolved image run; with ``world_size > 1`` both
    shard the data with a :class:`~torch.utils.data.DistributedSampler` for ``rank``."""
    t, d = config.training, config.data
    check_int("training.batch_size", t.batch_size, minimum=1, noun="")
    per_rank = math.ceil(len(data.train) / world_size) if world_size > 1 else len(data.train)
    if per_rank < t.batch_size:
        raise ValueError(
            f"training.batch_size={t.batch_size} is larger than the training set ({len(data.train)} images"
            + (f", {per_rank} per rank" if world_size > 1 else "") + "); lower --batch-size"
        )
    check_masks(config, t.batch_size)
    seed = t.seed
    streams = {name: sample_seed(seed, 4 * rank + i) for i, name in enumerate(("loader", "masks", "val_loader", "val_masks"))}
    workers = {"num_workers": d.num_workers}
    if world_size > 1:
        train_sampler = DistributedSampler(data.train, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
        val_sampler = DistributedSampler(data.val, num_replicas=world_size, rank=rank, shuffle=False, drop_last=False)
        train = DataLoader(data.train, batch_size=t.batch_size, sampler=train_sampler, drop_last=True,
                           collate_fn=mask_collator(config, _generator(streams["masks"])), generator=_generator(streams["loader"]), **workers)
        val = RepeatableLoader(data.val, batch_size=t.batch_size, sampler=val_sampler,
                               collate_fn=mask_collator(config, _generator(streams["val_masks"])), generator=_generator(streams["val_loader"]), **workers)
        return train, val
    train = DataLoader(data.train, batch_size=t.batch_size, shuffle=True, drop_last=True,
                       collate_fn=mask_collator(config, _generator(streams["masks"])), generator=_generator(streams["loader"]), **workers)
    val = RepeatableLoader(data.val, batch_size=t.batch_size, shuffle=False,
                           collate_fn=mask_collator(config, _generator(streams["val_masks"])), generator=_generator(streams["val_loader"]), **workers)
    return train, val
