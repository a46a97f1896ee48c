"""A LearningRateScheduler callback owns the learning rate: the optimizer steps with its schedule,
from the configured learning rate, at every batch (the trainer's own scheduler steps aside)."""

from __future__ import annotations

import logging

import pytest
import torch

from jepa.models import JEPA, Encoder, Predictor
from jepa.trainer import JEPATrainer, create_trainer
from jepa.trainer.callbacks import LearningRateScheduler


class LrAtEveryStep:
    """The lr of every parameter group each time optimizer.step() runs."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.seen: list[list[float]] = []
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: self.seen.append([g["lr"] for g in opt.param_groups]))


def _model():
    return JEPA(encoder=Encoder(hidden_dim=16, num_layers=1, num_heads=2), predictor=Predictor(hidden_dim=16))


def test_step_schedule_holds_for_every_batch_from_the_configured_lr(tmp_path, pair_loader, caplog):
    lrs = LearningRateScheduler(schedule="step", gamma=0.1, step_size=1)
    trainer = create_trainer(_model(), learning_rate=1e-3, device="cpu", save_dir=tmp_path, progress_bar=False, callbacks=[lrs])
    seen = LrAtEveryStep(trainer.optimizer)
    with caplog.at_level(logging.WARNING, logger="jepa"):
        trainer.train(pair_loader, num_epochs=3)
    steps = len(pair_loader)
    expected = [1e-3 * 0.1**epoch for epoch in range(3) for _ in range(steps)]
    assert len(seen.seen) == 3 * steps
    for lr_groups, want in zip(seen.seen, expected):
        assert lr_groups == pytest.approx([want] * len(lr_groups), rel=1e-12)
    assert lrs.history == pytest.approx([1e-3, 1e-4, 1e-5], rel=1e-12)
    assert trainer.history["lr"] == pytest.approx([1e-3, 1e-4, 1e-5], rel=1e-12)
    notes = [r.getMessage() for r in caplog.records if "LearningRateScheduler sets the learning rate" in r.getMessage()]
    assert len(notes) == 1  # said once


def test_cosine_callback_on_a_config_trainer_and_after_resume(tmp_path):
    from jepa.config import load_config

    cfg = load_config("quick")
    cfg.training.epochs = 3
    cfg.training.learning_rate = 2e-3
    cfg.training.batch_size = 256  # small and quick: 5 steps per epoch, a narrow model, no rotation
    cfg.model.hidden_dim, cfg.model.encoder_layers, cfg.model.projector_hidden_dim, cfg.model.projector_dim = 16, 1, 32, 32
    cfg.data.max_rotation = 0.0
    cfg.logging.output_dir = str(tmp_path)
    cfg.logging.progress_bar = False
    cfg.logging.loggers = []
    lrs = LearningRateScheduler(schedule="cosine", min_lr=1e-5)
    trainer = JEPATrainer(cfg, callbacks=[lrs], checkpoint_every_n_epochs=1)
    seen = LrAtEveryStep(trainer.optimizer)
    trainer.train()
    steps = len(trainer.train_loader)
    want = [lrs.lr_at(e, 3, 2e-3) for e in range(3)]
    assert want[0] == pytest.approx(2e-3) and want[2] == pytest.approx(1e-5)
    assert [g[0] for g in seen.seen] == pytest.approx([w for w in want for _ in range(steps)], rel=1e-12)
    # a new trainer resumed from epoch 1 with a fresh callback continues the same schedule
    again = JEPATrainer(cfg, callbacks=[LearningRateScheduler(schedule="cosine", min_lr=1e-5)])
    again.load_checkpoint(tmp_path / "checkpoints" / "epoch_1.pt")
    seen_again = LrAtEveryStep(again.optimizer)
    again.train()
    assert [g[0] for g in seen_again.seen] == pytest.approx([w for w in want[1:] for _ in range(steps)], rel=1e-12)


def test_without_the_callback_the_trainer_schedule_runs(tmp_path, pair_loader):
    trainer = create_trainer(_model(), learning_rate=1e-3, device="cpu", save_dir=tmp_path, progress_bar=False, warmup_fraction=0.0)
    seen = LrAtEveryStep(trainer.optimizer)
    trainer.train(pair_loader, num_epochs=2)
    lrs = [g[0] for g in seen.seen]
    assert lrs[0] == pytest.approx(1e-3) and all(b < a for a, b in zip(lrs, lrs[1:]))  # per-step cosine decay
