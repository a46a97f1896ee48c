"""Baselines of the procedural shapes set (``jepa.data.synthetic``): is it hard for raw pixels and learnable?

Generates ``--train`` + ``--val`` images (seeded), then reports validation accuracy of

* ``raw_pixels_logreg`` - logistic regression on standardized raw pixels (the probe ``jepa`` uses,
  ``jepa.trainer.eval.linear_probe_accuracy``): should sit near chance (1 / classes);
* ``supervised_cnn`` - a small conv net trained with labels (flip + random-crop augmentation): shows
  the labels are learnable from the pixels;
* ``supervised_vit`` - the same with a small ``jepa.models.vision.VisionTransformer`` on
  standardized pixels + linear head on the mean token (``--vit-epochs 0``, the default, skips it).

Usage::

    python benchmarks/shapes_baselines.py --threads 1 --out bench-results/shapes_baselines.json
    python benchmarks/shapes_baselines.py --quick   (seconds: checks the script, not the baselines)
    python benchmarks/shapes_baselines.py --threads 1 --cnn-epochs 0 --vit-epochs 60 --vit-dim 64 --vit-lr 2e-3

Measured (seed 0, 1,200 train / 300 val, 32x32): raw pixels 0.107, CNN (30 epochs) 1.000, ViT
(64 wide, 4 blocks, patch 4, standardized pixels, 60 epochs) 0.693; chance 0.100.

Accuracy numbers do not depend on the machine; the seconds do (a loaded machine is slower).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from jepa.data.synthetic import make_shapes
from jepa.models.vision import VisionTransformer
from jepa.trainer.eval import linear_probe_accuracy


class SmallCNN(nn.Module):
    def __init__(self, classes: int, width: int = 32) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

        self.features = nn.Sequential(block(3, width), block(width, 2 * width), block(2 * width, 4 * width))
        self.head = nn.Linear(4 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class ViTClassifier(nn.Module):
    def __init__(self, classes: int, image_size: int, dim: int, depth: int, patch: int) -> None:
        super().__init__()
        self.vit = VisionTransformer(image_size=image_size, patch_size=patch, embed_dim=dim, depth=depth, num_heads=max(1, dim // 32))
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.vit(x).mean(dim=1))


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(x), generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    pad = F.pad(x, (2, 2, 2, 2), mode="replicate")
    dy, dx = torch.randint(0, 5, (2,), generator=g).tolist()
    return pad[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]


def train_supervised(model: nn.Module, xtr, ytr, xva, yva, epochs: int, lr: float, seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * ((len(xtr) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), 64):
            idx = perm[i : i + 64]
            loss = F.cross_entropy(model(_augment(xtr[idx], g)), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xva[i : i + 256]).argmax(1) for i in range(0, len(xva), 256)])
    return float((pred == yva).float().mean())


QUICK = {"train": 300, "val": 100, "cnn_epochs": 2}  # --quick: a smoke run of seconds, not a baseline
FULL = {"train": 1200, "val": 300, "cnn_epochs": 30}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``--quick`` shrinks the sizes the user did not set (``QUICK`` instead of ``FULL``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", type=int, default=None, help=f"training images (default {FULL['train']})")
    p.add_argument("--val", type=int, default=None, help=f"validation images (default {FULL['val']})")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cnn-epochs", type=int, default=None, help=f"CNN epochs (default {FULL['cnn_epochs']}; 0 skips it)")
    p.add_argument("--vit-epochs", type=int, default=0)
    p.add_argument("--vit-dim", type=int, default=128)
    p.add_argument("--vit-depth", type=int, default=4)
    p.add_argument("--vit-patch", type=int, default=4)
    p.add_argument("--vit-lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK['train']} train / {QUICK['val']} val images, {QUICK['cnn_epochs']} CNN epochs "
                        "(the accuracies then mean little)")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    xtr, ytr = make_shapes(args.train, args.image_size, seed=args.seed, split="train", num_classes=args.classes)
    xva, yva = make_shapes(args.val, args.image_size, seed=args.seed, split="val", num_classes=args.classes)
    results: dict[str, float] = {"chance": 1.0 / args.classes, "generate_s": time.perf_counter() - t0}
    xtr_f, xva_f = xtr.float() / 255, xva.float() / 255
    t0 = time.perf_counter()
    results["raw_pixels_logreg"] = linear_probe_accuracy(xtr_f.flatten(1), ytr, xva_f.flatten(1), yva)
    results["raw_pixels_logreg_s"] = time.perf_counter() - t0
    if args.cnn_epochs:
        t0 = time.perf_counter()
        results["supervised_cnn"] = train_supervised(SmallCNN(args.classes), xtr_f, ytr, xva_f, yva, args.cnn_epochs, 3e-3, args.seed)
        results["supervised_cnn_s"] = time.perf_counter() - t0
    if args.vit_epochs:
        t0 = time.perf_counter()
        vit = ViTClassifier(args.classes, args.image_size, args.vit_dim, args.vit_depth, args.vit_patch)
        # standardized pixels (per channel, train statistics): the CNN has batch norm, the ViT does not
        mean, std = xtr_f.mean(dim=(0, 2, 3), keepdim=True), xtr_f.std(dim=(0, 2, 3), keepdim=True)
        results["supervised_vit"] = train_supervised(
            vit, (xtr_f - mean) / std, ytr, (xva_f - mean) / std, yva, args.vit_epochs, args.vit_lr, args.seed
        )
        results["supervised_vit_s"] = time.perf_counter() - t0
    print(f"shapes: {args.train} train / {args.val} val, {args.image_size}x{args.image_size}, {args.classes} classes")
    print("| name | val accuracy | seconds |\n|---|---|---|")
    for name in ("raw_pixels_logreg", "supervised_cnn", "supervised_vit"):
        if name in results:
            print(f"| {name} | {results[name]:.3f} | {results[name + '_s']:.1f} |")
    print(f"| chance | {results['chance']:.3f} | |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2))


if __name__ == "__main__":
    main()
