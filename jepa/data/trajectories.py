"""Trajectories for world models: windows of observations and actions that never cross an episode end.

Layout (an ``.npz`` file or a dict of arrays, as written by :func:`jepa.envs.collect`):

* ``observations``: ``(E, T, *obs_shape)``: ``E`` episodes of up to ``T`` observations (vectors
  ``(E, T, D)`` or images ``(E, T, C, H, W)``);
* ``actions``: ``(E, T-1, A)``: the action taken between observation ``t`` and ``t+1``;
* ``episode_lengths`` (optional): ``(E,)`` integers: episode ``e`` has ``episode_lengths[e]``
  observations, the rest of its row is padding (never read, may hold anything, NaN included).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

REQUIRED = ("observations", "actions")


def _load(source: Any) -> dict[str, np.ndarray]:
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"TrajectoryDataset: no such file {path!r}")
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except ValueError as exc:  # object arrays (pickles) are refused, not loaded
            raise ValueError(f"TrajectoryDataset: {path!r} holds an array that needs pickle ({exc}); store plain numeric arrays") from exc
    if isinstance(source, Mapping):
        out = {}
        for k, v in source.items():
            out[str(k)] = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
        return out
    raise TypeError(f"TrajectoryDataset: source must be an .npz path or a dict of arrays, got {type(source).__name__}")


def _as_float(name: str, a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0  # 8-bit images -> [0, 1]
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)) or a.dtype == np.bool_:
        raise TypeError(f"TrajectoryDataset: array {name!r} must be numeric, got dtype {a.dtype}")
    return a.astype(np.float32, copy=False)


class TrajectoryDataset(Dataset):
    """Windows of trajectories for world-model training.

    Item ``i`` is ``(obs, actions)``: ``obs`` ``(horizon+1, *obs_shape)`` float32 and ``actions``
    ``(horizon, A * frameskip)`` float32, taken from one episode: frames ``t, t+frameskip, ...,
    t+horizon*frameskip`` and, between two kept frames, the ``frameskip`` actions taken in between,
    concatenated. Every start ``t`` whose window fits inside its episode is one item, so windows
    never cross an episode end.

    With ``pairs=True`` (``horizon`` must be 1) items are ``(state_t, action_t, state_t1)``, the
    batches :class:`~jepa.models.JEPAAction` and the v1 trainer take.

    Args:
        source: an ``.npz`` path or a dict of numpy arrays / tensors in the layout of this module.
        horizon: transitions per window (>= 1).
        frameskip: raw steps between two kept frames (>= 1).
        pairs: yield ``(state_t, action_t, state_t1)`` triples.

    Raises:
        ValueError: naming the array, when an array is missing, has the wrong rank or size
            (mismatched ``E`` or ``T``), holds NaN/inf inside an episode, or when
            ``episode_lengths`` is out of range.

    ``uint8`` observations (images) are scaled to ``[0, 1]``; other numeric types become float32.
    """

    def __init__(self, source: Any, horizon: int = 1, frameskip: int = 1, pairs: bool = False) -> None:
        for name, value in (("horizon", horizon), ("frameskip", frameskip)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"TrajectoryDataset: {name} must be an int >= 1, got {value!r}")
        if pairs and horizon != 1:
            raise ValueError(f"TrajectoryDataset: pairs=True yields single transitions, so horizon must be 1, got {horizon!r}")
        self.horizon, self.frameskip, self.pairs = int(horizon), int(frameskip), bool(pairs)
        arrays = _load(source)
        missing = [k for k in REQUIRED if k not in arrays]
        if missing:
            raise ValueError(f"TrajectoryDataset: missing array(s) {missing}; found {sorted(arrays)}")
        obs, act = arrays["observations"], arrays["actions"]
        if obs.ndim < 3:
            raise ValueError(f"TrajectoryDataset: array 'observations' must have shape (E, T, *obs_shape), got {obs.shape}")
        e, t = obs.shape[:2]
        if t < 2:
            raise ValueError(f"TrajectoryDataset: array 'observations' needs T >= 2 steps per episode, got shape {obs.shape}")
        if act.ndim != 3:
            raise ValueError(f"TrajectoryDataset: array 'actions' must have shape (E, T-1, A) (rank 3), got rank {act.ndim} shape {act.shape}")
        if act.shape[0] != e:
            raise ValueError(f"TrajectoryDataset: array 'actions' has {act.shape[0]} episodes but 'observations' has E={e}")
        if act.shape[1] != t - 1:
            raise ValueError(f"TrajectoryDataset: array 'actions' must have T-1={t - 1} steps (observations have T={t}), got {act.shape[1]}")
        if "episode_lengths" in arrays:
            lengths = np.asarray(arrays["episode_lengths"])
            if lengths.shape != (e,) or not np.issubdtype(lengths.dtype, np.integer):
                raise ValueError(f"TrajectoryDataset: array 'episode_lengths' must be (E={e},) integers, got {lengths.dtype} {lengths.shape}")
            bad = np.flatnonzero((lengths < 1) | (lengths > t))
            if bad.size:
                raise ValueError(
                    f"TrajectoryDataset: array 'episode_lengths' must be in [1, T={t}], episode {int(bad[0])} has {int(lengths[bad[0]])}"
                )
            lengths = lengths.astype(np.int64)
        else:
            lengths = np.full(e, t, dtype=np.int64)
        obs, act = _as_float("observations", obs), _as_float("actions", act)
        for name, arr, offset in (("observations", obs, 0), ("actions", act, 1)):
            for ep in range(e):
                if not np.isfinite(arr[ep, : lengths[ep] - offset]).all():
                    step = int(np.flatnonzero(~np.isfinite(arr[ep, : lengths[ep] - offset].reshape(lengths[ep] - offset, -1)).any(1))[0])
                    raise ValueError(f"TrajectoryDataset: array {name!r} holds NaN or inf in episode {ep} at step {step}")
        self.observations = torch.from_numpy(np.ascontiguousarray(obs))
        self.actions = torch.from_numpy(np.ascontiguousarray(act))
        self.episode_lengths = torch.from_numpy(lengths)
        span = self.horizon * self.frameskip  # raw steps one window covers
        starts = [(ep, s) for ep in range(e) for s in range(int(lengths[ep]) - span)]
        self.index = torch.tensor(starts, dtype=torch.long).reshape(-1, 2)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """Shape of one observation."""
        return tuple(self.observations.shape[2:])

    @property
    def action_dim(self) -> int:
        """Width of one item's action (``A * frameskip``)."""
        return int(self.actions.shape[-1]) * self.frameskip

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def __getitem__(self, i: int):
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"TrajectoryDataset index {i} out of range for {n} windows")
        ep, s = (int(v) for v in self.index[i])
        span = self.horizon * self.frameskip
        obs = self.observations[ep, s : s + span + 1 : self.frameskip]
        act = self.actions[ep, s : s + span].reshape(self.horizon, -1)
        if self.pairs:
            return obs[0], act[0], obs[1]
        return obs, act

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, ...]]:
        """Items ``indices`` gathered in one indexing operation per array (what a ``DataLoader``
        calls for a batch; the same items as ``[self[i] for i in indices]``)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        n = len(self)
        if idx.numel() and (idx.min() < -n or idx.max() >= n):
            bad = int(idx[(idx < -n) | (idx >= n)][0])
            raise IndexError(f"TrajectoryDataset index {bad} out of range for {n} windows")
        rows = self.index[idx]
        ep, start = rows[:, :1], rows[:, 1:]
        span = self.horizon * self.frameskip
        obs = self.observations[ep, start + torch.arange(0, span + 1, self.frameskip)]
        act = self.actions[ep, start + torch.arange(span)].reshape(idx.numel(), self.horizon, -1)
        if self.pairs:
            return list(zip(obs[:, 0], act[:, 0], obs[:, 1]))
        return list(zip(obs, act))
