import warnings

import pytest
import torch
from torch import nn

from jepa.models import JEPA, Encoder, Predictor
from jepa.trainer.callbacks import CollapseMonitor


class _Const(nn.Module):
    """An encoder that has collapsed: every input maps to the same embedding."""

    def __init__(self, dim=8):
        super().__init__()
        self.bias = nn.Parameter(torch.randn(dim))

    def forward(self, x):
        return self.bias.expand(*x.shape[:-1], -1) + 0 * x.sum(-1, keepdim=True)


class _Trainer:
    def __init__(self):
        self.global_step = 0
        self.device = torch.device("cpu")
        self.logged = []

    def _log(self, metrics, step):
        self.logged.append((step, metrics))


def _batch(n=32, t=4, d=8):
    x = torch.randn(n, t, d)
    return (x, x)


def test_collapsed_encoder_warns_once_and_logs():
    model = JEPA(encoder=_Const(64), predictor=nn.Identity())
    mon, trainer = CollapseMonitor(every_n_steps=2, batch=_batch(d=64)), _Trainer()
    with pytest.warns(RuntimeWarning, match="collapse suspected at step 2"):
        for step in range(1, 5):
            trainer.global_step = step
            mon.on_batch_end(trainer, model, {}, None, 0)
    assert [r["step"] for r in mon.records] == [2, 4]
    assert mon.records[0]["effective_rank"] < 1.5 and mon.records[0]["embedding_std"] == pytest.approx(0.0, abs=1e-6)
    assert [s for s, _ in trainer.logged] == [2, 4] and "collapse/effective_rank" in trainer.logged[0][1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trainer.global_step = 6
        mon.on_batch_end(trainer, model, {}, None, 0)  # warned once only


def test_healthy_encoder_does_not_warn_and_matches_hand_computation():
    from jepa.trainer.eval import effective_rank

    model = JEPA(encoder=Encoder(hidden_dim=8, num_layers=1, num_heads=2), predictor=Predictor(hidden_dim=8))
    batch = _batch()
    mon, trainer = CollapseMonitor(every_n_steps=1, batch=batch), _Trainer()
    trainer.global_step = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mon.on_batch_end(trainer, model, {}, None, 0)
    z = model.embed(batch[0])
    assert mon.records[0]["effective_rank"] == pytest.approx(effective_rank(z))
    assert mon.records[0]["embedding_std"] == pytest.approx(float(z.std(dim=0).mean()), rel=1e-5)


def test_trainer_adds_monitor_and_uses_a_validation_batch(tmp_path, pair_loader):
    from jepa.trainer import create_trainer

    model = JEPA(encoder=Encoder(hidden_dim=16, num_layers=1, num_heads=2), predictor=Predictor(hidden_dim=16))
    trainer = create_trainer(model, device="cpu", save_dir=tmp_path, progress_bar=False, collapse_check_every_n_steps=1)
    mon = [cb for cb in trainer.callbacks if isinstance(cb, CollapseMonitor)][0]
    trainer.train(pair_loader, num_epochs=1, val_loader=pair_loader)
    assert len(mon.records) == trainer.global_step
    first_val = next(iter(pair_loader))
    assert mon.batch[0].shape == first_val[0].shape
