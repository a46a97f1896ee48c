"""The model-step protocol: a model that consumes the whole batch and returns named outputs, and a
loss called with the outputs it names (the contract new models, losses and probes plug into)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from jepa.trainer import JEPALoss, create_trainer
from jepa.trainer.callbacks import BaseCallback
from jepa.trainer.objective import loss_arguments, loss_inputs, loss_terms, model_outputs


class MaskedBatches(Dataset):
    """Dict samples like an I-JEPA collator's: an image-like tensor, target indices and a validity mask."""

    def __init__(self, n: int = 24) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 6, 8, generator=g)
        self.idx = torch.randint(0, 6, (n, 3), generator=g)
        self.valid = torch.rand(n, 3, generator=g) > 0.25

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"images": self.x[i], "target_idx": self.idx[i], "target_valid": self.valid[i]}


class BatchModel(nn.Module):
    """forward_batch: predicts the target tokens' features from the mean context token."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(8, 8)
        self.predictor = nn.Linear(8, 8)
        self.steps = 0

    def forward_batch(self, batch: dict) -> dict:
        z = self.encoder(batch["images"])  # (B, 6, 8)
        idx = batch["target_idx"].unsqueeze(-1).expand(-1, -1, 8)
        target = torch.gather(batch["images"], 1, idx)  # (B, 3, 8)
        prediction = self.predictor(z.mean(1, keepdim=True)).expand(-1, 3, -1)
        return {"prediction": prediction, "target": target, "valid": batch["target_valid"], "context": z}

    def update_target_encoder(self) -> None:
        self.steps += 1


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> dict:
    per = F.mse_loss(prediction, target, reduction="none").mean(-1)
    loss = (per * valid).sum() / valid.sum().clamp(min=1)
    return {"loss": loss, "valid_fraction": valid.float().mean()}


def test_a_batch_consuming_model_trains_with_a_loss_naming_its_outputs(tmp_path):
    model = BatchModel()
    seen = []

    class Probe(BaseCallback):  # an online probe reads detached features of the step
        def on_batch_end(self, trainer, model, outputs, batch, batch_idx):
            feats = trainer.step_outputs["context"]
            seen.append((feats.requires_grad, tuple(feats.shape), "valid_fraction" in outputs))

    trainer = create_trainer(model, learning_rate=1e-2, device="cpu", loss_fn=masked_mse, save_dir=tmp_path,
                             progress_bar=False, callbacks=[Probe()], save_best=False, save_last=False)
    loader = DataLoader(MaskedBatches(), batch_size=8)
    batch = next(iter(loader))
    terms = trainer.training_step(batch, 0)
    out = model.forward_batch(batch)
    torch.testing.assert_close(terms["loss"], masked_mse(out["prediction"], out["target"], out["valid"])["loss"])
    before = trainer.validate(loader)
    trainer.train(loader, num_epochs=3)
    assert model.steps == trainer.global_step == 9  # the EMA hook ran once per optimizer step
    assert trainer.validate(loader) < before
    assert seen and all(s == (False, (8, 6, 8), True) for s in seen)
    assert trainer.evaluate(loader)["loss"] == trainer.validate(loader)


def test_losses_get_the_outputs_they_name():
    outputs = {"prediction": torch.randn(4, 3), "target": torch.randn(4, 3), "context": torch.randn(4, 2, 3), "projection": torch.randn(4, 5)}
    # JEPALoss.terms names all four
    args, kwargs = loss_arguments(JEPALoss(), outputs)
    assert args == [] and set(kwargs) == {"prediction", "target", "context", "projection"}
    # nn.MSELoss(input, target): "input" is no output, so it takes the prediction (legacy order)
    torch.testing.assert_close(loss_terms(nn.MSELoss(), outputs)["loss"], F.mse_loss(outputs["prediction"], outputs["target"]))
    assert loss_inputs(nn.MSELoss(), outputs) == {"prediction", "target"}

    def sigreg(projection):  # a regularizer of the projection alone
        return projection.pow(2).mean()

    assert loss_inputs(sigreg, outputs) == {"projection"}
    torch.testing.assert_close(loss_terms(sigreg, outputs)["loss"], outputs["projection"].pow(2).mean())

    def everything(prediction, **rest):
        return {"loss": prediction.sum(), "names": sorted(rest)}

    assert loss_terms(everything, outputs)["names"] == ["context", "projection", "target"]

    def needs_mask(prediction, target, valid):
        return prediction.sum()

    with pytest.raises(TypeError, match="'valid' is not one of the model's outputs"):
        loss_terms(needs_mask, outputs)


def test_pass_through_terms_wrappers_get_the_call_the_trainer_always_made():
    calls = []

    class Wrapped(JEPALoss):
        def terms(self, *args, **kwargs):
            calls.append((len(args), sorted(kwargs)))
            return super().terms(*args, **kwargs)

    outputs = {"prediction": torch.randn(8, 3, 4), "target": torch.randn(8, 3, 4), "context": torch.randn(8, 3, 4), "projection": torch.randn(8, 5)}
    got = loss_terms(Wrapped(), outputs)["loss"]
    assert calls == [(3, ["projection"])]
    torch.testing.assert_close(got, JEPALoss().terms(**outputs)["loss"])


def test_model_outputs_rules():
    class PairModel(nn.Module):
        def forward(self, a, b):
            return a * 2, b

    a, b = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    out = model_outputs(PairModel(), (a, b))
    assert torch.equal(out["prediction"], a * 2) and torch.equal(out["target"], b)

    class Bad(nn.Module):
        def forward_batch(self, batch):
            return batch[0]

    with pytest.raises(TypeError, match="mapping of named outputs"):
        model_outputs(Bad(), (a, b))


def test_first_input_is_what_probes_embed_for_any_batch_layout():
    from jepa.trainer.batches import first_input

    obs, actions = torch.randn(2, 4, 3), torch.randn(2, 3, 5)  # a world model's trajectory window
    assert first_input((obs, actions)) is obs
    images = torch.randn(2, 6, 8)
    assert first_input({"target_idx": torch.zeros(2, 3), "images": images}) is images
    assert first_input({"state_t": obs, "x": images}) is obs  # the documented order of INPUT_KEYS
    with pytest.raises(ValueError, match="'images'"):
        first_input({"pixels": images})
