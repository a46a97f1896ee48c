"""JEPALoss's anti-collapse regularizer choices (vc | sigreg | none), its weight, the stop-gradient
switch, the LeJEPA-style target (JEPA(target_encoder="none")), and which outputs the trainer gathers."""

import pytest
import torch
import torch.nn.functional as F

from jepa.models import JEPA, Encoder, Predictor, Projector
from jepa.ops import sigreg
from jepa.trainer.losses import JEPALoss, SIGRegLoss, variance_covariance
from jepa.trainer.objective import gathered_inputs, loss_inputs


def _outputs(b=12, t=3, d=8, p=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "prediction": torch.randn(b, t, d, generator=g, requires_grad=True),
        "target": torch.randn(b, t, d, generator=g),
        "context": torch.randn(b, t, d, generator=g, requires_grad=True),
        "projection": torch.randn(b, p, generator=g, requires_grad=True),
    }


def test_sigreg_term_is_the_statistic_of_the_projection_on_the_calls_directions():
    out = _outputs()
    loss = JEPALoss(loss="mse", target_norm="none", token_weight=0.0, global_weight=1.0, regularizer=SIGRegLoss(num_slices=32, seed=3),
                    regularizer_weight=0.25)
    terms = loss.terms(**out)
    directions = SIGRegLoss(num_slices=32, seed=3).directions(16)  # call 0 of an identical loss
    expected_sigreg = sigreg(out["projection"].detach(), directions)
    expected_pred = F.mse_loss(out["prediction"].detach().mean(1), out["target"].mean(1))
    assert set(terms) == {"loss", "global_loss", "sigreg_loss"}
    torch.testing.assert_close(terms["sigreg_loss"].detach(), expected_sigreg)
    torch.testing.assert_close(terms["loss"].detach(), expected_pred + 0.25 * expected_sigreg)
    assert loss.sigreg.calls == 1  # the next call draws new directions


def test_sigreg_without_projection_acts_on_the_pooled_context_and_by_name():
    out = _outputs()
    out.pop("projection")
    loss = JEPALoss(token_weight=0.0, global_weight=0.0, regularizer="sigreg")
    assert isinstance(loss.sigreg, SIGRegLoss) and loss.sigreg.num_slices == 1024 and loss.sigreg.distributed
    got = loss.terms(**out)["loss"]
    expected = sigreg(out["context"].detach().mean(1), SIGRegLoss().directions(8))
    torch.testing.assert_close(got.detach(), expected)


def test_regularizer_weight_scales_vc_and_none_drops_it():
    out = _outputs()
    base = dict(loss="mse", target_norm="none", token_weight=1.0, global_weight=0.0, var_weight=1.0, cov_weight=0.5)
    pred = F.mse_loss(out["prediction"], out["target"])
    var, cov = variance_covariance(out["projection"])
    torch.testing.assert_close(JEPALoss(**base, regularizer_weight=3.0)(**out), pred + 3.0 * (var + 0.5 * cov))
    none = JEPALoss(**base, regularizer="none").terms(**out)
    assert set(none) == {"loss", "pred_loss"}
    torch.testing.assert_close(none["loss"], pred)


def test_stop_gradient_false_lets_the_target_receive_gradients():
    pred = torch.randn(6, 3, 4, requires_grad=True)
    target = torch.randn(6, 3, 4, requires_grad=True)
    JEPALoss(var_weight=0, cov_weight=0)(pred, target).backward()
    assert target.grad is None  # I-JEPA: stop-gradient
    JEPALoss(var_weight=0, cov_weight=0, stop_gradient=False)(pred, target).backward()
    assert target.grad is not None and target.grad.abs().sum() > 0


def test_none_target_is_the_online_encoder_with_gradients_and_no_ema():
    torch.manual_seed(0)
    model = JEPA(Encoder(hidden_dim=8, num_layers=1, num_heads=2, input_dim=4), Predictor(hidden_dim=8), target_encoder="none",
                 projector=Projector(8, 16, 16))
    assert model.target_encoder is None and model.update_target_encoder() == 0.0
    x, x1 = torch.randn(5, 3, 4), torch.randn(5, 3, 4)
    out = model.forward_features(x, x1)
    torch.testing.assert_close(out["target"], model.encoder(x1))
    assert out["target"].requires_grad
    # the target path alone reaches the encoder: a loss on the target only has encoder gradients
    out["target"].pow(2).sum().backward()
    assert model.encoder.embed.weight.grad is not None and model.encoder.embed.weight.grad.abs().sum() > 0
    shared = JEPA(Encoder(hidden_dim=8, num_layers=1, num_heads=2, input_dim=4), Predictor(hidden_dim=8), target_encoder="shared")
    assert not shared.forward_features(x, x1)["target"].requires_grad


def test_the_trainer_gathers_what_the_loss_does_not_reduce_itself():
    out = _outputs()
    vc = JEPALoss()
    assert gathered_inputs(vc, out) == loss_inputs(vc, out) == {"prediction", "target", "context", "projection"}
    sig = JEPALoss(regularizer="sigreg")
    assert sig.reduces_over_ranks == {"projection", "context"}
    assert gathered_inputs(sig, out) == {"prediction", "target"}
    # SIGReg on the gathered prediction must not reduce over ranks again
    on_prediction = JEPALoss(regularizer="sigreg", regularize="prediction")
    assert not on_prediction.sigreg.distributed and gathered_inputs(on_prediction, out) == loss_inputs(on_prediction, out)
    assert gathered_inputs(JEPALoss(regularizer="sigreg", regularizer_weight=0.0), out) == loss_inputs(vc, out)
    # a bare SIGRegLoss as the loss: its rows stay on their rank unless it does not reduce itself
    assert gathered_inputs(SIGRegLoss(), {"prediction": out["prediction"]}) == frozenset()
    assert gathered_inputs(SIGRegLoss(distributed=False), {"prediction": out["prediction"]}) == {"prediction"}


def test_named_reduced_outputs_of_a_custom_loss_are_not_gathered():
    def custom(prediction, target, projection):
        return prediction.sum() + projection.sum()

    custom.reduces_over_ranks = ("projection",)
    assert gathered_inputs(custom, _outputs()) == {"prediction", "target"}


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"regularizer": "vic"}, ValueError, "regularizer"),
        ({"regularizer_weight": -1.0}, ValueError, "regularizer_weight"),
        ({"stop_gradient": 1}, TypeError, "stop_gradient must be a bool"),
        ({"regularizer": SIGRegLoss(), "regularize": "prediction"}, ValueError, "distributed=False"),
    ],
)
def test_bad_regularizer_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        JEPALoss(**kwargs)
