"""IJEPALoss: I-JEPA's objective over IJEPA outputs, bound by output names, with mixed dtypes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from jepa.data import MultiBlockMaskCollator
from jepa.models import IJEPA, JEPA, MaskedPredictor, Projector, VisionTransformer
from jepa.models.encoder import Encoder
from jepa.models.predictor import Predictor
from jepa.trainer.losses import IJEPALoss, JEPALoss, default_loss, get_loss, variance_covariance
from jepa.trainer.objective import loss_inputs, loss_terms, model_outputs


def _model(projector=None):
    torch.manual_seed(0)
    enc = VisionTransformer(image_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2)
    pred = MaskedPredictor(grid_size=(4, 4), embed_dim=32, predictor_embed_dim=16, depth=1, num_heads=2)
    return IJEPA(enc, pred, projector=projector)


def _batch(b=3, seed=0):
    col = MultiBlockMaskCollator(grid=(4, 4), num_targets=2, target_scale=(0.1, 0.2), min_keep=2)
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.randn(b, 3, 16, 16, generator=g), **col.sample(b, g)._asdict()}


def _by_hand(out, kind="smooth_l1"):
    """The loss row by row in float64: layer-norm every target token, take the predicted ones."""
    target = F.layer_norm(out["target_tokens"].double(), (out["target_tokens"].shape[-1],))
    rows = [(b, m) for b in range(out["prediction"].shape[0]) for m in range(out["target_index"].shape[1]) if out["target_valid"][b, m]]
    d = torch.stack([out["prediction"][b, m].double() - target[b, out["target_index"][b, m]] for b, m in rows])
    return torch.where(d.abs() < 1, 0.5 * d**2, d.abs() - 0.5).mean() if kind == "smooth_l1" else (d**2).mean()


def test_matches_a_hand_computation_and_skips_padded_rows():
    out = _model().forward_batch(_batch())
    out["target_valid"] = out["target_valid"].clone()
    out["target_valid"][0, :2] = False
    terms = loss_terms(IJEPALoss(), out)
    assert set(terms) == {"loss", "pred_loss"} and terms["loss"] is terms["pred_loss"]
    assert torch.allclose(terms["loss"].double(), _by_hand(out), atol=1e-6)
    assert torch.allclose(loss_terms(IJEPALoss(loss="mse"), out)["loss"].double(), _by_hand(out, "mse"), atol=1e-6)


def test_gradient_reaches_the_predictor_and_encoder_but_not_the_target():
    model = _model()
    out = model.forward_batch(_batch())
    loss_terms(IJEPALoss(), out)["loss"].backward()
    assert all(p.grad is not None for p in model.predictor.parameters())
    assert any(float(p.grad.abs().sum()) > 0 for p in model.encoder.parameters())
    assert all(p.grad is None for p in model.target_encoder.parameters())


def test_bf16_prediction_against_fp32_targets_is_computed_in_fp32():
    """Under autocast the predictor ends in a bf16 linear layer, the target encoder in an fp32 layer
    norm: the loss is the fp32 loss of the bf16 predictions, and their gradient comes back in bf16."""
    out = _model().forward_batch(_batch())
    pred = out["prediction"].detach().to(torch.bfloat16).requires_grad_()
    mixed = {**out, "prediction": pred}
    loss = loss_terms(IJEPALoss(), mixed)["loss"]
    assert loss.dtype == torch.float32
    reference = _by_hand({**out, "prediction": pred.detach().float()})
    assert torch.allclose(loss.double(), reference, atol=1e-6)
    loss.backward()
    assert pred.grad.dtype == torch.bfloat16 and torch.isfinite(pred.grad.float()).all()


def test_variance_covariance_on_the_projection_or_the_pooled_context():
    model = _model(projector=Projector(32, 16, 8))
    out = model.forward_batch(_batch(b=5))
    terms = loss_terms(IJEPALoss(var_weight=2.0, cov_weight=0.5), out)
    var, cov = variance_covariance(out["projection"])
    assert torch.allclose(terms["var_loss"], var) and torch.allclose(terms["cov_loss"], cov)
    assert torch.allclose(terms["loss"], terms["pred_loss"] + 2.0 * var + 0.5 * cov)
    plain = _model().forward_batch(_batch(b=5))  # no projector: the pooled context
    var_p, _ = variance_covariance(plain["pooled"])
    assert torch.allclose(loss_terms(IJEPALoss(var_weight=1.0), plain)["var_loss"], var_p)
    with pytest.raises(TypeError, match="'projection' or 'pooled'"):
        IJEPALoss(var_weight=1.0).terms(plain["prediction"], plain["target_tokens"], plain["target_index"])


def test_binding_by_output_names_and_what_ddp_gathers():
    model = _model(projector=Projector(32, 16, 8))
    out = model_outputs(model, _batch())
    # the loss takes these outputs; the token outputs are not gathered across ranks, the projection is
    taken = loss_inputs(IJEPALoss(var_weight=1.0), out)
    assert taken == {"prediction", "target_tokens", "target_index", "target_valid", "projection", "pooled"}
    assert taken - set(model.unbatched_outputs) == {"projection", "pooled"}


def test_default_loss_follows_the_model_and_get_loss_knows_ijepa():
    assert isinstance(default_loss(_model()), IJEPALoss)
    assert isinstance(default_loss(JEPA(Encoder(hidden_dim=8, num_layers=1, num_heads=2), Predictor(hidden_dim=8))), JEPALoss)
    assert isinstance(get_loss("ijepa", loss="mse"), IJEPALoss)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"loss": "huber"}, "loss must be one of"), ({"beta": 0}, "beta"), ({"var_weight": -1}, "var_weight"),
     ({"var_gamma": 0}, "var_gamma")],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IJEPALoss(**kwargs)
