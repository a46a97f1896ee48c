"""The image side of the command line: ``jepa train --data DIR [--model ...] [--image-size N]
[--patch-size P]`` and ``jepa evaluate --checkpoint PATH --data DIR`` (linear and kNN probes on the
folder's labels)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

#: ``--model`` choices: the ViT presets, or ``auto`` (sized for the image size and the device).
MODEL_CHOICES = ("auto", "vit_tiny", "vit_small", "vit_base", "vit_large", "vit_huge")
#: The shipped config ``jepa train --data DIR`` starts from when no ``--config`` is given.
IMAGE_CONFIG = "ijepa"


def add_train_flags(parser: argparse.ArgumentParser, positive_int: Any) -> None:
    """The image flags of ``jepa train``."""
    parser.add_argument("--data", help="folder of images: train/<class>/* (+ val/<class>/*), <class>/*, or flat; "
                        f"trains I-JEPA (config '{IMAGE_CONFIG}' unless --config)")
    parser.add_argument("--model", choices=MODEL_CHOICES, help="ViT of the I-JEPA encoder (default: auto, sized for the image size and device)")
    parser.add_argument("--image-size", type=positive_int, help="side of the square training images in pixels (default: from the folder)")
    parser.add_argument("--patch-size", type=positive_int, help="ViT patch side in pixels; must divide --image-size (default: chosen for the image size)")


def add_evaluate_flags(parser: argparse.ArgumentParser) -> None:
    """The image flags of ``jepa evaluate``."""
    parser.add_argument("--data", help="folder of labelled images: linear + kNN probes fit on its train split, scored on its val "
                        "split (a seeded 80/20 split without val/); needs an image (I-JEPA) checkpoint")


def apply_train_flags(config: Any, args: argparse.Namespace) -> None:
    """Write ``--data/--model/--image-size/--patch-size`` into ``config``."""
    if args.data is not None:
        config.data.dataset = "image_folder"
        config.data.path = str(Path(args.data).expanduser())
    if args.model is not None:
        config.model.arch = args.model
    if args.image_size is not None:
        config.data.image_size = args.image_size
    if args.patch_size is not None:
        config.model.patch_size = args.patch_size


def describe(trainer: Any) -> str:
    """One line about an image run: model, data, sizes."""
    config, model = trainer.config, trainer.model
    enc = model.encoder
    d = config.data
    where = d.path if d.dataset == "image_folder" else "the embedded digits (8x8 images)"
    return (
        f"jepa: training I-JEPA ({config.model.arch}: width {enc.embed_dim}, {len(enc.blocks)} blocks, patch {enc.patch_size}, "
        f"{enc.num_patches} patches of {d.image_size}x{d.image_size} images; predictor {model.predictor.predictor_embed_dim} wide, "
        f"{len(model.predictor.blocks)} blocks) on {where} ({len(trainer.train_loader.dataset)} train / "
        f"{len(trainer.val_loader.dataset)} val images, {d.num_workers} loader workers)"
    )


def evaluate_folder(evaluator: Any, folder: str, labels_per_class: int | None, batch_size: int = 256) -> tuple[dict, list[list[str]]]:
    """Prediction metrics on the folder's validation images (with I-JEPA masks) and, when it has
    labels, linear + kNN probes (fit on its train split, scored on its val split). Returns the
    results and the table rows. Raises ValueError for a model or folder that cannot be evaluated."""
    from torch.utils.data import DataLoader  # noqa: PLC0415

    from jepa.data import ImageFolderDataset  # noqa: PLC0415
    from jepa.trainer.images import default_mask_collator  # noqa: PLC0415

    enc = getattr(evaluator.model, "encoder", None)
    if not hasattr(enc, "image_size") or not hasattr(evaluator.model, "forward_batch"):
        raise ValueError(f"--data needs an image (I-JEPA) checkpoint; this one holds a {type(evaluator.model).__name__} of tokens")
    if enc.in_chans != 3:
        raise ValueError(f"--data: the model takes {enc.in_chans}-channel images, image folders are read as RGB (3 channels)")
    train = ImageFolderDataset(folder, enc.image_size, split="train")
    val = ImageFolderDataset(folder, enc.image_size, split="val")
    loader = DataLoader(val, batch_size=min(batch_size, 64), collate_fn=default_mask_collator(enc.grid_size, seed=0))
    results: dict = {"data": str(folder), "prediction": evaluator.evaluate(loader)}
    rows = [["metric", "value"]] + [[k, f"{v:.4f}" if isinstance(v, float) else str(v)] for k, v in results["prediction"].items()]
    if not train.classes:
        results["downstream"] = None
        rows.append(["probes", "none: the folder has no class folders"])
        return results, rows
    down = evaluator.evaluate_downstream(task="classification", train_data=train, test_data=val, method="both",
                                         labels_per_class=labels_per_class, batch_size=batch_size)
    results["downstream"] = {"task": "classification", "labels_per_class": labels_per_class,
                             "train_images": len(train), "val_images": len(val), **down}
    for method, scores in down.items():
        for name, value in scores.items():
            rows.append([f"classification {method} {name}", f"{value:.4f}"])
    return results, rows


def decode_error_line(exc: BaseException) -> str:
    """One line for an unreadable image met during training (a DataLoader re-raises a worker's error
    with the worker's traceback in the message): the line naming the file, and what to do."""
    lines = [line.strip() for line in str(exc).splitlines() if "cannot decode image file" in line]
    what = lines[-1] if lines else str(exc).splitlines()[0]
    what = what.split(": ", 1)[1] if what.startswith(("ImageDecodeError", "jepa.data.images.ImageDecodeError")) else what
    return f"{what} (fix or remove the file, or set data.on_error: skip in the config to leave unreadable files out)"
