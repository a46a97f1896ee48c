"""I-JEPA in the trainer under autocast (bf16, fp16 with loss scaling) and with gradient accumulation."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from jepa.data import MultiBlockMaskCollator
from jepa.models import IJEPA
from jepa.trainer import JEPATrainer
from jepa.trainer.callbacks import BaseCallback
from jepa.trainer.losses import IJEPALoss


def _model():
    torch.manual_seed(0)
    return IJEPA.from_preset("vit_tiny", image_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
                             predictor_embed_dim=16, predictor_depth=1, pixel_mean=[0.5] * 3, pixel_std=[0.25] * 3)


def _batches(n=4, b=6):
    col = MultiBlockMaskCollator(grid=(4, 4), num_targets=2, target_scale=(0.1, 0.2), min_keep=2)
    g = torch.Generator().manual_seed(1)
    return [{"images": torch.rand(b, 3, 16, 16, generator=g), **col.sample(b, g)._asdict()} for _ in range(n)]


class Dtypes(BaseCallback):
    def __init__(self):
        self.seen = set()

    def on_batch_end(self, trainer, model, outputs, batch, batch_idx):
        self.seen.add((trainer.step_outputs["prediction"].dtype, trainer.step_outputs["target_tokens"].dtype))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_on_bf16_or_fp16_predictions_against_fp32_targets(tmp_path, precision):
    model = _model()
    online = [p for m in model.online_modules() for p in m.parameters()]
    before = [p.detach().clone() for p in online]
    seen = Dtypes()
    trainer = JEPATrainer(model, torch.optim.AdamW(online, lr=1e-3), loss_fn=IJEPALoss(), device="cpu", progress_bar=False,
                          save_dir=tmp_path, mixed_precision=precision, callbacks=[seen])
    history = trainer.train(_batches(), num_epochs=2)
    half = torch.bfloat16 if precision == "bf16" else torch.float16
    assert seen.seen == {(half, torch.float32)}  # the predictor ends in a half linear, the target in an fp32 layer norm
    assert all(math.isfinite(v) for v in history["train_loss"])
    assert (trainer.scaler is not None) == (precision == "fp16")
    assert any(not torch.equal(a, b) for a, b in zip(before, online)) and all(torch.isfinite(p).all() for p in online)
    assert int(model.ema_step) == trainer.global_step == 8


def test_gradient_accumulation_steps_on_the_mean_of_the_micro_batch_losses(tmp_path):
    model = _model()
    reference = copy.deepcopy(model)
    online = [p for m in model.online_modules() for p in m.parameters()]
    lr = 0.3
    trainer = JEPATrainer(model, torch.optim.SGD(online, lr=lr), loss_fn=IJEPALoss(), device="cpu", progress_bar=False,
                          save_dir=tmp_path, gradient_accumulation=2, scheduler=None)
    a, b = _batches(n=2)
    trainer.train([a, b], num_epochs=1)
    assert trainer.global_step == 1 and int(model.ema_step) == 1  # one optimizer step, one EMA update
    loss = sum(IJEPALoss()(**{k: v for k, v in reference.forward_batch(x).items()
                              if k in ("prediction", "target_tokens", "target_index", "target_valid")}) for x in (a, b)) / 2
    loss.backward()
    for (name, p), q in zip(reference.named_parameters(), model.parameters()):
        if p.grad is not None:
            assert torch.allclose(q, p - lr * p.grad, atol=1e-6), name
