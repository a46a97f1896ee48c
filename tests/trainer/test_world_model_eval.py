"""Offline evaluation of world models: open-loop rollout errors against a float64 hand computation,
the linear state probe, and the callback's logging."""

import numpy as np
import pytest
import torch
from torch import nn

from jepa.models import WorldModel
from jepa.trainer.world_model_eval import StateProbe, WorldModelEvaluation, rollout_errors, sample_windows, state_targets


def _linear(w, b):
    m = nn.Linear(w.shape[1], w.shape[0], dtype=torch.float64)
    with torch.no_grad():
        m.weight.copy_(torch.tensor(w))
        m.bias.copy_(torch.tensor(b))
    return m


W_S, B_S = np.array([[0.9, -0.2], [0.3, 1.1]]), np.array([0.1, -0.05])
W_A, B_A = np.array([[0.5, 0.2], [-0.4, 0.7]]), np.array([0.02, 0.0])
W_P, B_P = np.array([[-0.3, 0.1], [0.2, -0.6]]), np.array([0.01, 0.03])


def _tiny():
    # the EMA target starts as a copy of the encoder, so targets are W_S x + B_S too
    return WorldModel(_linear(W_S, B_S), _linear(W_A, B_A), _linear(W_P, B_P), conditioning="add")


def test_rollout_errors_match_a_float64_hand_computation():
    rng = np.random.default_rng(0)
    obs, act = rng.normal(size=(6, 5, 2)), rng.normal(size=(6, 4, 2))
    states = obs * 2.0 - 1.0  # true states: a linear function of the observations
    z = obs @ W_S.T + B_S
    e = act @ W_A.T + B_A
    cur, roll = z[:, 0], []
    for t in range(4):
        cur = cur + (cur + e[:, t]) @ W_P.T + B_P
        roll.append(cur)
    roll = np.stack(roll, 1)
    target = z[:, 1:]
    mse = ((roll - target) ** 2).mean(axis=(0, 2))
    spread = target.reshape(-1, 2).var(axis=0).mean()
    # the probe reads states from latents: fitted here on encoded frames, where it is exact
    probe = StateProbe(ridge=0.0).fit(torch.tensor(z.reshape(-1, 2)), torch.tensor(states.reshape(-1, 2)))
    read = (roll.reshape(-1, 2) - B_S) @ np.linalg.inv(W_S).T * 2.0 - 1.0  # the exact inverse map
    state_err = np.linalg.norm(read - states[:, 1:].reshape(-1, 2), axis=-1).reshape(6, 4).mean(0)

    out = rollout_errors(_tiny(), torch.tensor(obs), torch.tensor(act), torch.tensor(states), probe)
    np.testing.assert_allclose(out["latent_mse"], mse, rtol=1e-9)
    np.testing.assert_allclose(out["latent_relative"], mse / spread, rtol=1e-9)
    np.testing.assert_allclose(out["state_error"], state_err, rtol=1e-6)
    assert out["state_error_floor"] < 1e-9
    assert out["latent_mse"][0] < out["latent_mse"][-1]  # this model's errors compound over the horizon


def test_state_probe_recovers_a_linear_map_and_refuses_use_before_fit():
    g = torch.Generator().manual_seed(0)
    s = torch.rand(200, 2, generator=g)
    a = torch.randn(2, 5, generator=g)
    z = s @ a + 0.3
    probe = StateProbe(ridge=1e-9).fit(z, s)
    assert torch.allclose(probe(z), s.double(), atol=1e-6)
    with pytest.raises(RuntimeError, match="fit"):
        StateProbe()(z)


def test_sample_windows_are_fixed_by_the_seed_and_carry_the_states():
    rng = np.random.default_rng(1)
    arrays = {"observations": rng.normal(size=(3, 8, 1, 4, 4)).astype(np.float32), "actions": rng.normal(size=(3, 7, 2)).astype(np.float32),
              "states": rng.normal(size=(3, 8, 2)).astype(np.float32)}
    obs, act, states = sample_windows(arrays, 3, 5, seed=4)
    again = sample_windows(arrays, 3, 5, seed=4)
    assert obs.shape == (5, 4, 1, 4, 4) and act.shape == (5, 3, 2) and states.shape == (5, 4, 2)
    assert torch.equal(obs, again[0]) and torch.equal(states, again[2])
    # each window's states are those of its observations' frames
    for i in range(5):
        hits = [(e, t) for e in range(3) for t in range(5) if np.array_equal(arrays["observations"][e, t], obs[i, 0].numpy())]
        (ep, t0), = hits
        np.testing.assert_array_equal(states[i].numpy(), arrays["states"][ep, t0 : t0 + 4])
    assert state_targets({"observations": arrays["observations"]}) is None  # images without states: no state space
    with pytest.raises(ValueError, match="states"):
        state_targets({"observations": arrays["observations"], "states": np.zeros((3, 7, 2))})
    with pytest.raises(ValueError, match="no window"):
        sample_windows(arrays, 9, 5)


class _Logger:
    def __init__(self):
        self.rows = []

    def log_metrics(self, metrics, step):
        self.rows.append((step, dict(metrics)))


class _Trainer:
    def __init__(self):
        self.global_step, self.max_epochs, self.history, self.logger, self.is_global_zero = 7, 4, {"train_loss": []}, _Logger(), True


def test_callback_adds_logs_and_records_every_n_epochs():
    rng = np.random.default_rng(2)
    pos = np.cumsum(rng.uniform(-0.05, 0.05, (6, 12, 2)), axis=1).astype(np.float32)
    arrays = {"observations": pos, "actions": np.diff(pos, axis=1) * 20}
    cb = WorldModelEvaluation(arrays, arrays, horizon=5, windows=10, every_n_epochs=2)
    model = WorldModel.mlp(2, 2, latent_dim=4, hidden_dim=16)
    trainer = _Trainer()
    metrics = {"epoch": 1}
    cb.on_validation_end(trainer, model, metrics)
    assert metrics == {"epoch": 1} and cb.records == []  # not an evaluation epoch
    metrics = {"epoch": 2}
    cb.on_validation_end(trainer, model, metrics)
    (step, epoch, results), = cb.records
    assert (step, epoch) == (7, 2) and len(results["latent_mse"]) == 5 and len(results["state_error"]) == 5
    assert metrics["rollout_latent_mse"] == pytest.approx(np.mean(results["latent_mse"]))
    assert metrics["rollout_state_error_final"] == pytest.approx(results["state_error"][-1])
    assert trainer.history["rollout_latent_mse"] == [metrics["rollout_latent_mse"]]
    (logged_step, logged), = trainer.logger.rows
    assert logged_step == 7 and logged["val/rollout_latent_relative"] == pytest.approx(metrics["rollout_latent_relative"])
    cb.on_validation_end(trainer, model, {"epoch": 3})
    cb.on_validation_end(trainer, model, {"epoch": 4})  # the last epoch is always evaluated
    assert [r[1] for r in cb.records] == [2, 4]
