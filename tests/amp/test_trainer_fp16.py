"""The trainers' float16 path uses jepa.amp.GradScaler: training on CPU works, overflowing steps are skipped
and back off the scale, the scaler's state goes through checkpoints; bfloat16 builds no scaler."""

from __future__ import annotations

import math

import pytest
import torch

from jepa.amp import GradScaler
from jepa.models import JEPA, Encoder, Predictor
from jepa.trainer import create_trainer
from jepa.trainer.mixed_precision import MixedPrecisionTrainer


def _model(dim=16):
    return JEPA(encoder=Encoder(hidden_dim=dim, num_layers=1, num_heads=2), predictor=Predictor(hidden_dim=dim))


def _trainer(tmp_path, **kw):
    kw.setdefault("progress_bar", False)
    return create_trainer(_model(), learning_rate=1e-3, device="cpu", save_dir=tmp_path, **kw)


def test_fp16_trainer_uses_jepa_grad_scaler_and_trains(tmp_path, pair_loader):
    trainer = _trainer(tmp_path, mixed_precision="fp16")
    assert isinstance(trainer.scaler, GradScaler) and trainer.scaler.is_enabled()
    assert trainer.autocast_dtype == torch.float16
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    history = trainer.train(pair_loader, num_epochs=4)
    assert all(math.isfinite(x) for x in history["train_loss"])
    assert history["train_loss"][-1] < history["train_loss"][0]
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before[k], after[k]) for k in before), "no optimizer step was taken"
    assert all(torch.isfinite(p).all() for p in after.values())
    assert trainer.scaler._scale is not None and trainer.scaler._scale.device.type == "cpu"


def test_fp16_overflowing_step_is_skipped_and_scale_backs_off(tmp_path, pair_loader):
    trainer = _trainer(tmp_path, mixed_precision="fp16")
    # a scale so large that the scaled float16 backward overflows on every batch
    trainer.scaler.load_state_dict(
        {"scale": 2.0**120, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000, "_growth_tracker": 0}
    )
    params = dict(trainer.model.predictor.named_parameters())
    before = {k: v.detach().clone() for k, v in params.items()}
    trainer.train(pair_loader, num_epochs=1)
    steps = len(pair_loader)
    assert trainer.global_step == steps
    # every step overflowed: weights untouched, the scale halved once per step
    assert all(torch.equal(before[k], params[k]) for k in params)
    assert trainer.scaler.get_scale() == 2.0 ** (120 - steps)


def test_scaler_state_goes_through_checkpoints(tmp_path, pair_loader):
    trainer = _trainer(tmp_path, mixed_precision="fp16")
    trainer.scaler.set_growth_interval(2)
    trainer.train(pair_loader, num_epochs=2)
    state = trainer.scaler.state_dict()
    path = trainer.save_checkpoint("amp.pt")
    other = _trainer(tmp_path / "o", mixed_precision="fp16")
    other.load_checkpoint(path)
    assert other.scaler.state_dict() == state
    assert state["growth_interval"] == 2


def test_bf16_and_fp32_build_no_scaler(tmp_path):
    assert _trainer(tmp_path, mixed_precision="bf16").scaler is None
    assert _trainer(tmp_path, mixed_precision=None).scaler is None


def test_mixed_precision_trainer_scaler_choice(tmp_path):
    def build(**kw):
        model = _model()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        return MixedPrecisionTrainer(model, optimizer=opt, device="cpu", progress_bar=False, save_dir=tmp_path, **kw)

    fp16 = build(use_amp=True, grad_scaler=True)
    assert isinstance(fp16.grad_scaler, GradScaler) and fp16.amp_dtype == torch.float16
    bf16 = build(use_amp=True, grad_scaler=False)
    assert bf16.grad_scaler is None and bf16.amp_dtype == torch.bfloat16
    off = build(use_amp=False)
    assert off.grad_scaler is None and off.amp_dtype is None
    with pytest.raises(ValueError, match="fp16 without a grad scaler"):
        build(use_amp=True, grad_scaler=False, dtype="fp16")
