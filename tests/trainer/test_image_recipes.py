"""The four recipes as config choices for image runs: IJEPALoss's regularizer (vc | sigreg | none, on
the projection else the pooled context) and stop-gradient switch, IJEPA(target_encoder="none")
(LeJEPA-style: the online encoder on the full image with gradients, no EMA), what the trainer gathers
under DDP, and runs of each recipe from a config on a generated folder."""

from __future__ import annotations

import math

import pytest
import torch

from jepa import io as jepa_io
from jepa.config import config_from_dict
from jepa.data import MultiBlockMaskCollator, write_shapes_folder
from jepa.models import IJEPA, MaskedPredictor, Projector, VisionTransformer
from jepa.trainer import JEPATrainer
from jepa.trainer.images import image_loss, image_model, resolve_image_config
from jepa.trainer.losses import IJEPALoss, SIGRegLoss
from jepa.trainer.objective import gathered_inputs, loss_terms
from jepa.trainer.recipes import active_regularizer, recipe_name

CPU = torch.device("cpu")


def _model(target_encoder="ema", projector=None, seed=0):
    torch.manual_seed(seed)
    enc = VisionTransformer(image_size=16, patch_size=4, embed_dim=16, depth=1, num_heads=2)
    pred = MaskedPredictor(grid_size=(4, 4), embed_dim=16, predictor_embed_dim=8, depth=1, num_heads=2)
    return IJEPA(enc, pred, target_encoder=target_encoder, projector=projector)


def _batch(b=6, seed=0):
    col = MultiBlockMaskCollator(grid=(4, 4), num_targets=2, target_scale=(0.1, 0.2), min_keep=2)
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.randn(b, 3, 16, 16, generator=g), **col.sample(b, g)._asdict()}


def _vc_by_hand(z, gamma=1.0, eps=1e-4):
    """VICReg variance hinge and covariance term, float64, written out per dimension pair."""
    z = z.detach().double()
    n, d = z.shape
    c = z - z.sum(0) / n
    std = [math.sqrt(float((c[:, j] ** 2).sum()) / (n - 1) + eps) for j in range(d)]
    var = sum(max(0.0, gamma - s) for s in std) / d
    cov = sum((float((c[:, i] * c[:, j]).sum()) / (n - 1)) ** 2 for i in range(d) for j in range(d) if i != j) / d
    return var, cov


def _epps_pulley_by_hand(z, a, t_max=3.0, knots=17):
    """SIGReg from its definition, float64: N * sum_k w_k |ecf(t_k) - exp(-t_k^2/2)|^2 per direction,
    averaged over directions (w_k = exp(-t_k^2/2) * trapezoid weights doubled)."""
    x = z.detach().double() @ a.double()
    n = x.shape[0]
    dt = t_max / (knots - 1)
    total = 0.0
    for m in range(x.shape[1]):
        ep = 0.0
        for k in range(knots):
            t = k * dt
            phi = math.exp(-t * t / 2)
            w = phi * (dt if k in (0, knots - 1) else 2 * dt)
            re = float(torch.cos(t * x[:, m]).mean())
            im = float(torch.sin(t * x[:, m]).mean())
            ep += w * ((re - phi) ** 2 + im**2)
        total += n * ep
    return total / x.shape[1]


@pytest.mark.parametrize("with_projector", [True, False])
def test_vc_regularizer_matches_a_hand_computation_on_projection_else_pooled(with_projector):
    out = _model(projector=Projector(16, 12, 6) if with_projector else None).forward_batch(_batch())
    z = out["projection"] if with_projector else out["pooled"]
    var, cov = _vc_by_hand(z)
    terms = loss_terms(IJEPALoss(regularizer="vc", var_weight=2.0, cov_weight=0.5, regularizer_weight=3.0), out)
    assert terms["var_loss"].item() == pytest.approx(var, rel=1e-4, abs=1e-6)
    assert terms["cov_loss"].item() == pytest.approx(cov, rel=1e-4, abs=1e-7)
    assert "sigreg_loss" not in terms
    expected = terms["pred_loss"].item() + 3.0 * (2.0 * var + 0.5 * cov)
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("with_projector", [True, False])
def test_sigreg_regularizer_matches_the_epps_pulley_statistic_by_hand(with_projector):
    out = _model(projector=Projector(16, 12, 6) if with_projector else None).forward_batch(_batch())
    z = out["projection"] if with_projector else out["pooled"]
    reg = SIGRegLoss(num_slices=5, t_max=2.5, knots=9, seed=3)
    a = reg.directions(z.shape[1], call=0)
    expected = _epps_pulley_by_hand(z, a, t_max=2.5, knots=9)
    terms = loss_terms(IJEPALoss(regularizer=reg, regularizer_weight=0.25), out)
    assert set(terms) == {"loss", "pred_loss", "sigreg_loss"} and reg.calls == 1
    assert terms["sigreg_loss"].item() == pytest.approx(expected, rel=1e-4)
    assert terms["loss"].item() == pytest.approx(terms["pred_loss"].item() + 0.25 * expected, rel=1e-5)
    z.retain_grad()
    terms["loss"].backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0


def test_none_and_zero_weights_leave_only_the_prediction_term():
    out = _model(projector=Projector(16, 12, 6)).forward_batch(_batch())
    plain = loss_terms(IJEPALoss(), out)
    for loss in (IJEPALoss(regularizer="none", var_weight=1.0, cov_weight=1.0), IJEPALoss(regularizer="sigreg", regularizer_weight=0.0),
                 IJEPALoss(regularizer="vc")):
        terms = loss_terms(loss, out)
        assert set(terms) == {"loss", "pred_loss"} and not loss.regularizes
        assert torch.equal(terms["loss"], plain["loss"])


def test_sigreg_rows_are_not_gathered_by_the_trainer_vc_rows_are():
    """Under DDP a distributed SIGReg all-reduces its characteristic function itself: the trainer
    must pass each rank its own projection/pooled rows (gathering them would count samples twice);
    the variance/covariance terms need the gathered global batch."""
    out = _model(projector=Projector(16, 12, 6)).forward_batch(_batch())
    tokens = {"prediction", "target_tokens", "target_index", "target_valid"}
    assert gathered_inputs(IJEPALoss(regularizer="sigreg"), out) == tokens
    assert gathered_inputs(IJEPALoss(regularizer="vc", var_weight=1.0), out) == tokens | {"projection", "pooled"}
    local = IJEPALoss(regularizer=SIGRegLoss(distributed=False))
    assert local.reduces_over_ranks == frozenset() and gathered_inputs(local, out) == tokens | {"projection", "pooled"}


def test_target_encoder_none_gives_the_target_gradients_and_keeps_no_ema_state():
    model = _model("none")
    assert model.target_encoder is None
    assert not [k for k in model.state_dict() if k.startswith("target_encoder.")]
    out = model.forward_batch(_batch())
    assert out["target_tokens"].requires_grad
    out["target_tokens"].retain_grad()
    loss_terms(IJEPALoss(regularizer="none", stop_gradient=False), out)["loss"].backward()
    assert out["target_tokens"].grad is not None and float(out["target_tokens"].grad.abs().sum()) > 0
    assert model.update_target_encoder() == 0.0 and int(model.ema_step) == 0

    # the encoder's gradient is the context path's plus the target path's: it differs from the
    # gradient with the target detached (stop_gradient=True on the same outputs)
    detached = _model("none")
    out2 = detached.forward_batch(_batch())
    out2["target_tokens"].retain_grad()
    loss_terms(IJEPALoss(regularizer="none"), out2)["loss"].backward()
    assert out2["target_tokens"].grad is None  # stop_gradient=True detaches the target in the loss
    g_none = torch.cat([p.grad.flatten() for p in model.encoder.parameters()])
    g_sg = torch.cat([p.grad.flatten() for p in detached.encoder.parameters()])
    assert not torch.allclose(g_none, g_sg)


def test_target_encoder_ema_and_shared_give_the_target_no_gradient():
    for mode in ("ema", "shared"):
        model = _model(mode)
        out = model.forward_batch(_batch())
        assert not out["target_tokens"].requires_grad
        loss_terms(IJEPALoss(stop_gradient=False), out)["loss"].backward()
        if mode == "ema":
            assert all(p.grad is None for p in model.target_encoder.parameters())
            assert model.update_target_encoder() > 0 and int(model.ema_step) == 1
        else:
            assert model.target_encoder is None and model.update_target_encoder() == 0.0


def test_bad_recipe_settings_are_refused():
    with pytest.raises(ValueError, match="regularizer must be one of"):
        IJEPALoss(regularizer="vicreg")
    with pytest.raises(ValueError, match="regularizer_weight"):
        IJEPALoss(regularizer_weight=-1.0)
    with pytest.raises(TypeError, match="stop_gradient"):
        IJEPALoss(stop_gradient="no")
    plain = _model().forward_batch(_batch())
    with pytest.raises(TypeError, match="'projection' or 'pooled'"):
        IJEPALoss(regularizer="sigreg").terms(plain["prediction"], plain["target_tokens"], plain["target_index"])


# ----------------------------------------------------------------------------- from a config
RECIPES = {
    "ema": ({"target_encoder": "ema"}, {"regularizer": "none"}, "I-JEPA (EMA)"),
    "ema_vc": ({"target_encoder": "ema"}, {"regularizer": "vc", "var_weight": 1.0, "cov_weight": 1.0}, "I-JEPA + VC"),
    "ema_sigreg": ({"target_encoder": "ema"}, {"regularizer": "sigreg", "regularizer_weight": 0.05}, "I-JEPA + SIGReg"),
    "lejepa": ({"target_encoder": "none"}, {"regularizer": "sigreg", "regularizer_weight": 0.05}, "LeJEPA-style"),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_shapes_folder(tmp_path_factory.mktemp("shapes") / "images", num_train=24, num_val=8, image_size=16, num_classes=4)


def _config(folder, recipe, tmp_path=None):
    model, loss, _ = RECIPES[recipe]
    return config_from_dict({
        "model": {"arch": "auto", "patch_size": 4, "projector_hidden_dim": 16, "projector_dim": 8, **model,
                  "vit": {"embed_dim": 16, "depth": 1, "num_heads": 2, "predictor_embed_dim": 8, "predictor_depth": 1}},
        "loss": {"var_weight": 0.0, "cov_weight": 0.0, "sigreg": {"num_slices": 32, "knots": 9}, **loss},
        "data": {"dataset": "image_folder", "path": str(folder), "num_workers": 0, "masks": {"num_targets": 2}},
        "training": {"epochs": 1, "batch_size": 8, "device": "cpu", "seed": 1},
        "logging": {"progress_bar": False, "loggers": [], "collapse_check_every_n_steps": 0,
                    "output_dir": str(tmp_path) if tmp_path else "runs/unused"},
    })


def test_config_keys_build_the_loss_and_model_of_each_recipe(folder):
    for recipe, (_, _, name) in RECIPES.items():
        cfg = resolve_image_config(_config(folder, recipe), CPU)
        assert recipe_name(cfg) == name
        loss, model = image_loss(cfg), image_model(cfg, 3, None, None)
        assert loss.stop_gradient == (recipe != "lejepa")
        assert (model.target_encoder is None) == (recipe == "lejepa")
        assert (model.projector is not None) == (recipe != "ema") == loss.regularizes
        if "sigreg" in recipe:
            assert isinstance(loss.sigreg, SIGRegLoss) and loss.sigreg.distributed
            assert (loss.sigreg.num_slices, loss.sigreg.knots, loss.sigreg.seed) == (32, 9, 1)
            assert loss.reduces_over_ranks == {"projection", "pooled"}
    # loss.regularizer "vc" with zero weights (and no projector) is plain I-JEPA
    shipped = _config(folder, "ema_vc")
    shipped.loss.var_weight = shipped.loss.cov_weight = 0.0
    assert active_regularizer(shipped) == "none" and recipe_name(shipped) == "I-JEPA (EMA)"
    assert not image_loss(resolve_image_config(shipped, CPU)).regularizes


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_each_recipe_trains_a_few_steps_from_its_config(folder, recipe, tmp_path):
    trainer = JEPATrainer(_config(folder, recipe, tmp_path))
    before = {k: v.clone() for k, v in trainer.model.encoder.state_dict().items()}
    history = trainer.train()
    assert trainer.global_step == 24 // 8
    assert all(math.isfinite(v) for v in history["train_loss"] + history["val_loss"])
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.encoder.state_dict().items())
    assert int(trainer.model.ema_step) == (0 if recipe == "lejepa" else trainer.global_step)


def test_lejepa_checkpoint_round_trip(folder, tmp_path):
    trainer = JEPATrainer(_config(folder, "lejepa", tmp_path / "a"))
    trainer.train()
    path = trainer.save_checkpoint("lejepa.pt")
    state = jepa_io.load(path)
    assert not [k for k in state["model"] if "target_encoder." in k]

    longer = _config(folder, "lejepa", tmp_path / "b")
    longer.training.epochs = 2
    other = JEPATrainer(longer)
    other.load_checkpoint(path)
    a, b = trainer.model.state_dict(), other.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert other.model.target_encoder is None and other.global_step == trainer.global_step
    images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    trainer.model.eval()
    other.model.eval()
    assert torch.equal(trainer.model.embed(images), other.model.embed(images))
    other.train()  # a resumed LeJEPA-style run keeps training (no EMA state to restore)
    assert other.global_step == 2 * trainer.global_step and int(other.model.ema_step) == 0
