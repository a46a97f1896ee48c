import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from jepa.data import TrajectoryDataset


def _labelled(lengths, t_max, obs_dim=2):
    """obs[e, t] = (e, t, ...) and actions[e, t] = (e, t + 0.5): every item says where it came from.
    Padding after each episode's end is NaN, which must never be read."""
    e = len(lengths)
    obs = np.full((e, t_max, obs_dim), np.nan, dtype=np.float32)
    act = np.full((e, t_max - 1, 2), np.nan, dtype=np.float32)
    for i, n in enumerate(lengths):
        obs[i, :n, 0], obs[i, :n, 1] = i, np.arange(n)
        act[i, : n - 1, 0], act[i, : n - 1, 1] = i, np.arange(n - 1) + 0.5
    return {"observations": obs, "actions": act, "episode_lengths": np.array(lengths, dtype=np.int64)}


@pytest.mark.parametrize("horizon, frameskip", [(1, 1), (3, 1), (2, 2), (1, 3)])
def test_windows_never_cross_an_episode_end(horizon, frameskip):
    lengths = [9, 4, 7, 1, 6]
    ds = TrajectoryDataset(_labelled(lengths, 9), horizon=horizon, frameskip=frameskip)
    span = horizon * frameskip
    assert len(ds) == sum(max(0, n - span) for n in lengths)
    seen = set()
    for i in range(len(ds)):
        obs, act = ds[i]
        assert obs.shape == (horizon + 1, 2) and act.shape == (horizon, 2 * frameskip)
        assert torch.isfinite(obs).all() and torch.isfinite(act).all()
        ep, t0 = int(obs[0, 0]), int(obs[0, 1])
        assert (obs[:, 0] == ep).all() and (act[:, 0::2] == ep).all()
        assert obs[:, 1].tolist() == [t0 + k * frameskip for k in range(horizon + 1)]
        assert t0 + span <= lengths[ep] - 1
        # Between kept frames k and k+1: the frameskip raw actions t0 + k*frameskip + j, concatenated.
        expected = [[t0 + k * frameskip + j + 0.5 for j in range(frameskip)] for k in range(horizon)]
        assert act[:, 1::2].tolist() == expected
        seen.add((ep, t0))
    assert seen == {(e, t) for e, n in enumerate(lengths) for t in range(n - span)}


@pytest.mark.parametrize("horizon, frameskip, pairs", [(3, 1, False), (2, 2, False), (1, 3, True)])
def test_batched_fetch_gives_the_items_one_by_one(horizon, frameskip, pairs):
    ds = TrajectoryDataset(_labelled([9, 4, 7, 1, 6], 9), horizon=horizon, frameskip=frameskip, pairs=pairs)
    picks = [len(ds) - 1, 0, 3, -2, 3]
    batched = ds.__getitems__(picks)
    assert len(batched) == len(picks)
    for i, item in zip(picks, batched):
        assert len(item) == len(ds[i]) and all(torch.equal(a, b) for a, b in zip(item, ds[i]))
    # a DataLoader uses it: the same batch as collating the single items
    batch = next(iter(DataLoader(ds, batch_size=5)))
    single = [torch.stack(x) for x in zip(*(ds[i] for i in range(5)))]
    assert all(torch.equal(a, b) for a, b in zip(batch, single))
    with pytest.raises(IndexError, match="out of range"):
        ds.__getitems__([0, len(ds)])


def test_pairs_feed_an_action_model_batch():
    ds = TrajectoryDataset(_labelled([5, 3], 5), pairs=True)
    s_t, a_t, s_t1 = ds[0]
    assert s_t.tolist() == [0, 0] and a_t.tolist() == [0, 0.5] and s_t1.tolist() == [0, 1]
    batch = next(iter(DataLoader(ds, batch_size=6)))
    assert [tuple(x.shape) for x in batch] == [(6, 2), (6, 2), (6, 2)]
    assert len(ds) == 4 + 2


def test_pairs_train_jepa_action_with_the_v1_trainer(tmp_path):
    from jepa.models import JEPAAction, Predictor, WorldModel
    from jepa.trainer import create_trainer

    g = np.random.default_rng(0)
    pos = np.cumsum(g.uniform(-0.1, 0.1, (16, 9, 2)), axis=1).astype(np.float32)
    data = {"observations": pos, "actions": np.diff(pos, axis=1) * 10}
    loader = DataLoader(TrajectoryDataset(data, pairs=True), batch_size=32, shuffle=True)
    for model in (
        JEPAAction(Predictor(2, 32, 2, 16), Predictor(2, 32, 2, 16), Predictor(16)),
        WorldModel.mlp(2, 2, latent_dim=16, hidden_dim=32),
    ):
        trainer = create_trainer(model, device="cpu", save_dir=tmp_path / type(model).__name__, progress_bar=False)
        history = trainer.train(loader, num_epochs=2)
        assert len(history["train_loss"]) == 2 and all(np.isfinite(history["train_loss"]))


def test_images_and_uint8_scaling(tmp_path):
    obs = np.random.default_rng(0).integers(0, 256, (2, 5, 1, 8, 8), dtype=np.uint8)
    act = np.zeros((2, 4, 2), dtype=np.float32)
    path = tmp_path / "img.npz"
    np.savez(path, observations=obs, actions=act)
    ds = TrajectoryDataset(path, horizon=2)
    o, a = ds[1]
    assert o.shape == (3, 1, 8, 8) and o.dtype == torch.float32 and ds.obs_shape == (1, 8, 8)
    np.testing.assert_allclose(o.numpy(), obs[0, 1:4].astype(np.float32) / 255.0)
    assert len(ds) == 2 * 3 and ds.action_dim == 2


def test_dict_of_tensors_and_npz_give_the_same_items(tmp_path):
    data = _labelled([6, 6], 6)
    del data["episode_lengths"]
    path = tmp_path / "t.npz"
    np.savez(path, **data)
    a = TrajectoryDataset(path, horizon=2)
    b = TrajectoryDataset({k: torch.from_numpy(v) for k, v in data.items()}, horizon=2)
    assert len(a) == len(b) == 2 * 4
    for i in range(len(a)):
        for x, y in zip(a[i], b[i]):
            assert torch.equal(x, y)


def _bad(**changes):
    data = _labelled([5, 5, 5], 5)
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


@pytest.mark.parametrize(
    "data, match",
    [
        (_bad(actions=np.zeros((2, 4, 2), np.float32)), "'actions' has 2 episodes but 'observations' has E=3"),
        (_bad(actions=np.zeros((3, 5, 2), np.float32)), "'actions' must have T-1=4 steps"),
        (_bad(actions=np.zeros((3, 4), np.float32)), r"'actions' must have shape \(E, T-1, A\) \(rank 3\)"),
        (_bad(observations=np.zeros((3, 5), np.float32)), "'observations' must have shape"),
        (_bad(actions=None), r"missing array\(s\) \['actions'\]"),
        (_bad(episode_lengths=np.array([5, 6, 5])), "'episode_lengths' must be in \\[1, T=5\\], episode 1 has 6"),
        (_bad(episode_lengths=np.array([5.0, 5.0, 5.0])), "'episode_lengths' must be"),
        (_bad(observations=np.where(np.arange(5)[None, :, None] == 3, np.nan, np.ones((3, 5, 2), np.float32))), "'observations' holds NaN or inf in episode 0 at step 3"),
        (_bad(actions=np.full((3, 4, 2), np.inf, np.float32)), "'actions' holds NaN or inf in episode 0 at step 0"),
        (_bad(actions=np.zeros((3, 4, 2), dtype=bool)), "'actions' must be numeric"),
    ],
)
def test_bad_arrays_are_refused_naming_the_array(data, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TrajectoryDataset(data)


def test_bad_arguments_are_refused(tmp_path):
    data = _labelled([5], 5)
    with pytest.raises(ValueError, match="horizon must be 1"):
        TrajectoryDataset(data, horizon=2, pairs=True)
    with pytest.raises(ValueError, match="frameskip"):
        TrajectoryDataset(data, frameskip=0)
    with pytest.raises(FileNotFoundError, match="no such file"):
        TrajectoryDataset(tmp_path / "missing.npz")
    with pytest.raises(TypeError, match="source"):
        TrajectoryDataset([1, 2, 3])
    with pytest.raises(IndexError):
        TrajectoryDataset(data)[4]
