"""The v0 loss API: ContrastiveLoss, ReconstructionLoss, VICRegLoss, get_loss; jepa_prediction_loss via jepa.ops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from jepa.ops import info_nce
from jepa.trainer.losses import (
    ContrastiveLoss,
    IJEPALoss,
    JEPALoss,
    ReconstructionLoss,
    VICRegLoss,
    get_loss,
    jepa_prediction_loss,
)


def _old_prediction_loss(prediction, target, loss, normalize_target, beta):
    """The pre-jepa.ops implementation of jepa_prediction_loss, verbatim."""
    target = target.detach()
    if normalize_target:
        target = F.layer_norm(target, target.shape[-1:])
    if loss == "smooth_l1":
        return F.smooth_l1_loss(prediction, target, beta=beta)
    if loss == "mse":
        return F.mse_loss(prediction, target)
    return F.l1_loss(prediction, target)


@pytest.mark.parametrize("loss", ["smooth_l1", "mse", "l1"])
@pytest.mark.parametrize("normalize_target", [True, False])
def test_jepa_prediction_loss_unchanged_through_ops(loss, normalize_target):
    pred = torch.randn(3, 5, 7, requires_grad=True)
    target = (torch.randn(3, 5, 7) * 2).requires_grad_()
    out = jepa_prediction_loss(pred, target, loss=loss, normalize_target=normalize_target, beta=0.5)
    ref = _old_prediction_loss(pred, target, loss, normalize_target, 0.5)
    assert torch.equal(out, ref)
    out.backward()
    assert target.grad is None  # stop-gradient on the target is kept


def test_jepa_loss_api_kept():
    loss = JEPALoss()
    assert loss.uses_context is True
    terms = loss.terms(torch.randn(4, 3, 8), torch.randn(4, 3, 8), torch.randn(4, 5, 8))
    assert set(terms) == {"loss", "pred_loss", "var_loss", "cov_loss"}


# ---------------------------------------------------------------- ContrastiveLoss


def test_contrastive_in_batch_tiny_example_by_hand():
    pred = torch.tensor([[3.0, 4.0], [1.0, 0.0]])  # normalized: [0.6, 0.8], [1, 0]
    target = torch.tensor([[0.0, 2.0], [1.0, 0.0]])  # normalized: [0, 1], [1, 0]
    # logits / 0.5: [[1.6, 1.2], [0, 2]]
    row0 = math.log(math.exp(1.6) + math.exp(1.2)) - 1.6
    row1 = math.log(math.exp(0.0) + math.exp(2.0)) - 2.0
    loss = ContrastiveLoss(temperature=0.5, negative_sampling="in_batch")
    assert loss(pred, target).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # symmetric: columns as rows, logits.T = [[1.6, 0], [1.2, 2]]
    col0 = math.log(math.exp(1.6) + math.exp(0.0)) - 1.6
    col1 = math.log(math.exp(1.2) + math.exp(2.0)) - 2.0
    sym = ContrastiveLoss(temperature=0.5, negative_sampling="in_batch", symmetric=True)
    assert sym(pred, target).item() == pytest.approx(0.5 * ((row0 + row1) / 2 + (col0 + col1) / 2), rel=1e-6)


@pytest.mark.parametrize("symmetric", [False, True])
def test_contrastive_in_batch_equals_ops_info_nce_and_pools_tokens(symmetric):
    pred, target = torch.randn(6, 4, 9), torch.randn(6, 4, 9)
    loss = ContrastiveLoss(temperature=0.2, negative_sampling="in_batch", symmetric=symmetric)
    expected = info_nce(pred.mean(1), target.mean(1), temperature=0.2, symmetric=symmetric)
    assert torch.equal(loss(pred, target), expected)


@pytest.mark.parametrize("sampling", ["random", "hard"])
def test_all_negatives_equals_in_batch(sampling):
    pred, target = torch.randn(7, 5), torch.randn(7, 5)
    full = ContrastiveLoss(temperature=0.3, negative_sampling="in_batch")(pred, target)
    sampled = ContrastiveLoss(temperature=0.3, negative_sampling=sampling, num_negatives=6)(pred, target)
    assert sampled.item() == pytest.approx(full.item(), rel=1e-5)
    # above B - 1 is capped at B - 1
    capped = ContrastiveLoss(temperature=0.3, negative_sampling=sampling, num_negatives=50)(pred, target)
    assert capped.item() == pytest.approx(full.item(), rel=1e-5)


def test_hard_negatives_by_hand_and_ordering():
    torch.manual_seed(1)
    pred, target = torch.randn(9, 6, dtype=torch.float64), torch.randn(9, 6, dtype=torch.float64)
    t, k = 0.25, 3
    a, b = F.normalize(pred, dim=1), F.normalize(target, dim=1)
    s = (a @ b.T) / t
    expected = 0.0
    for i in range(9):
        others = sorted((s[i, j].item() for j in range(9) if j != i), reverse=True)[:k]
        expected += math.log(math.exp(s[i, i].item()) + sum(math.exp(v) for v in others)) - s[i, i].item()
    expected /= 9
    hard = ContrastiveLoss(temperature=t, negative_sampling="hard", num_negatives=k)(pred, target).item()
    assert hard == pytest.approx(expected, rel=1e-9)
    # in_batch (all negatives) >= hard (top-k) >= random (any k)
    in_batch = ContrastiveLoss(temperature=t, negative_sampling="in_batch")(pred, target).item()
    for seed in range(5):
        torch.manual_seed(seed)
        rand = ContrastiveLoss(temperature=t, negative_sampling="random", num_negatives=k)(pred, target).item()
        assert in_batch >= hard - 1e-12 and hard >= rand - 1e-12


def test_random_negatives_are_distinct_others():
    loss = ContrastiveLoss(negative_sampling="random", num_negatives=4)
    q = torch.randn(8, 3)
    idx = loss._negatives(q, q)
    assert idx.shape == (8, 4)
    for i in range(8):
        row = idx[i].tolist()
        assert i not in row and len(set(row)) == 4


def test_default_num_negatives_is_min_b_minus_1_and_16():
    loss = ContrastiveLoss(negative_sampling="hard")
    assert loss._negatives(torch.randn(5, 3), torch.randn(5, 3)).shape == (5, 4)
    assert loss._negatives(torch.randn(20, 3), torch.randn(20, 3)).shape == (20, 16)


@pytest.mark.parametrize("sampling", ["random", "in_batch", "hard"])
def test_perfect_alignment_gives_low_loss(sampling):
    z = torch.eye(8) * 5
    aligned = ContrastiveLoss(temperature=0.05, negative_sampling=sampling)(z, z.clone())
    assert aligned.item() < 1e-6
    shuffled = ContrastiveLoss(temperature=0.05, negative_sampling=sampling)(z, z.roll(1, dims=0))
    assert shuffled.item() > 10.0


def test_contrastive_gradients_flow_and_symmetric_sampled():
    pred = torch.randn(6, 4, requires_grad=True)
    target = torch.randn(6, 4, requires_grad=True)
    ContrastiveLoss(negative_sampling="hard", num_negatives=2, symmetric=True)(pred, target).backward()
    assert pred.grad.abs().sum() > 0 and target.grad.abs().sum() > 0


def test_contrastive_errors():
    with pytest.raises(ValueError, match="temperature must be a number > 0, got -1"):
        ContrastiveLoss(temperature=-1)
    with pytest.raises(ValueError, match="negative_sampling must be one of .* got 'easy'"):
        ContrastiveLoss(negative_sampling="easy")
    with pytest.raises(ValueError, match="num_negatives must be None or an int >= 1, got 0"):
        ContrastiveLoss(num_negatives=0)
    with pytest.raises(ValueError, match="num_negatives=4 has no effect"):
        ContrastiveLoss(negative_sampling="in_batch", num_negatives=4)
    with pytest.raises(ValueError, match="target shape"):
        ContrastiveLoss()(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"\(B, D\) or \(B, T, D\)"):
        ContrastiveLoss()(torch.randn(4), torch.randn(4))


# ---------------------------------------------------------------- ReconstructionLoss


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reconstruction_losses_by_hand(reduction):
    pred, target = torch.randn(3, 4, 5, dtype=torch.float64), torch.randn(3, 4, 5, dtype=torch.float64)
    d = pred - target
    red = {"mean": torch.mean, "sum": torch.sum, "none": lambda x: x}[reduction]
    expected = {
        "mse": red(d * d),
        "l1": red(d.abs()),
        "smooth_l1": red(torch.where(d.abs() < 1, 0.5 * d * d, d.abs() - 0.5)),
        "cosine": red(1 - (pred * target).sum(-1) / (pred.norm(dim=-1) * target.norm(dim=-1))),
    }
    for kind, ref in expected.items():
        out = ReconstructionLoss(loss_type=kind, reduction=reduction)(pred, target)
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)


def test_reconstruction_errors():
    with pytest.raises(ValueError, match="loss_type must be one of .* got 'kl'"):
        ReconstructionLoss(loss_type="kl")
    with pytest.raises(ValueError, match="reduction must be one of .* got 'avg'"):
        ReconstructionLoss(reduction="avg")
    with pytest.raises(ValueError, match="target shape"):
        ReconstructionLoss()(torch.randn(2, 3), torch.randn(3, 2))


# ---------------------------------------------------------------- VICRegLoss


def _vicreg_hand(x, y, sim_w, var_w, cov_w):
    """VICReg as in the paper's reference code, float64."""
    x, y = x.double(), y.double()
    n, d = x.shape
    repr_loss = ((x - y) ** 2).mean()
    x = x - x.mean(0)
    y = y - y.mean(0)
    std_x = torch.sqrt(x.var(0) + 1e-4)
    std_y = torch.sqrt(y.var(0) + 1e-4)
    std_loss = torch.clamp(1 - std_x, min=0).mean() / 2 + torch.clamp(1 - std_y, min=0).mean() / 2
    cov_x = x.T @ x / (n - 1)
    cov_y = y.T @ y / (n - 1)
    off = ~torch.eye(d, dtype=torch.bool)
    cov_loss = cov_x[off].pow(2).sum() / d + cov_y[off].pow(2).sum() / d
    return sim_w * repr_loss + var_w * std_loss + cov_w * cov_loss


def test_vicreg_matches_reference_and_pools():
    x = torch.randn(16, 6) * 0.5
    y = x + 0.1 * torch.randn(16, 6)
    out = VICRegLoss()(x, y)
    assert out.item() == pytest.approx(_vicreg_hand(x, y, 25.0, 25.0, 1.0).item(), rel=1e-5)
    x3, y3 = torch.randn(8, 3, 5), torch.randn(8, 3, 5)
    out3 = VICRegLoss(sim_weight=1.0, var_weight=2.0, cov_weight=0.5)(x3, y3)
    assert out3.item() == pytest.approx(_vicreg_hand(x3.mean(1), y3.mean(1), 1.0, 2.0, 0.5).item(), rel=1e-5)
    terms = VICRegLoss().terms(x, y)
    assert set(terms) == {"loss", "sim_loss", "var_loss", "cov_loss"}
    with pytest.raises(ValueError, match="var_weight must be a number >= 0, got -1"):
        VICRegLoss(var_weight=-1)


# ---------------------------------------------------------------- get_loss


def test_get_loss_names():
    assert isinstance(get_loss("jepa"), JEPALoss)
    assert isinstance(get_loss("JEPA", loss="mse"), JEPALoss)
    c = get_loss("InfoNCE", temperature=0.3)
    assert isinstance(c, ContrastiveLoss) and c.temperature == 0.3
    assert isinstance(get_loss("contrastive"), ContrastiveLoss)
    assert isinstance(get_loss("Reconstruction", loss_type="cosine"), ReconstructionLoss)
    assert isinstance(get_loss("vicreg"), VICRegLoss)
    assert isinstance(get_loss("ijepa"), IJEPALoss)
    with pytest.raises(ValueError, match="unknown loss name 'mae'.*contrastive, ijepa, infonce, jepa, reconstruction, vicreg"):
        get_loss("mae")


def test_v0_doc_example():
    contrastive_loss = ContrastiveLoss(temperature=0.1, negative_sampling="random")
    reconstruction_loss = ReconstructionLoss(loss_type="mse", reduction="mean")
    p, t = torch.randn(4, 3, 8), torch.randn(4, 3, 8)
    assert contrastive_loss(p, t).dim() == 0 and reconstruction_loss(p, t).dim() == 0
