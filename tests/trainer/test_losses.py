import pytest
import torch
import torch.nn.functional as F

from jepa.trainer.losses import JEPALoss, jepa_prediction_loss, variance_covariance


def test_variance_covariance_by_hand():
    # two perfectly correlated dims with std 2 and one constant dim
    a = torch.tensor([-1.0, 1.0, -1.0, 1.0]) * 2 / (4 / 3) ** 0.5  # unbiased std exactly 2
    z = torch.stack([a, a, torch.zeros(4)], dim=1)
    var, cov = variance_covariance(z, gamma=1.0, eps=0.0)
    # relu(1 - std): 0, 0, 1 -> mean 1/3
    assert var.item() == pytest.approx(1 / 3)
    # off-diagonal cov(a, a) = 4, appears twice: (16 + 16) / 3
    assert cov.item() == pytest.approx(32 / 3, rel=1e-5)


def test_prediction_loss_layer_norms_target():
    pred, target = torch.randn(4, 3, 8), torch.randn(4, 3, 8) * 5 + 2
    ref = F.smooth_l1_loss(pred, F.layer_norm(target, (8,)))
    assert jepa_prediction_loss(pred, target).item() == pytest.approx(ref.item())
    assert jepa_prediction_loss(pred, target, loss="mse", normalize_target=False).item() == pytest.approx(F.mse_loss(pred, target).item())


def test_batch_target_norm_standardizes_each_feature():
    loss = JEPALoss(target_norm="batch", token_weight=1.0, global_weight=0.0, var_weight=0, cov_weight=0, loss="mse")
    target = torch.randn(16, 3, 4) * 3 + 1
    # a prediction equal to the batch-standardized target has zero loss
    t = (target - target.mean(0)) / target.var(0, unbiased=False).add(1e-5).sqrt()
    assert loss(t, target).item() == pytest.approx(0.0, abs=1e-10)


def test_global_term_compares_token_means():
    loss = JEPALoss(loss="mse", target_norm="none", token_weight=0.0, global_weight=1.0, var_weight=0, cov_weight=0)
    pred = torch.randn(4, 5, 6)
    target = torch.randn(4, 5, 6)
    terms = loss.terms(pred, target)
    expected = F.mse_loss(pred.mean(1), target.mean(1))
    assert terms["global_loss"].item() == pytest.approx(expected.item()) and terms["loss"].item() == pytest.approx(expected.item())


def test_only_regularizer_when_prediction_terms_are_off():
    loss = JEPALoss(token_weight=0.0, global_weight=0.0, var_weight=1.0, cov_weight=0.5)
    pred, target, ctx = torch.randn(8, 3, 4), torch.randn(8, 3, 4), torch.randn(8, 3, 4)
    var, cov = variance_covariance(ctx.mean(1))
    assert loss(pred, target, ctx).item() == pytest.approx((var + 0.5 * cov).item())


def test_projection_replaces_pooled_context_in_regularizer():
    loss = JEPALoss(token_weight=0.0, global_weight=0.0, var_weight=1.0, cov_weight=1.0)
    pred, target, ctx, proj = torch.randn(8, 3, 4), torch.randn(8, 3, 4), torch.randn(8, 3, 4), torch.randn(8, 16)
    var, cov = variance_covariance(proj)
    assert loss(pred, target, ctx, proj).item() == pytest.approx((var + cov).item())


@pytest.mark.parametrize(
    "kwargs, name",
    [({"loss": "huber"}, "loss"), ({"var_weight": -1}, "var_weight"), ({"target_norm": "group"}, "target_norm"), ({"regularize": "x"}, "regularize"), ({"var_gamma": 0}, "var_gamma")],
)
def test_bad_loss_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        JEPALoss(**kwargs)


class _RecordingOp:
    """Stands in for jepa.ops.jepa_loss inside jepa.trainer.losses: records each call's arguments."""

    def __init__(self, monkeypatch):
        import jepa.trainer.losses as losses_module

        self.calls = []
        real = losses_module.jepa_loss

        def record(pred, target, **kwargs):
            self.calls.append({"shape": tuple(pred.shape), **kwargs})
            return real(pred, target, **kwargs)

        monkeypatch.setattr(losses_module, "jepa_loss", record)


def test_layer_norm_of_the_target_is_fused_into_the_op(monkeypatch):
    op = _RecordingOp(monkeypatch)
    loss = JEPALoss(target_norm="layer", var_weight=0, cov_weight=0)
    pred, target = torch.randn(4, 3, 8), torch.randn(4, 3, 8) * 3 + 1
    value = loss(pred, target)
    assert [c["normalize_target"] for c in op.calls] == [True]  # the raw target goes in; the op normalizes
    assert value.item() == pytest.approx(F.smooth_l1_loss(pred, F.layer_norm(target, (8,))).item(), rel=1e-6)


def test_terms_with_weight_zero_are_not_computed(monkeypatch):
    op = _RecordingOp(monkeypatch)
    loss = JEPALoss(token_weight=0.0, global_weight=1.0, var_weight=1.0, cov_weight=0.0, target_norm="layer")
    pred, target, ctx = torch.randn(8, 3, 4), torch.randn(8, 3, 4), torch.randn(8, 3, 4)
    terms = loss.terms(pred, target, ctx)
    assert [c["shape"] for c in op.calls] == [(8, 4)]  # only the pooled (global) distance, no per-token one
    assert set(terms) == {"loss", "global_loss", "var_loss"}
    var, _ = variance_covariance(ctx.mean(1))
    expected = F.smooth_l1_loss(pred.mean(1), F.layer_norm(target.mean(1), (4,))) + var
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    # every weight 0: a zero loss that backward() accepts
    pred.requires_grad_(True)
    nothing = JEPALoss(token_weight=0.0, global_weight=0.0, var_weight=0.0, cov_weight=0.0)(pred, target)
    nothing.backward()
    assert nothing.item() == 0.0 and torch.equal(pred.grad, torch.zeros_like(pred))
