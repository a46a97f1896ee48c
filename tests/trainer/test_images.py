"""Config -> objects for image runs: sizes resolved, datasets, model, loaders and their randomness."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from jepa.config import config_from_dict
from jepa.data import load_digits_split, write_shapes_folder
from jepa.models import IJEPA
from jepa.trainer import JEPATrainer
from jepa.trainer.checkpoints import rng_state, set_rng_state
from jepa.trainer.experiment import build_probe_run
from jepa.trainer.images import (
    RepeatableLoader,
    auto_arch,
    auto_patch_size,
    image_data,
    image_loaders,
    is_image_run,
    pixel_statistics,
    resolve_image_config,
)
from jepa.trainer.losses import IJEPALoss
from jepa.trainer.weight_decay import WeightDecaySchedule, cosine_weight_decay

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_shapes_folder(tmp_path_factory.mktemp("shapes") / "images", num_train=40, num_val=12, image_size=16, num_classes=4)


def _config(folder, **data):
    return config_from_dict({
        "model": {"vit": {"embed_dim": 32, "depth": 1, "num_heads": 2, "predictor_embed_dim": 16, "predictor_depth": 1}},
        "data": {"dataset": "image_folder", "path": str(folder), "num_workers": 0, "masks": {"num_targets": 2}, **data},
        "training": {"epochs": 1, "batch_size": 8, "device": "cpu"},
        "logging": {"progress_bar": False, "loggers": [], "collapse_check_every_n_steps": 0},
    })


def test_sizes_left_open_are_resolved_from_the_folder_and_device(folder, tmp_path):
    cfg = resolve_image_config(_config(folder), CPU)
    assert is_image_run(cfg) and cfg.data.image_size == 16 and cfg.model.patch_size == 2 and cfg.model.arch == "vit_tiny"
    assert cfg.model.vit.embed_dim == 32  # the config's own overrides win over auto's
    big = tmp_path / "big"
    big.mkdir()
    for i, size in enumerate([(300, 200), (260, 240), (500, 410)]):  # median shorter side 240 -> 224 at most
        Image.new("RGB", size, (i * 40, 0, 0)).save(big / f"{i}.png")
    assert resolve_image_config(_config(big), CPU).data.image_size == 224
    assert [auto_patch_size(s) for s in (8, 16, 32, 64, 96, 224, 448, 28)] == [1, 2, 4, 8, 12, 16, 16, 4]
    assert auto_patch_size(210) == 14
    assert auto_arch(32, 4, CPU) == ("vit_tiny", {"embed_dim": 128, "depth": 6, "num_heads": 4, "predictor_embed_dim": 64,
                                                  "predictor_depth": 3})
    assert auto_arch(64, 4, CPU) == ("vit_tiny", {"depth": 4, "predictor_embed_dim": 96, "predictor_depth": 2})
    assert auto_arch(8, 1, CPU)[1]["embed_dim"] == 64
    digits = resolve_image_config(config_from_dict({"model": {"arch": "auto"}}), CPU)
    assert (digits.data.dataset, digits.data.image_size, digits.data.num_workers) == ("digits", 8, 0)


@pytest.mark.parametrize(
    "data, model, error, match",
    [
        ({"image_size": 30}, {"patch_size": 4}, ValueError, "image size 30 .* not divisible by the patch size 4"),
        ({"path": None}, {}, ValueError, "needs data.path"),
        ({"path": "/nonexistent/images"}, {}, FileNotFoundError, "does not exist"),
        ({"normalize": "z"}, {}, ValueError, "data.normalize"),
        ({"crop_scale": [0.5, 0.2]}, {}, ValueError, "data.crop_scale"),
        ({"on_error": "ignore"}, {}, ValueError, "data.on_error"),
        ({}, {"arch": "resnet50"}, ValueError, "model.arch"),
    ],
)
def test_bad_image_settings_are_refused_before_anything_is_built(folder, data, model, error, match):
    cfg = _config(folder, **data)
    for key, value in model.items():
        setattr(cfg.model, key, value)
    with pytest.raises(error, match=match):
        resolve_image_config(cfg, CPU)


def test_masks_that_cannot_keep_min_keep_context_patches_fail_when_the_loaders_are_built(folder):
    cfg = _config(folder, image_size=16, masks={"num_targets": 4, "target_scale": [0.4, 0.5], "min_keep": 10})
    cfg.model.patch_size = 4  # 16 patches: 4 blocks of 40-50% leave (almost) no context
    cfg = resolve_image_config(cfg, CPU)
    with pytest.raises(ValueError, match=r"data.masks .* min_keep=10\) on a 4x4 patch grid: .*fewer|keeps only"):
        image_loaders(cfg, image_data(cfg))
    cfg.data.masks.min_keep = 40  # more than the grid holds
    with pytest.raises(ValueError, match=r"data.masks .* min_keep=40\) on a 4x4 patch grid: .*more than the 16 patches"):
        image_loaders(cfg, image_data(cfg))


def test_pixel_statistics_are_the_training_images_channel_mean_and_std(folder):
    cfg = resolve_image_config(_config(folder), CPU)
    data = image_data(cfg)
    mean, std = pixel_statistics(cfg, data)
    stack = torch.stack([data.probe_train[i][0] for i in range(len(data.probe_train))]).double()
    assert mean == pytest.approx(stack.mean(dim=(0, 2, 3)).tolist(), abs=1e-5)
    assert std == pytest.approx(stack.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-5)
    cfg.data.normalize = "none"
    assert pixel_statistics(cfg, data) == (None, None)


def test_trainer_from_config_builds_ijepa_with_its_loss_and_a_twin_at_the_same_init(folder):
    cfg = _config(folder)
    cfg.training.weight_decay, cfg.training.weight_decay_end = 0.04, 0.4
    trainer, twin = build_probe_run(cfg)
    assert isinstance(trainer.model, IJEPA) and isinstance(trainer.loss_fn, IJEPALoss)
    assert trainer.config.data.image_size == 16 and cfg.data.image_size is None  # resolved in the trainer's copy
    enc = trainer.model.encoder
    assert enc.config["pixel_mean"] is not None and enc.in_chans == 3 and enc.patch_size == 2
    for (key, a), b in zip(trainer.model.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), key
    assert any(isinstance(cb, WeightDecaySchedule) for cb in trainer.callbacks)
    history = trainer.train()
    assert math.isfinite(history["train_loss"][0]) and math.isfinite(history["val_loss"][0])
    assert int(trainer.model.ema_step) == trainer.global_step == 40 // 8
    decayed = [g for g in trainer.optimizer.param_groups if g["weight_decay"] > 0]
    assert decayed and decayed[0]["weight_decay"] == pytest.approx(cosine_weight_decay(4, 5, 0.04, 0.4))


def test_cosine_weight_decay_goes_from_start_to_end():
    assert cosine_weight_decay(0, 10, 0.04, 0.4) == pytest.approx(0.04)
    assert cosine_weight_decay(5, 10, 0.04, 0.4) == pytest.approx(0.22)
    assert cosine_weight_decay(10, 10, 0.04, 0.4) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="start"):
        WeightDecaySchedule(0.0, 0.4)


def _masks(loader):
    return [(b["context_idx"], b["target_idx"]) for b in loader]


def _same(a, b):
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(x, y) for pa, pb in zip(a, b) for x, y in zip(pa, pb))


@pytest.mark.parametrize("workers", [0, 1])
def test_masks_differ_per_rank_and_follow_the_saved_generators(folder, workers):
    cfg = resolve_image_config(_config(folder, num_workers=workers), CPU)
    data = image_data(cfg)
    rank0, _ = image_loaders(cfg, data, rank=0, world_size=2)
    rank1, _ = image_loaders(cfg, data, rank=1, world_size=2)
    assert not _same(_masks(rank0), _masks(rank1))
    saved = rng_state({"train": rank0})
    assert set(saved["loaders"]["train"]) == {"generator", "collate_fn.generator"}
    first = _masks(rank0)
    torch.rand(10)
    set_rng_state(saved, {"train": rank0})  # what a resumed run does
    assert _same(_masks(rank0), first)


def test_validation_loader_repeats_its_masks_every_pass(folder):
    cfg = resolve_image_config(_config(folder, num_workers=1), CPU)
    _, val = image_loaders(cfg, image_data(cfg))
    assert isinstance(val, RepeatableLoader)
    assert _same(_masks(val), _masks(val))
    trainer = JEPATrainer(cfg)
    assert trainer.validate() == trainer.validate()


def test_digits_as_images_with_arch_set(tmp_path):
    cfg = config_from_dict({"model": {"arch": "vit_tiny", "vit": {"embed_dim": 32, "depth": 1, "num_heads": 2,
                            "predictor_embed_dim": 16, "predictor_depth": 1}}, "training": {"device": "cpu"}})
    cfg = resolve_image_config(cfg, CPU)
    data = image_data(cfg)
    image, label = data.train[0]
    assert image.shape == (1, 8, 8) and data.in_chans == 1 and 0 <= label < 10
    assert len(data.probe_test) == len(load_digits_split("test").labels)  # probes: fit on train, scored on test
    assert len(data.train) + len(data.val) == len(data.probe_train)


def _files(subset):
    return [subset.dataset.samples[i][0] for i in subset.indices]


def test_online_probe_of_a_folder_is_kept_apart_from_the_split_the_final_probes_report(folder):
    data = image_data(resolve_image_config(_config(folder), CPU))
    fit, score = data.online_probe
    train_files, val_files = [f for f, _ in data.probe_train.samples], [f for f, _ in data.probe_test.samples]
    assert sorted(_files(fit) + _files(score)) == sorted(train_files)  # a partition of the training images
    assert not set(_files(score)) & set(_files(fit))
    assert not set(_files(score)) & set(val_files)  # best_model.pt is not chosen on the final probes' split
    labels = data.probe_train.labels
    for c in labels.unique().tolist():  # 10% of every class (at least one image) is scored
        n = int((labels == c).sum())
        assert sum(int(score[i][1] == c) for i in range(len(score))) == max(1, round(0.1 * n))
    assert torch.equal(score[0][0], data.probe_train[score.indices[0]][0])  # the evaluation transform


def test_online_probe_of_digits_images_fits_on_train_and_scores_the_validation_holdout():
    cfg = config_from_dict({"model": {"arch": "vit_tiny", "vit": {"embed_dim": 32, "depth": 1, "num_heads": 2,
                            "predictor_embed_dim": 16, "predictor_depth": 1}}, "training": {"device": "cpu"}})
    data = image_data(resolve_image_config(cfg, CPU))
    fit, score = data.online_probe
    assert len(fit) == len(data.train) and len(score) == len(data.val)
    assert torch.equal(score.images, data.val.images) and torch.equal(fit.images, data.train.images)
    assert len(data.probe_test) == len(load_digits_split("test").labels)  # what the final probes report: untouched


def test_jepa_trainer_online_probe_uses_the_held_out_slice(folder, tmp_path):
    cfg = _config(folder)
    cfg.logging.output_dir = str(tmp_path / "run")
    trainer = JEPATrainer(cfg)
    probe = next(cb for cb in trainer.callbacks if type(cb).__name__ == "OnlineProbe")
    assert _files(probe.val_data) == _files(image_data(trainer.config).online_probe[1])
