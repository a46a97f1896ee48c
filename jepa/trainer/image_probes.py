"""Linear probes of an image run on its labels: the pretrained ViT vs the same ViT at random init
vs the raw pixels (what ``jepa train --data DIR`` reports; the digits run's
:func:`~jepa.trainer.eval.probe_report` with datasets of images instead of tensors in memory)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from jepa.trainer.eval import effective_rank, linear_probe_accuracy
from jepa.trainer.modes import evaluating

__all__ = ["RAW_PIXELS_MAX_SIDE", "encode_images", "image_probe_report", "min_class_count"]

#: The raw-pixel baseline reads images at most this many pixels on a side (larger ones are
#: area-averaged down to it, so the probe stays a few thousand features).
RAW_PIXELS_MAX_SIDE = 64


def encode_images(model: nn.Module | None, dataset: Dataset, *, batch_size: int = 256, device: torch.device | str = "cpu",
                  num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features, labels)`` of every ``(image, label)`` item of ``dataset``, in order: the model's
    pooled embedding (``model.embed``, eval mode, no gradient) or, with ``model=None``, the raw
    pixels (flattened; downsampled to :data:`RAW_PIXELS_MAX_SIDE` when larger). CPU tensors."""
    feats, labels = [], []
    context = evaluating(model) if model is not None else torch.no_grad()
    with context, torch.no_grad():
        for images, y in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers):
            if model is None:
                side = max(images.shape[-2:])
                if side > RAW_PIXELS_MAX_SIDE:
                    scale = RAW_PIXELS_MAX_SIDE / side
                    size = (max(1, round(images.shape[-2] * scale)), max(1, round(images.shape[-1] * scale)))
                    images = F.interpolate(images, size=size, mode="area")
                feats.append(images.flatten(1).float())
            else:
                feats.append(model.embed(images.to(device)).float().cpu())
            labels.append(torch.as_tensor(y))
    return torch.cat(feats), torch.cat(labels)


def min_class_count(labels: torch.Tensor) -> int:
    """Samples of the rarest class."""
    return int(torch.bincount(labels[labels >= 0]).min()) if len(labels) else 0


def image_probe_report(
    pretrained: nn.Module,
    random_init: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    *,
    labels_per_class: int = 10,
    seed: int = 0,
    batch_size: int = 256,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Linear-probe accuracy (logistic regression on standardised features, fit on ``train_set``,
    scored on ``test_set``) of the pretrained encoder, the same architecture at random init and the
    raw pixels, with ``labels_per_class`` labels per class and with all labels, plus the effective
    rank of the pretrained test embeddings: the layout of :func:`~jepa.trainer.eval.probe_report`
    (``{"probe": {"pretrained"|"random_init"|"raw_input": {"<k>_per_class", "all"}},
    "effective_rank", "embedding_dim"}``).

    A class with fewer than ``labels_per_class`` training images makes the ``<k>_per_class`` entries
    None (and ``notes`` says so); the ``all`` entries are always computed.
    """
    key = f"{labels_per_class}_per_class"
    device = next(pretrained.parameters()).device
    few = 0
    probe: dict[str, dict[str, float | None]] = {}
    report: dict[str, Any] = {}
    for name, model in (("pretrained", pretrained), ("random_init", random_init), ("raw_input", None)):
        ztr, ytr = encode_images(model, train_set, batch_size=batch_size, device=device, num_workers=num_workers)
        zte, yte = encode_images(model, test_set, batch_size=batch_size, device=device, num_workers=num_workers)
        if name == "pretrained":
            report.update(effective_rank=effective_rank(zte), embedding_dim=int(zte.shape[1]))
        few = min_class_count(ytr)
        probe[name] = {
            key: linear_probe_accuracy(ztr, ytr, zte, yte, labels_per_class, seed) if few >= labels_per_class else None,
            "all": linear_probe_accuracy(ztr, ytr, zte, yte, None, seed),
        }
    if few < labels_per_class:
        report["notes"] = [f"the rarest class has {few} training images (< {labels_per_class}): no {key} probe"]
    return {"probe": probe, **report}
