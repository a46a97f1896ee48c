"""resume="auto" picks the newest checkpoint that loads and verifies; temporary and damaged files never win."""

from __future__ import annotations

import os
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from jepa.models import JEPA
from jepa.models.encoder import Encoder
from jepa.models.predictor import Predictor
from jepa.trainer import create_trainer
from jepa.trainer.trainer import find_latest_checkpoint


def _trainer(save_dir, **kwargs):
    torch.manual_seed(0)
    model = JEPA(encoder=Encoder(hidden_dim=16, num_layers=1, num_heads=2), predictor=Predictor(hidden_dim=16))
    return create_trainer(model, device="cpu", save_dir=save_dir, progress_bar=False, **kwargs)


def _loader():
    x = torch.randn(16, 4, 16, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(x, x.roll(1, dims=1)), batch_size=8)


def _touch_later(path, seconds):
    t = time.time() + seconds
    os.utime(path, (t, t))


def test_newest_valid_checkpoint_wins_over_tmp_and_damaged_files(tmp_path):
    trainer = _trainer(tmp_path, checkpoint_every_n_epochs=1, save_best=False, save_last=False)
    trainer.train(_loader(), num_epochs=3)
    assert find_latest_checkpoint(tmp_path) == tmp_path / "epoch_3.pt"
    # a half-written temporary file of an interrupted save, newer than everything
    tmp_file = tmp_path / "last.pt.tmp-12345"
    tmp_file.write_bytes((tmp_path / "epoch_3.pt").read_bytes()[:100])
    _touch_later(tmp_file, 30)
    # a newer but truncated checkpoint
    broken = tmp_path / "epoch_4.pt"
    broken.write_bytes((tmp_path / "epoch_3.pt").read_bytes()[:-7])
    _touch_later(broken, 20)
    assert find_latest_checkpoint(tmp_path) == tmp_path / "epoch_3.pt"

    resumed = _trainer(tmp_path, resume="auto", save_best=False, save_last=False)
    seen = {}

    from jepa.trainer.callbacks import BaseCallback

    class Start(BaseCallback):
        def on_train_start(self, trainer, model):
            seen.update(epoch=trainer.current_epoch, step=trainer.global_step)

    resumed.callbacks.append(Start())
    resumed.train(_loader(), num_epochs=4)
    assert seen == {"epoch": 3, "step": 6}
    assert resumed.global_step == 8


def test_no_checkpoint_starts_from_scratch(tmp_path):
    assert find_latest_checkpoint(tmp_path / "missing") is None
    trainer = _trainer(tmp_path, resume="auto")
    trainer.train(_loader(), num_epochs=1)
    assert trainer.global_step == 2


def test_async_checkpoints_match_sync_ones(tmp_path):
    """async_checkpoint=True writes the same checkpoints (in a background thread) as sync saves."""
    from jepa import io as jio

    sync = _trainer(tmp_path / "sync", checkpoint_every_n_epochs=1)
    sync.train(_loader(), num_epochs=2)
    asyn = _trainer(tmp_path / "async", checkpoint_every_n_epochs=1, async_checkpoint=True)
    asyn.train(_loader(), num_epochs=2)
    names = sorted(p.name for p in (tmp_path / "sync").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "async").iterdir()) == ["best_model.pt", "epoch_1.pt", "epoch_2.pt", "last.pt"]
    for name in names:
        a, b = jio.load(tmp_path / "sync" / name), jio.load(tmp_path / "async" / name)
        assert a["global_step"] == b["global_step"]
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), (name, key)
