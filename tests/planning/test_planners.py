import numpy as np
import pytest
import torch
from torch import nn

from jepa.envs import TwoRooms, RandomPolicy, StraightLinePolicy
from jepa.envs.dynamics import TwoRoomsDynamics
from jepa.planning import CEM, MPPI, evaluate, mpc

A = torch.tensor([[0.9, 0.2], [-0.1, 0.8]], dtype=torch.float64)
B = torch.tensor([[1.0, 0.3], [0.0, 0.5]], dtype=torch.float64)


class LinearLatent(nn.Module):
    """z_{t+1} = A z_t + B a_t, encode = identity; counts rollout calls and candidates."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def encode(self, obs):
        return obs.double()

    def rollout(self, z0, actions):
        self.calls.append(actions.shape[0])
        out, z = [], z0
        for t in range(actions.shape[1]):
            z = z @ A.T + actions[:, t].double() @ B.T
            out.append(z)
        return torch.stack(out, 1)


def _optimum(z0, g, horizon):
    """The zero-cost plan: reach g in one step, then hold it (inside the action box here)."""
    binv = torch.linalg.inv(B)
    first = binv @ (g - A @ z0)
    hold = binv @ (g - A @ g)
    return torch.stack([first] + [hold] * (horizon - 1)).float()


@pytest.mark.parametrize("planner_cls, kwargs", [(CEM, {"iterations": 25}), (MPPI, {"iterations": 40, "noise_decay": 0.93})])
def test_planner_finds_the_known_optimum_of_a_linear_latent_model(planner_cls, kwargs):
    z0, g = torch.tensor([0.2, -0.1], dtype=torch.float64), torch.tensor([0.5, 0.1], dtype=torch.float64)
    expected = _optimum(z0, g, 4)
    assert expected.abs().max() < 1  # the optimum is inside the box, so its cost is exactly 0
    model = LinearLatent()
    planner = planner_cls(model, [-1, -1], [1, 1], horizon=4, samples=300, seed=0, **kwargs)
    plan = planner.plan(z0.numpy(), g.numpy())
    assert plan.shape == (4, 2) and plan.dtype == torch.float32
    torch.testing.assert_close(plan, expected, atol=0.05, rtol=0)
    # All candidates of an iteration go through the model in one batched rollout.
    assert model.calls == [300] * planner.iterations
    assert len(planner.plan_seconds) == 1 and planner.plan_seconds[0] > 0


def test_final_cost_only_constrains_the_end_point():
    z0, g = torch.tensor([0.0, 0.0], dtype=torch.float64), torch.tensor([0.6, 0.2], dtype=torch.float64)
    planner = CEM(LinearLatent(), [-1, -1], [1, 1], horizon=3, iterations=20, cost="final")
    plan = planner.plan(z0.numpy(), g.numpy()).double()
    z = z0
    for a in plan:
        z = A @ z + B @ a
    torch.testing.assert_close(z, g, atol=0.03, rtol=0)
    costs = planner.candidate_costs(z0[None], g[None], plan[None])
    assert costs.item() == pytest.approx(torch.linalg.norm(z - g).item())


def test_sum_cost_is_the_sum_of_latent_distances_over_every_step():
    planner = CEM(LinearLatent(), [-1, -1], [1, 1], horizon=2)
    z0, g = torch.zeros(1, 2, dtype=torch.float64), torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    actions = torch.tensor([[[0.5, 0.0], [0.0, 0.0]]])
    z1 = B @ torch.tensor([0.5, 0.0], dtype=torch.float64)
    z2 = A @ z1
    expected = torch.linalg.norm(z1 - g[0]) + torch.linalg.norm(z2 - g[0])
    assert planner.candidate_costs(z0, g, actions).item() == pytest.approx(expected.item())


def test_warm_start_shifts_the_previous_plan_and_reset_forgets_it():
    planner = CEM(LinearLatent(), [-1, -1], [1, 1], horizon=3, iterations=1, samples=4, elites=2)
    assert torch.equal(planner._initial_mean(), torch.zeros(3, 2))
    planner.plan(np.zeros(2), np.ones(2))
    previous = planner._previous.clone()
    mean = planner._initial_mean()
    assert torch.equal(mean[:2], previous[1:]) and torch.equal(mean[2], torch.zeros(2))
    planner.reset()
    assert torch.equal(planner._initial_mean(), torch.zeros(3, 2)) and planner.plan_seconds == []


def test_planner_runs_the_model_in_eval_mode_and_restores_training_mode():
    modes = []

    class Model(LinearLatent):
        def rollout(self, z0, actions):
            modes.append(self.training)
            return super().rollout(z0, actions)

    model = Model().train()
    MPPI(model, [-1, -1], [1, 1], horizon=2, iterations=2, samples=8).plan(np.zeros(2), np.ones(2))
    assert modes == [False, False] and model.training


@pytest.mark.parametrize("make", [
    lambda dyn, env: CEM(dyn, env.action_low, env.action_high, horizon=7, samples=64, iterations=4, elites=8),
    lambda dyn, env: MPPI(dyn, env.action_low, env.action_high, horizon=7, samples=64, iterations=4),
])
def test_mpc_with_true_dynamics_reaches_goals_in_the_same_room_and_across_the_wall(make):
    env = TwoRooms()
    planner = make(TwoRoomsDynamics(env), env)
    for start, goal in (((0.15, 0.2), (0.35, 0.6)), ((0.3, 0.25), (0.7, 0.25))):  # the second: wall in the way
        env.reset(start=start, goal=goal)
        result = mpc(env, planner, env.goal_observation(), max_steps=25)
        assert result.reached, (start, goal, env.position)
        assert np.linalg.norm(result.observations[-1] - np.array(goal)) <= env.goal_radius
        assert result.observations.shape == (result.steps + 1, 2) and result.actions.shape == (result.steps, 2)
        assert len(result.plan_seconds) == result.steps and result.ms_per_step > 0
        # Every recorded step is a real environment step from the previous observation.
        for t in range(result.steps):
            moved = env.move(result.observations[t].astype(np.float64), env.max_step * np.clip(result.actions[t], -1, 1))
            np.testing.assert_allclose(result.observations[t + 1], moved, atol=1e-6)


def test_evaluate_reports_success_by_pair_kind_for_policies_and_planners():
    env = TwoRooms()
    pairs = [((0.1, 0.1), (0.35, 0.85), "same_room"), ((0.2, 0.2), (0.8, 0.2), "cross_wall")]
    straight = evaluate(env, StraightLinePolicy(env), pairs, max_steps=30)
    assert straight["successes"] == [True, False]
    assert straight["by_kind"] == {"same_room": 1.0, "cross_wall": 0.0} and straight["success_rate"] == 0.5
    assert straight["steps"][1] == 30
    rnd = evaluate(env, RandomPolicy(env.action_low, env.action_high, seed=0), pairs, max_steps=5)
    assert rnd["success_rate"] == 0.0 and rnd["steps"] == [5, 5]


def test_bad_arguments_are_refused():
    model = LinearLatent()
    with pytest.raises(TypeError, match="encode"):
        CEM(nn.Linear(2, 2), [-1], [1], 3)
    with pytest.raises(ValueError, match="horizon"):
        CEM(model, [-1], [1], 0)
    with pytest.raises(ValueError, match="elites"):
        CEM(model, [-1], [1], 3, samples=10, elites=11)
    with pytest.raises(ValueError, match="cost"):
        MPPI(model, [-1], [1], 3, cost="mean")
    with pytest.raises(ValueError, match="low < high"):
        MPPI(model, [1, -1], [1, 1], 3)
    with pytest.raises(ValueError, match="temperature"):
        MPPI(model, [-1], [1], 3, temperature=0.0)
    with pytest.raises(ValueError, match="goal_obs contains NaN"):
        CEM(model, [-1, -1], [1, 1], 2, samples=4, elites=2, iterations=1).plan(np.zeros(2), np.array([np.nan, 0.0]))
    with pytest.raises(TypeError, match="plan"):
        mpc(TwoRooms(), object(), np.zeros(2), 5)
    with pytest.raises(ValueError, match="max_steps"):
        mpc(TwoRooms(), CEM(model, [-1, -1], [1, 1], 2), np.zeros(2), 0)


class _Scripted:
    """A bare environment: observation = step count; ends as scripted; gym (4) or Gymnasium (5) values."""

    def __init__(self, gymnasium, terminate_at=None, truncate_at=None):
        self.t, self.gymnasium, self.terminate_at, self.truncate_at = 0, gymnasium, terminate_at, truncate_at

    def observe(self):
        return np.array([float(self.t)])

    def step(self, action):
        self.t += 1
        terminated = self.t == self.terminate_at
        if self.gymnasium:
            return self.observe(), 0.0, terminated, self.t == self.truncate_at, {}
        return self.observe(), 0.0, terminated, {}


def test_run_controller_follows_termination_and_truncation():
    from jepa.planning import run_controller

    def policy(obs, goal):
        return np.zeros(1)

    done = run_controller(_Scripted(False, terminate_at=2), policy, None, 10)
    assert done.reached and done.steps == 2 and done.observations[:, 0].tolist() == [0, 1, 2]
    cut = run_controller(_Scripted(True, truncate_at=3), policy, None, 10)
    assert not cut.reached and cut.steps == 3
    budget = run_controller(_Scripted(True), policy, None, 4)
    assert not budget.reached and budget.steps == 4 and budget.info == {}


def test_evaluate_reports_final_distances():
    env = TwoRooms()
    pairs = [((0.2, 0.2), (0.8, 0.2), "cross_wall")]
    r = evaluate(env, StraightLinePolicy(env), pairs, max_steps=10)
    assert r["final_distance"] == [pytest.approx(0.32)]  # stuck on the wall face at x = 0.48


class SequenceLatent(nn.Module):
    """The final latent is z0 + M vec(actions) (M: 8 x 6, full column rank): with the final-step
    cost the planner minimises ||M vec(a) - (g - z0)||, a quadratic whose least-squares minimiser
    is known and, the latent having more dimensions than the plan, does not reach the goal."""

    def __init__(self):
        super().__init__()
        self.m = torch.randn(8, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64) / 3

    def encode(self, obs):
        return obs.double()

    def rollout(self, z0, actions):
        final = z0 + actions.double().flatten(1) @ self.m.T
        return torch.stack([torch.zeros_like(final)] * (actions.shape[1] - 1) + [final], 1)


@pytest.mark.parametrize("planner_cls, kwargs", [(CEM, {"iterations": 30}), (MPPI, {"iterations": 60, "noise_decay": 0.93})])
def test_planner_finds_the_least_squares_optimum_of_a_quadratic_latent_cost(planner_cls, kwargs):
    model = SequenceLatent()
    z0 = torch.zeros(8, dtype=torch.float64)
    g = torch.randn(8, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 0.3
    best = torch.linalg.lstsq(model.m, (g - z0)[:, None]).solution[:, 0]
    assert best.abs().max() < 0.9  # inside the action box
    optimum = float((model.m @ best - g).norm())
    assert optimum > 0.05  # the goal cannot be reached: a real minimum, not a zero
    planner = planner_cls(model, [-1, -1], [1, 1], horizon=3, samples=300, cost="final", seed=0, **kwargs)
    plan = planner.plan(z0.numpy(), g.numpy())
    torch.testing.assert_close(plan.flatten().double(), best, atol=0.02, rtol=0)
    assert float((model.m @ plan.flatten().double() - g).norm()) < optimum + 1e-3
