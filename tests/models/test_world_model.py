import numpy as np
import pytest
import torch
from torch import nn

from jepa.models import WorldModel
from jepa.trainer.world_model_loss import world_model_loss


def _linear(w, b):
    m = nn.Linear(w.shape[1], w.shape[0], dtype=torch.float64)
    with torch.no_grad():
        m.weight.copy_(torch.tensor(w))
        m.bias.copy_(torch.tensor(b))
    return m


W_S, B_S = np.array([[0.9, -0.2], [0.3, 1.1]]), np.array([0.1, -0.05])
W_A, B_A = np.array([[0.5, 0.2], [-0.4, 0.7]]), np.array([0.02, 0.0])
W_P, B_P = np.array([[-0.3, 0.1], [0.2, -0.6]]), np.array([0.01, 0.03])
W_C = np.array([[-0.3, 0.1, 0.25, -0.1], [0.2, -0.6, 0.05, 0.4]])  # predictor over [z, e] (concat)


def _tiny(target_encoder="ema", residual=True, conditioning="add"):
    w_p = W_C if conditioning == "concat" else W_P
    return WorldModel(
        _linear(W_S, B_S), _linear(W_A, B_A), _linear(w_p, B_P),
        target_encoder=target_encoder, residual=residual, conditioning=conditioning,
    )


def _hand(obs, act, residual=True, conditioning="add", w_s=W_S, b_s=B_S):
    """Float64 numpy: encoded frames, teacher-forced predictions and the autoregressive rollout."""
    z = obs @ W_S.T + B_S  # online latents (B, H+1, 2)
    target = obs[:, 1:] @ w_s.T + b_s
    e = act @ W_A.T + B_A

    def step(z_t, e_t):
        if conditioning == "concat":
            out = np.concatenate([z_t, e_t], -1) @ W_C.T + B_P
        else:
            out = (z_t + e_t) @ W_P.T + B_P
        return z_t + out if residual else out

    teacher = step(z[:, :-1], e)
    roll, cur = [], z[:, 0]
    for t in range(act.shape[1]):
        cur = step(cur, e[:, t])
        roll.append(cur)
    return z, teacher, np.stack(roll, 1), target


@pytest.mark.parametrize("residual, conditioning", [(True, "add"), (False, "add"), (True, "concat")])
def test_rollout_loss_matches_a_hand_computation(residual, conditioning):
    rng = np.random.default_rng(0)
    obs, act = rng.normal(size=(3, 5, 2)), rng.normal(size=(3, 4, 2))
    model = _tiny(residual=residual, conditioning=conditioning)
    out = model.forward_trajectory(torch.tensor(obs), torch.tensor(act))
    z, teacher, roll, target = _hand(obs, act, residual, conditioning)
    np.testing.assert_allclose(out["context"].detach().numpy(), z, rtol=1e-12)
    np.testing.assert_allclose(out["teacher_forcing"].detach().numpy(), teacher, rtol=1e-12)
    np.testing.assert_allclose(out["rollout"].detach().numpy(), roll, rtol=1e-12)
    np.testing.assert_allclose(out["target"].numpy(), target, rtol=1e-12)
    terms = world_model_loss(out, teacher_forcing_weight=0.5, rollout_weight=2.0)
    tf, ro = ((teacher - target) ** 2).mean(), ((roll - target) ** 2).mean()
    assert terms["teacher_forcing"].item() == pytest.approx(tf, rel=1e-12)
    assert terms["rollout"].item() == pytest.approx(ro, rel=1e-12)
    assert terms["loss"].item() == pytest.approx(0.5 * tf + 2.0 * ro, rel=1e-12)
    smooth = world_model_loss(out, smoothness_weight=0.3)
    step = ((z[:, 1:] - z[:, :-1]) ** 2).sum(-1).mean()
    assert smooth["smoothness"].item() == pytest.approx(step, rel=1e-12)
    assert smooth["loss"].item() == pytest.approx(tf + ro + 0.3 * step, rel=1e-12)
    l1 = world_model_loss(out, distance="l1")
    assert l1["rollout"].item() == pytest.approx(np.abs(roll - target).mean(), rel=1e-12)


def test_the_first_rollout_step_is_the_first_teacher_forced_step():
    rng = np.random.default_rng(1)
    out = _tiny().forward_trajectory(torch.tensor(rng.normal(size=(2, 4, 2))), torch.tensor(rng.normal(size=(2, 3, 2))))
    torch.testing.assert_close(out["rollout"][:, 0], out["teacher_forcing"][:, 0])
    assert not torch.allclose(out["rollout"][:, 2], out["teacher_forcing"][:, 2])


def test_ema_target_uses_the_ema_encoder_and_the_existing_update():
    model = _tiny("ema")
    with torch.no_grad():
        model.encoder.weight.add_(1.0)  # the online encoder moves; the target keeps W_S until updated
    rng = np.random.default_rng(2)
    obs, act = rng.normal(size=(2, 3, 2)), rng.normal(size=(2, 2, 2))
    out = model.forward_trajectory(torch.tensor(obs), torch.tensor(act))
    np.testing.assert_allclose(out["target"].numpy(), obs[:, 1:] @ W_S.T + B_S, rtol=1e-12)
    assert not out["target"].requires_grad
    assert model.update_target_encoder(momentum=0.25) == 0.25
    out = model.forward_trajectory(torch.tensor(obs), torch.tensor(act))
    w_t = 0.25 * W_S + 0.75 * (W_S + 1.0)
    np.testing.assert_allclose(out["target"].numpy(), obs[:, 1:] @ w_t.T + B_S, rtol=1e-12)


def test_target_modes_shared_is_stop_gradient_online_gets_gradient():
    rng = np.random.default_rng(3)
    obs, act = torch.tensor(rng.normal(size=(2, 3, 2))), torch.tensor(rng.normal(size=(2, 2, 2)))
    shared = _tiny("shared").forward_trajectory(obs, act)
    assert shared["target"].grad_fn is None
    torch.testing.assert_close(shared["target"], shared["context"][:, 1:].detach())
    model = _tiny("online")
    assert model.target_encoder is None
    out = model.forward_trajectory(obs, act)
    assert out["target"].requires_grad
    # Gradient of the target term alone reaches the encoder only in "online" mode.
    (-out["target"].sum()).backward()
    assert model.encoder.weight.grad is not None and model.encoder.weight.grad.abs().sum() > 0


def test_regularizer_sees_every_online_latent():
    rng = np.random.default_rng(4)
    out = _tiny().forward_trajectory(torch.tensor(rng.normal(size=(3, 5, 2))), torch.tensor(rng.normal(size=(3, 4, 2))))
    seen = []
    terms = world_model_loss(out, regularizer=lambda z: seen.append(z) or z.pow(2).mean(), regularizer_weight=0.1)
    assert seen[0].shape == (15, 2)
    expected = terms["teacher_forcing"] + terms["rollout"] + 0.1 * out["context"].pow(2).mean()
    torch.testing.assert_close(terms["loss"], expected)


def test_rollout_is_batched_over_candidates_and_matches_one_at_a_time():
    torch.manual_seed(0)
    model = WorldModel.mlp(2, 2, latent_dim=8, hidden_dim=16).eval()
    z0 = model.encode(torch.rand(5, 2))
    actions = torch.rand(5, 6, 2) * 2 - 1
    batched = model.rollout(z0, actions)
    assert batched.shape == (5, 6, 8)
    for i in range(5):
        torch.testing.assert_close(batched[i : i + 1], model.rollout(z0[i : i + 1], actions[i : i + 1]))


def test_pair_forward_is_the_first_rollout_step():
    torch.manual_seed(0)
    model = WorldModel.mlp(3, 2, latent_dim=8, hidden_dim=16)
    s_t, a_t, s_t1 = torch.rand(4, 3), torch.rand(4, 2), torch.rand(4, 3)
    prediction, target = model(s_t, a_t, s_t1)
    torch.testing.assert_close(prediction, model.rollout(model.encode(s_t, use_target=False), a_t[:, None])[:, 0])
    torch.testing.assert_close(target, model.encode(s_t1))  # the EMA copy (equal to the encoder at init)


class _TokenEncoder(nn.Module):
    """(B, 4) -> (B, 2 tokens, 3): stands in for a ViT/CNN on images."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 6)

    def forward(self, x):
        return self.proj(x.flatten(1)).view(-1, 2, 3)


def test_token_latents_and_image_shaped_observations():
    model = WorldModel(_TokenEncoder(), nn.Linear(2, 3), nn.Linear(3, 3), target_encoder="ema")
    obs = torch.rand(2, 4, 2, 2)  # (B, H+1, 2x2 "images")
    out = model.forward_trajectory(obs, torch.rand(2, 3, 2))
    assert out["rollout"].shape == out["target"].shape == (2, 3, 2, 3)
    assert out["context"].shape == (2, 4, 2, 3)
    assert model.rollout(model.encode(torch.rand(7, 2, 2)), torch.rand(7, 5, 2)).shape == (7, 5, 2, 3)
    assert world_model_loss(out)["loss"].isfinite()


def test_save_and_load_round_trip_keeps_the_target_mode(tmp_path):
    model = WorldModel.mlp(2, 2, latent_dim=8, hidden_dim=16, target_encoder="online", residual=False)
    model.save_pretrained(tmp_path)
    loaded = WorldModel.from_pretrained(tmp_path)
    assert loaded.target_mode == "online" and loaded.residual is False and loaded.target_encoder is None
    assert loaded.conditioning == "concat"
    x, a = torch.rand(3, 2), torch.rand(3, 4, 2)
    torch.testing.assert_close(loaded.rollout(loaded.encode(x), a), model.rollout(model.encode(x), a))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="target_encoder"):
        WorldModel.mlp(2, 2, target_encoder="frozen")
    with pytest.raises(ValueError, match="conditioning"):
        WorldModel.mlp(2, 2, conditioning="film")
    with pytest.raises(ValueError, match="action embedding size 3 != latent size 2"):
        WorldModel(nn.Linear(2, 2), nn.Linear(2, 3), nn.Linear(2, 2)).rollout(torch.rand(1, 2), torch.rand(1, 1, 2))
    with pytest.raises(ValueError, match="obs_dim"):
        WorldModel.mlp(0, 2)
    model = WorldModel.mlp(2, 2, latent_dim=8, hidden_dim=16)
    with pytest.raises(ValueError, match=r"obs \(B, H\+1, ...\)"):
        model.forward_trajectory(torch.rand(2, 3, 2), torch.rand(2, 3, 2))
    with pytest.raises(ValueError, match="rollout"):
        model.rollout(torch.rand(3, 8), torch.rand(2, 4, 2))
    out = model.forward_trajectory(torch.rand(2, 3, 2), torch.rand(2, 2, 2))
    with pytest.raises(ValueError, match="distance"):
        world_model_loss(out, distance="cosine")
    with pytest.raises(ValueError, match="lack"):
        world_model_loss({"rollout": out["rollout"]})
    with pytest.raises(ValueError, match="rollout_weight"):
        world_model_loss(out, rollout_weight=-1.0)


def test_image_observations_from_collection_to_a_plan():
    from jepa.data import TrajectoryDataset
    from jepa.envs import TwoRooms, collect
    from jepa.planning import CEM

    env = TwoRooms(observation="image", image_size=16)
    ds = TrajectoryDataset(collect(env, episodes=2, steps=6, seed=0), horizon=3)
    obs, act = (torch.stack(x) for x in zip(*(ds[i] for i in range(4))))
    assert obs.shape == (4, 4, 1, 16, 16) and act.shape == (4, 3, 2)
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.GELU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 8))
    model = WorldModel(cnn, nn.Linear(2, 8), nn.Linear(16, 8), conditioning="concat")
    terms = world_model_loss(model.forward_trajectory(obs, act), smoothness_weight=0.1)
    terms["loss"].backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    assert all(p.grad is None for p in model.target_encoder.parameters())
    env.reset(start=(0.2, 0.2), goal=(0.3, 0.3))
    plan = CEM(model, env.action_low, env.action_high, horizon=3, samples=16, iterations=2, elites=4).plan(env.observe(), env.goal_observation())
    assert plan.shape == (3, 2) and torch.isfinite(plan).all()


def test_conv_encoder_matches_a_functional_reference_and_checks_its_input():
    import torch.nn.functional as F

    from jepa.models import ConvEncoder

    enc = ConvEncoder(in_chans=2, image_size=(15, 9), latent_dim=5, channels=(3, 4), hidden_dim=7).double()
    x = torch.rand(3, 2, 15, 9, dtype=torch.float64)
    c1, c2 = enc.features[0], enc.features[2]
    h = F.gelu(F.conv2d(x, c1.weight, c1.bias, stride=2, padding=1))    # 15x9 -> 8x5
    h = F.gelu(F.conv2d(h, c2.weight, c2.bias, stride=2, padding=1))    # 8x5 -> 4x3
    assert h.shape == (3, 4, 4, 3)
    lin1, norm, _, lin2 = enc.head[1:]
    h = F.gelu(F.layer_norm(F.linear(h.reshape(3, -1), lin1.weight, lin1.bias), (7,), norm.weight, norm.bias, norm.eps))
    torch.testing.assert_close(enc(x), F.linear(h, lin2.weight, lin2.bias))
    with pytest.raises(ValueError, match=r"\(B, 2, 15, 9\)"):
        enc(torch.rand(3, 1, 15, 9, dtype=torch.float64))
    with pytest.raises(ValueError, match="channels"):
        ConvEncoder(channels=())
    with pytest.raises(ValueError, match="image_size"):
        ConvEncoder(image_size=(8, 8, 8))
    with pytest.raises(ValueError, match="latent_dim"):
        ConvEncoder(latent_dim=0)


def test_conv_world_model_round_trips_and_refuses_a_bad_shape(tmp_path):
    model = WorldModel.conv((1, 16, 16), 2, latent_dim=6, hidden_dim=16, channels=(4, 8), target_encoder="ema")
    assert model.conditioning == "concat" and model.target_encoder is not None
    model.save_pretrained(tmp_path)
    loaded = WorldModel.from_pretrained(tmp_path)
    x, a = torch.rand(3, 1, 16, 16), torch.rand(3, 4, 2)
    torch.testing.assert_close(loaded.rollout(loaded.encode(x), a), model.rollout(model.encode(x), a))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        WorldModel.conv((16, 16), 2)


def test_a_vision_transformer_state_encoder_on_rendered_images(tmp_path):
    """The ViT of jepa.models as the state encoder: token latents (B, N, D), the predictor per token,
    trained on TwoRooms renders, rebuilt from its recorded config, planned with in one batched rollout."""
    from jepa.data import TrajectoryDataset
    from jepa.envs import TwoRooms, collect
    from jepa.models import Predictor, VisionTransformer
    from jepa.planning import CEM

    env = TwoRooms(observation="image", image_size=16)
    ds = TrajectoryDataset(collect(env, episodes=2, steps=6, seed=0), horizon=2)
    obs, act = (torch.stack(x) for x in zip(*(ds[i] for i in range(4))))
    vit = VisionTransformer(image_size=16, patch_size=8, in_chans=1, embed_dim=8, depth=1, num_heads=2)
    model = WorldModel(vit, Predictor(2, 16, 2, output_dim=8), Predictor(16, 16, 2, output_dim=8), conditioning="concat")
    out = model.forward_trajectory(obs, act)
    assert out["rollout"].shape == out["target"].shape == (4, 2, 4, 8) and out["context"].shape == (4, 3, 4, 8)
    world_model_loss(out)["loss"].backward()
    assert all(p.grad is not None for p in vit.parameters() if p.requires_grad)
    model.save_pretrained(tmp_path)
    rebuilt = WorldModel.from_pretrained(tmp_path)
    assert isinstance(rebuilt.encoder, VisionTransformer)
    z = model.encode(obs[:, 0])
    torch.testing.assert_close(rebuilt.rollout(rebuilt.encode(obs[:, 0]), act), model.rollout(z, act))
    env.reset(start=(0.2, 0.2), goal=(0.3, 0.3))
    planner = CEM(model, env.action_low, env.action_high, horizon=3, samples=16, iterations=2, elites=4)
    plan = planner.plan(env.observe(), env.goal_observation())
    assert plan.shape == (3, 2) and torch.isfinite(plan).all()

