"""Non-finite losses: on_nan="raise" (default) and "skip", immediate and deferred (device-flag) checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from jepa.models import JEPA
from jepa.models.encoder import Encoder
from jepa.models.predictor import Predictor
from jepa.trainer import create_trainer
from jepa.trainer.callbacks import BaseCallback
from jepa.trainer.losses import JEPALoss


class NaNAtCalls(JEPALoss):
    """JEPALoss whose ``var_loss`` term is NaN on the given (0-based) calls."""

    def __init__(self, bad_calls) -> None:
        super().__init__()
        self.bad_calls = set(bad_calls)
        self.calls = 0

    def terms(self, *args, **kwargs):
        out = super().terms(*args, **kwargs)
        if self.calls in self.bad_calls:
            out["var_loss"] = out["var_loss"] * float("nan")
            out["loss"] = out["loss"] + out["var_loss"]
        self.calls += 1
        return out


def _online(model):
    """The trainable (online) parameters."""
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


class Snapshots(BaseCallback):
    """The online parameters at the start of every batch: by global step (first batch of that step)
    and as a list of (global_step, params)."""

    def __init__(self) -> None:
        self.by_step = {}
        self.sequence = []

    def on_batch_start(self, trainer, model, batch, batch_idx):
        params = _online(model)
        self.by_step.setdefault(trainer.global_step, params)
        self.sequence.append((trainer.global_step, params))


def _loader(n=40, batch=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, 16, generator=g)
    return DataLoader(TensorDataset(x, x.roll(1, dims=1)), batch_size=batch)


def _trainer(tmp_path, loss, **kwargs):
    torch.manual_seed(0)
    model = JEPA(encoder=Encoder(hidden_dim=16, num_layers=1, num_heads=2), predictor=Predictor(hidden_dim=16))
    return create_trainer(model, device="cpu", loss_fn=loss, save_dir=tmp_path, progress_bar=False, save_best=False, save_last=False, **kwargs)


def test_raise_names_step_batch_and_term_and_keeps_the_weights_before_the_step(tmp_path):
    snaps = Snapshots()
    trainer = _trainer(tmp_path, NaNAtCalls({7}), callbacks=[snaps])
    with pytest.raises(FloatingPointError, match=r"step 7 \(epoch 1, batch 2\).*var_loss.*before this step"):
        trainer.train(_loader(), num_epochs=3)
    assert trainer.global_step == 7
    for k, v in _online(trainer.model).items():
        assert torch.equal(v, snaps.by_step[7][k]), k


def test_skip_drops_the_step_and_counts_it(tmp_path):
    snaps = Snapshots()
    trainer = _trainer(tmp_path, NaNAtCalls({3}), on_nan="skip", callbacks=[snaps])
    history = trainer.train(_loader(), num_epochs=2)
    assert trainer.nan_skipped_steps == 1
    assert trainer.global_step == 2 * 5 - 1  # one optimizer step dropped
    assert all(math.isfinite(x) for x in history["train_loss"])  # the NaN batch is not averaged in
    # the dropped step changed nothing: the batch after the NaN one starts at the same step, same weights
    at_3 = [params for step, params in snaps.sequence if step == 3]
    assert len(at_3) == 2
    assert all(torch.equal(at_3[0][k], at_3[1][k]) for k in at_3[0])
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values() if v.is_floating_point())


def test_skip_stops_after_max_consecutive(tmp_path):
    trainer = _trainer(tmp_path, NaNAtCalls(range(2, 100)), on_nan="skip", max_nan_skips=3)
    with pytest.raises(FloatingPointError, match=r"3 optimizer steps in a row.*max_nan_skips=3"):
        trainer.train(_loader(), num_epochs=3)
    assert trainer.nan_skipped_steps == 3 and trainer.global_step == 2


def test_deferred_check_skips_updates_on_device_and_reports_the_first_bad_step(tmp_path):
    """Checking every 4 steps (as on a GPU, no host sync in between): the fused AdamW skips every
    update from the bad step on via its found_inf flag, so the error names that step and the
    online weights are those before it."""
    snaps = Snapshots()
    trainer = _trainer(tmp_path, NaNAtCalls({5}), nan_check_every_n_steps=4, callbacks=[snaps])
    assert trainer.optimizer.defaults.get("fused")
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 5 .*check of step 8.*before step 5"):
        trainer.train(_loader(), num_epochs=3)
    for k, v in _online(trainer.model).items():
        assert torch.equal(v, snaps.by_step[5][k]), k
    assert not hasattr(trainer.optimizer, "found_inf")


def test_bad_on_nan_arguments(tmp_path):
    with pytest.raises(ValueError, match="on_nan"):
        _trainer(tmp_path, JEPALoss(), on_nan="ignore")
    with pytest.raises(ValueError, match="max_nan_skips"):
        _trainer(tmp_path, JEPALoss(), max_nan_skips=0)
    with pytest.raises(ValueError, match="checkpoint_every_n_steps"):
        _trainer(tmp_path, JEPALoss(), checkpoint_every_n_steps=-2)
