"""The default experiment: train a JEPA from a config, then probe it against the same
architecture at random init and against the raw input (what ``jepa train`` and
``benchmarks/quality.py`` / ``benchmarks/quality_images.py`` run).

Digits: probes fit on the digits train split, scored on its test split. Image runs
(:mod:`jepa.trainer.images`): fit on the training images, scored on the validation images (the
folder's ``val`` split, or its seeded 80/20 split), both through the evaluation transform.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from jepa import io as jio
from jepa.config import Config
from jepa.data import load_digits_split
from jepa.trainer.builders import model_from_config, recipe_name
from jepa.trainer.callbacks import CollapseMonitor, LiDAR, OnlineProbe
from jepa.trainer.checkpoints import model_from_checkpoint_state
from jepa.trainer.eval import effective_rank, probe_report
from jepa.trainer.image_probes import encode_images, image_probe_report
from jepa.trainer.images import image_data, image_model, is_image_run
from jepa.trainer.trainer import JEPATrainer

__all__ = ["build_probe_run", "run_health", "train_and_probe"]


def run_health(trainer: JEPATrainer, train_seconds: float | None = None) -> dict[str, Any]:
    """The recipe, what ``best_model.pt`` followed, and the monitors' last values of a trained run:
    ``{"recipe": {...}, "best_model": {"monitor", "mode", "value"}, "monitors": {"val_accuracy",
    "val_knn_accuracy", "rankme", "lidar"}}`` (a monitor that did not run is absent).

    With ``train_seconds`` (the wall time of ``trainer.train()``) and an online probe that ran, also
    ``"probe_cost": {"probe_seconds", "epoch_seconds", "fraction_of_epoch"}``: the probe's mean seconds per
    validation against the mean seconds of an epoch (training, validation and probe included), both
    of this process: after a resume, of the epochs it trained."""
    config = trainer.config
    monitors: dict[str, float] = {}
    cost: dict[str, float] = {}
    for cb in trainer.callbacks:
        if isinstance(cb, OnlineProbe) and cb.records:
            monitors["val_accuracy"] = cb.records[-1]["val_accuracy"]
            monitors["val_knn_accuracy"] = cb.records[-1]["val_knn_accuracy"]
            # the epochs this process trained (a resumed run's earlier epochs are not in train_seconds)
            steps_per_epoch = getattr(trainer, "total_steps", 0) / max(getattr(trainer, "max_epochs", 0) or 1, 1)
            epochs = (trainer.global_step - cb.start_step) / steps_per_epoch if steps_per_epoch else 0
            if train_seconds is not None and epochs > 0:
                probe = sum(r["seconds"] for r in cb.records) / len(cb.records)
                epoch = train_seconds / epochs
                cost = {"probe_seconds": probe, "epoch_seconds": epoch, "fraction_of_epoch": probe / epoch}
        elif isinstance(cb, LiDAR) and cb.records:
            monitors["lidar"] = cb.records[-1]["lidar"]
        elif isinstance(cb, CollapseMonitor) and cb.records:
            monitors["rankme"] = cb.records[-1]["effective_rank"]
    monitor = trainer.best_monitor if trainer.best_monitor != "loss" else ("val_loss" if trainer.history.get("val_loss") else "train_loss")
    recipe = {"name": recipe_name(config), "target_encoder": config.model.target_encoder, "regularizer": config.loss.regularizer,
              "regularizer_weight": config.loss.regularizer_weight} if config is not None else {}
    best = {"monitor": monitor, "mode": trainer.best_mode, "value": trainer.best_score if trainer.save_best else None}
    out = {"recipe": recipe, "best_model": best, "monitors": monitors}
    if cost:
        out["probe_cost"] = cost
    return out


def build_probe_run(config: Config, *, distributed: bool = False) -> tuple[JEPATrainer, torch.nn.Module]:
    """The trainer of ``config`` and a random-init twin of its model (same architecture, same seed,
    hence the same initial weights). ``distributed``: the trainer joins the torchrun process group."""
    trainer = JEPATrainer(config, distributed=distributed)
    config = trainer.config  # an image run's sizes are resolved there
    torch.manual_seed(config.training.seed)  # JEPATrainer(config) seeds alike before building its model
    if is_image_run(config):
        enc = trainer.model.encoder.config
        random_init = image_model(config, enc["in_chans"], enc["pixel_mean"], enc["pixel_std"])
    else:
        train_set = trainer.train_loader.dataset
        random_init = model_from_config(config, input_dim=train_set.token_dim, num_tokens=train_set.num_tokens)
    return trainer, random_init.to(trainer.device)


def _image_report(trainer: JEPATrainer, model: torch.nn.Module, random_init: torch.nn.Module, labels_per_class: int) -> dict[str, Any]:
    config = trainer.config
    data = image_data(config)
    workers = config.data.num_workers or 0
    if data.labelled:
        return image_probe_report(model, random_init, data.probe_train, data.probe_test,
                                  labels_per_class=labels_per_class, seed=config.training.seed, num_workers=workers)
    z, _ = encode_images(model, data.probe_test, device=trainer.device, num_workers=workers)
    return {"probe": None, "effective_rank": effective_rank(z), "embedding_dim": int(z.shape[1]),
            "notes": ["the images have no class labels (a flat folder): no probes"]}


def _probed_model(trainer: JEPATrainer) -> torch.nn.Module:
    """The trained model to probe on this rank: the trainer's own, or under FSDP (no rank holds it
    whole, and only rank 0 probes) the model of ``last.pt``, which every rank wrote at the end of
    ``train()``, assembled from its shards."""
    if trainer.parallel is None or not trainer.parallel.sharded:
        return trainer.model
    path = Path(trainer.save_dir) / "last.pt"
    if not trainer.save_last or not path.is_file():
        raise RuntimeError(f"probing a model trained with strategy='fsdp' needs its last.pt (save_last=True); {str(path)!r} is missing")
    return model_from_checkpoint_state(jio.load(path, map_location="cpu"), source=str(path)).to(trainer.device).eval()


def train_and_probe(trainer: JEPATrainer, random_init: torch.nn.Module, labels_per_class: int = 10) -> dict[str, Any]:
    """Train (closing the trainer's logger at the end), then probe: :func:`~jepa.trainer.eval.probe_report`
    on the digits split of the config, or :func:`~jepa.trainer.image_probes.image_probe_report` for an
    image run (``probe`` is None for unlabelled images). Returns ``history``, ``report`` and ``train_seconds``."""
    config = trainer.config
    torch.manual_seed(config.training.seed + 1)
    start = time.perf_counter()
    try:
        history = trainer.train()
    finally:
        if trainer.logger is not None and hasattr(trainer.logger, "close"):
            trainer.logger.close()
    train_seconds = time.perf_counter() - start
    if is_image_run(config):
        report = _image_report(trainer, _probed_model(trainer), random_init, labels_per_class)
    else:
        tr = load_digits_split("train", patch=config.data.patch_size, seed=config.data.split_seed)
        te = load_digits_split("test", patch=config.data.patch_size, seed=config.data.split_seed)
        report = probe_report(
            _probed_model(trainer), random_init, tr.tokens, tr.labels, te.tokens, te.labels, tr.images, te.images,
            labels_per_class=labels_per_class, seed=config.training.seed,
        )
    report.update(run_health(trainer, train_seconds))
    return {"history": history, "report": report, "train_seconds": train_seconds}
