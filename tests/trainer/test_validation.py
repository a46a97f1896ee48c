"""Validation is deterministic (fixed, per-sample seeded views), selects checkpoints on a split the
probes never report on, and evaluate() computes the same objective as validate()."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from jepa.data import load_digits_split
from jepa.trainer import JEPATrainer


def _small_config(tmp_path, **training):
    from jepa.config import load_config

    cfg = load_config("quick")
    cfg.training.epochs = 1
    cfg.training.batch_size = 128
    cfg.model.hidden_dim, cfg.model.encoder_layers, cfg.model.projector_hidden_dim, cfg.model.projector_dim = 16, 1, 32, 32
    cfg.data.max_rotation = 0.0  # cheaper views; still shifted, noised and masked
    cfg.logging.output_dir = str(tmp_path)
    cfg.logging.progress_bar = False
    cfg.logging.loggers = []
    for k, v in training.items():
        setattr(cfg.training, k, v)
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    trainer = JEPATrainer(_small_config(tmp_path_factory.mktemp("val")))
    trainer.train()
    return trainer


def test_validate_twice_gives_the_same_number(trained):
    first = trained.validate()
    torch.rand(7)  # whatever the global RNG does in between
    np.random.rand(3)
    assert trained.validate() == first


def test_evaluate_loss_is_the_validation_loss(trained):
    # the default objective has a projector: its regularizer counts in both
    assert trained.model.projector is not None
    assert trained.evaluate()["loss"] == trained.validate()
    loader = DataLoader(trained.val_loader.dataset, batch_size=32)
    assert trained.evaluate(loader)["loss"] == trained.validate(loader)


def test_validation_split_is_held_out_of_training_and_is_not_the_probe_split(trained):
    def rows(images):
        return {bytes(np.asarray(img, dtype=np.float32).tobytes()) for img in images}

    val = rows(trained.val_loader.dataset.data.images)
    train = rows(trained.train_loader.dataset.data.images)
    probe_train, probe_test = rows(load_digits_split("train").images), rows(load_digits_split("test").images)
    assert val and not val & train  # held out of what the encoder trains on
    assert not val & probe_test  # never the split the probes report
    assert val | train == probe_train  # together: the training split
    labels = trained.val_loader.dataset.labels
    assert set(labels.tolist()) == set(range(10))  # stratified: every class validates


class NoisyViews(Dataset):
    """Views drawn from every global RNG: torch, numpy and python."""

    def __init__(self, n: int = 6) -> None:
        self.x = torch.arange(float(n))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.stack([self.x[i] + torch.rand(()), torch.tensor(np.random.rand() + random.random())])


def test_fixed_views_are_per_sample_and_leave_the_global_rngs_alone():
    from jepa.trainer.fixed_views import FixedViews, sample_seed

    views = FixedViews(NoisyViews(), seed=3)
    torch_before, np_before, py_before = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    forward = [views[i] for i in range(6)]
    assert torch.equal(torch.get_rng_state(), torch_before)
    assert np.array_equal(np.random.get_state()[1], np_before) and random.getstate() == py_before
    backward = [views[i] for i in reversed(range(6))][::-1]  # any order, same items
    assert all(torch.equal(a, b) for a, b in zip(forward, backward))
    assert len({tuple(v.tolist()) for v in forward}) == 6  # each sample its own view...
    raw = NoisyViews()[0]
    assert not torch.equal(raw, forward[0])  # ...still random-looking, not the clean sample
    other = FixedViews(NoisyViews(), seed=4)
    assert not torch.equal(other[0], forward[0])  # another seed, other views
    assert views.x is views.dataset.x  # attributes read through
    assert sample_seed(3, 0) != sample_seed(3, 1) and sample_seed(3, 0) != sample_seed(4, 0)
    with pytest.raises(ValueError, match="seed"):
        FixedViews(NoisyViews(), seed=-1)
