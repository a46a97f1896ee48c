import numpy as np
import pytest

from jepa.data import TrajectoryDataset
from jepa.envs import TwoRooms, collect


def test_collect_layout_and_consistency_with_the_environment(tmp_path):
    env = TwoRooms()
    path = tmp_path / "traj.npz"
    data = collect(env, episodes=3, steps=7, seed=5, path=path)
    assert data["observations"].shape == (3, 8, 2) and data["observations"].dtype == np.float32
    assert data["actions"].shape == (3, 7, 2) and data["actions"].dtype == np.float32
    np.testing.assert_array_equal(data["episode_lengths"], [8, 8, 8])
    assert (np.abs(data["actions"]) <= 1).all()
    # Replaying the recorded actions from the recorded start gives the recorded observations.
    for e in range(3):
        env.reset(start=data["observations"][e, 0].astype(np.float64))
        for t in range(7):
            obs = env.step(data["actions"][e, t])[0]
            np.testing.assert_allclose(obs, data["observations"][e, t + 1], atol=1e-6)
    with np.load(path) as f:
        for key in data:
            np.testing.assert_array_equal(f[key], data[key])
    assert not list(tmp_path.glob("*.tmp-*"))
    ds = TrajectoryDataset(path, horizon=2)
    assert len(ds) == 3 * (8 - 2)


def test_collect_is_seeded_and_action_repeat_holds_actions():
    a = collect(TwoRooms(), 2, 6, seed=1, action_repeat=3)
    b = collect(TwoRooms(), 2, 6, seed=1, action_repeat=3)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(a["actions"][:, 0], a["actions"][:, 2])
    assert not np.array_equal(a["actions"][:, 2], a["actions"][:, 3])
    c = collect(TwoRooms(), 2, 6, seed=2)
    assert not np.array_equal(a["observations"], c["observations"])


def test_collect_images_and_a_custom_policy():
    env = TwoRooms(observation="image", image_size=8)
    data = collect(env, 2, 3, policy=lambda obs, rng: np.array([0.5, 0.0]))
    assert data["observations"].shape == (2, 4, 1, 8, 8)
    np.testing.assert_array_equal(data["actions"], np.tile([0.5, 0.0], (2, 3, 1)).astype(np.float32))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"episodes": 0}, "episodes"), ({"steps": -1}, "steps"), ({"policy": "expert"}, "policy"), ({"policy": 3}, "policy"),
     ({"policy": lambda o, r: o, "action_repeat": 2}, "action_repeat")],
)
def test_collect_refuses_bad_arguments(kwargs, match):
    args = {"episodes": 1, "steps": 2, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        collect(TwoRooms(), **args)


def test_collect_records_the_true_states_the_environment_reports():
    env = TwoRooms(observation="image", image_size=8)
    data = collect(env, episodes=2, steps=5, seed=4)
    assert data["states"].shape == (2, 6, 2) and data["states"].dtype == np.float32
    same = collect(TwoRooms(), episodes=2, steps=5, seed=4)  # same seeds: the same moves, seen as positions
    np.testing.assert_array_equal(data["states"], same["observations"])
    np.testing.assert_array_equal(same["states"], same["observations"])
    for t in range(6):  # the images show the agent where the states say it is
        np.testing.assert_allclose(data["observations"][1, t, 0], env.render_at(data["states"][1, t].astype(np.float64)), atol=1e-6)

    class NoState:  # an environment whose info carries no "state": no states array
        action_low, action_high = np.array([-1.0]), np.array([1.0])

        def reset(self, seed=None):
            self.x = 0.0
            return np.array([self.x]), {}

        def step(self, action):
            self.x += float(action[0])
            return np.array([self.x]), 0.0, False, False, {}

    out = collect(NoState(), episodes=2, steps=3)
    assert "states" not in out and out["observations"].shape == (2, 4, 1)
