import numpy as np
import pytest
import torch

from jepa.envs import EVAL_PAIRS, RandomPolicy, StraightLinePolicy, TwoRooms
from jepa.envs.dynamics import TwoRoomsDynamics


def _march(env, p, d, substeps=2000):
    """Independent oracle: many tiny moves, each taken if it lands in free space, else its x part,
    else its y part (frictionless sliding), else none."""
    p = np.array(p, dtype=float)
    dd = np.asarray(d, dtype=float) / substeps
    for _ in range(substeps):
        for cand in (p + dd, p + [dd[0], 0.0], p + [0.0, dd[1]]):
            cand = np.clip(cand, 0.0, 1.0)
            if env.is_free(cand):
                p = cand
                break
    return p


def test_free_step_moves_by_max_step_times_action():
    env = TwoRooms(max_step=0.1)
    obs, info = env.reset(start=(0.2, 0.3), goal=(0.3, 0.3))
    np.testing.assert_allclose(obs, [0.2, 0.3], atol=1e-7)
    obs, reward, terminated, truncated, info = env.step([0.5, -1.0])
    np.testing.assert_allclose(obs, [0.25, 0.2], atol=1e-7)
    assert reward == pytest.approx(-np.hypot(0.05, 0.1))
    assert not terminated and not truncated and not info["collided"]


def test_wall_stops_a_large_step_at_its_face():
    env = TwoRooms(max_step=1.0)
    env.reset(start=(0.2, 0.2), goal=(0.8, 0.2))
    obs, *_, info = env.step([1.0, 0.0])  # would end at x = 1.2, far past the wall
    np.testing.assert_allclose(obs, [0.48, 0.2], atol=1e-7)
    assert info["collided"]
    env.reset(start=(0.9, 0.8), goal=(0.1, 0.8))
    obs, *_ = env.step([-1.0, 0.0])
    np.testing.assert_allclose(obs, [0.52, 0.8], atol=1e-7)


def test_door_lets_a_large_step_through():
    env = TwoRooms(max_step=0.5)
    env.reset(start=(0.2, 0.5), goal=(0.9, 0.5))
    obs, *_ = env.step([1.0, 0.0])
    np.testing.assert_allclose(obs, [0.7, 0.5], atol=1e-7)


def test_slide_along_the_wall_then_through_the_door():
    # Hits the face at (0.48, 0.28), slides up to the jamb end (0.48, 0.4), then the blocked x
    # motion resumes for the rest of the step: ends at (0.58, 0.5).
    env = TwoRooms()
    np.testing.assert_allclose(env.move([0.3, 0.1], [0.4, 0.4]), [0.58, 0.5], atol=1e-12)
    # Pressed into the wall with no sideways motion: stays on the face.
    np.testing.assert_allclose(env.move([0.48, 0.2], [0.3, 0.0]), [0.48, 0.2], atol=1e-12)


@pytest.mark.parametrize("kwargs", [{}, {"wall_thickness": 0.1, "door_center": 0.3, "door_width": 0.1}])
def test_move_matches_a_fine_substep_oracle(kwargs):
    env = TwoRooms(**kwargs)
    rng = np.random.default_rng(1)
    for _ in range(25):
        p, d = env.sample_free(rng), rng.uniform(-0.6, 0.6, 2)
        np.testing.assert_allclose(env.move(p, d), _march(env, p, d), atol=2e-3)


def test_closed_door_is_never_crossed_even_with_huge_steps():
    env = TwoRooms(max_step=1.0, door_width=0.0)
    rng = np.random.default_rng(2)
    for episode in range(20):
        env.reset(seed=episode)
        room = env.room(env.position)
        for _ in range(100):
            env.step(rng.uniform(-1, 1, 2))
            assert env.is_free(env.position)
            assert env.room(env.position) == room


def test_open_door_positions_stay_free_and_rooms_do_change():
    env = TwoRooms(max_step=0.5)
    rng = np.random.default_rng(3)
    crossings = 0
    env.reset(seed=0)
    for _ in range(2000):
        before = env.room(env.position)
        env.step(rng.uniform(-1, 1, 2))
        assert env.is_free(env.position)
        crossings += env.room(env.position) != before
    assert crossings > 0


def test_torch_dynamics_match_the_environment_exactly():
    for kwargs in ({}, {"door_width": 0.0}, {"wall_thickness": 0.1, "door_center": 0.3}):
        env = TwoRooms(**kwargs)
        dyn = TwoRoomsDynamics(env)
        rng = np.random.default_rng(4)
        p = np.array([env.sample_free(rng) for _ in range(500)])
        p[:40, 0] = env.walls[0, 0]  # on the wall face
        p[:40, 1] = rng.uniform(0.0, env.walls[0, 3], 40)
        d = rng.uniform(-0.8, 0.8, (500, 2))
        ref = np.array([env.move(a, b) for a, b in zip(p, d)])
        out = dyn.move(torch.tensor(p), torch.tensor(d)).numpy()
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)


def test_goal_termination_and_goal_observation():
    env = TwoRooms(goal_radius=0.05)
    env.reset(start=(0.2, 0.2), goal=(0.26, 0.2))
    np.testing.assert_allclose(env.goal_observation(), [0.26, 0.2], atol=1e-7)
    *_, terminated, _, info = env.step([0.5, 0.0])
    assert terminated and info["is_success"] and info["distance"] == pytest.approx(0.01)


def test_reset_with_seed_is_reproducible_and_random_goal_is_away_from_start():
    env = TwoRooms()
    a = env.reset(seed=7)[0], env.goal
    b = env.reset(seed=7)[0], env.goal
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert np.linalg.norm(env.goal - env.position) > 2 * env.goal_radius


def test_image_observations_show_the_agent_where_it_is():
    env = TwoRooms(observation="image", image_size=16)
    obs, _ = env.reset(start=(0.1, 0.9), goal=(0.9, 0.1))
    assert obs.shape == (1, 16, 16) and obs.dtype == np.float32 == env.goal_observation().dtype
    row, col = np.unravel_index(np.argmax(obs[0]), obs[0].shape)
    assert (row, col) == (1, 1)  # top-left: row 0 is y = 1
    assert obs[0, 0, 8] == pytest.approx(0.5)  # the wall column, above the door
    gr, gc = np.unravel_index(np.argmax(env.goal_observation()[0]), (16, 16))
    assert (gr, gc) == (14, 14)


def test_eval_pairs_are_free_and_labelled_by_room():
    env = TwoRooms()
    kinds = [p.kind for p in EVAL_PAIRS]
    assert kinds.count("same_room") == 10 and kinds.count("cross_wall") == 10
    for pair in EVAL_PAIRS:
        assert env.is_free(pair.start) and env.is_free(pair.goal)
        assert (env.room(pair.start) == env.room(pair.goal)) == (pair.kind == "same_room")


def test_straight_line_policy_reaches_same_room_goals_but_not_blocked_ones():
    env = TwoRooms()
    policy = StraightLinePolicy(env)
    env.reset(start=(0.1, 0.1), goal=(0.35, 0.85))
    for _ in range(20):
        *_, done, _, _ = env.step(policy())
        if done:
            break
    assert done
    env.reset(start=(0.2, 0.2), goal=(0.8, 0.2))  # the wall is in the way
    for _ in range(20):
        *_, done, _, _ = env.step(policy())
    assert not done and env.position[0] == pytest.approx(0.48)


def test_random_policy_stays_in_bounds_and_is_seeded():
    a = RandomPolicy([-1, -2], [1, 2], seed=0)
    b = RandomPolicy([-1, -2], [1, 2], seed=0)
    acts = np.stack([a() for _ in range(200)])
    np.testing.assert_array_equal(acts, np.stack([b() for _ in range(200)]))
    assert (acts >= [-1, -2]).all() and (acts <= [1, 2]).all() and acts[:, 1].max() > 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_step": 0.0}, "max_step"),
        ({"door_center": 0.05}, "door"),
        ({"observation": "pixels"}, "observation"),
        ({"image_size": 4}, "image_size"),
        ({"goal_radius": True}, "goal_radius"),
    ],
)
def test_bad_constructor_arguments_are_refused(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TwoRooms(**kwargs)


def test_bad_reset_and_step_inputs_are_refused():
    env = TwoRooms()
    with pytest.raises(ValueError, match="inside the wall"):
        env.reset(start=(0.5, 0.1))
    with pytest.raises(ValueError, match="start"):
        env.reset(start=(0.1, 0.2, 0.3))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="finite"):
        env.step([np.nan, 0.0])
    with pytest.raises(ValueError, match="shape"):
        env.step([0.1, 0.2, 0.3])
