"""jepa.io sharded checkpoints without processes: shard files laid out by hand as the format describes
(any world size), read back along any range and dimension; the commit protocol of save_sharded."""

from __future__ import annotations

import pytest
import torch

import jepa.io as jio
from jepa.io.sharded import SHARD_KEY, shard_rows


def _write(tmp_path, name: str, tensors: dict[str, tuple[torch.Tensor, int]], world: int, extra: dict | None = None):
    """A sharded checkpoint at ``tmp_path/name`` whose ``tensors`` (name -> (whole tensor, split dim))
    are cut over ``world`` ranks as FSDP cuts them."""
    save_id = "test-0001"
    index = {}
    for r in range(world):
        pieces = {}
        for key, (t, dim) in tensors.items():
            a, b = shard_rows(t.shape[dim], r, world)
            pieces[key] = t.narrow(dim, a, b - a).clone()
            index.setdefault(key, {"shape": list(t.shape), "dtype": t.dtype, "dim": dim, "rows": []})["rows"].append([a, b])
        jio.save({"save_id": save_id, "rank": r, "world_size": world, "tensors": pieces},
                 tmp_path / f"{name}.shards" / save_id / f"rank{r:05d}.pt")
    meta = {"model": {key.split(".", 1)[1]: {SHARD_KEY: key} for key in tensors}, "epoch": 3, **(extra or {})}
    meta["sharded"] = {"format": 1, "world_size": world, "save_id": save_id, "shards": f"{name}.shards/{save_id}",
                       "files": [f"rank{r:05d}.pt" for r in range(world)], "tensors": index}
    return jio.save(meta, tmp_path / name)


def test_shard_rows_follow_torch_chunk():
    for n in (0, 1, 5, 7, 16):
        for world in (1, 2, 3, 4):
            chunks = torch.arange(n).chunk(world) if n else []
            for r in range(world):
                a, b = shard_rows(n, r, world)
                expected = chunks[r].tolist() if r < len(chunks) else []
                assert list(range(a, b)) == expected, (n, world, r)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_any_range_along_any_dimension_reads_back_exactly(tmp_path, world):
    g = torch.Generator().manual_seed(world)
    w = torch.randn(7, 5, generator=g)
    table = torch.randn(1, 9, 4, generator=g)  # split along dim 1 (dim 0 is too short to split)
    path = _write(tmp_path, "ckpt.pt", {"model.w": (w, 0), "model.table": (table, 1)}, world)
    state, reader = jio.open_checkpoint(path, verify_shards=True)
    assert reader is not None and state["model"]["w"] == {SHARD_KEY: "model.w"} and state["epoch"] == 3
    for a, b in ((0, 7), (0, 3), (2, 6), (5, 7), (4, 4)):  # the rows M ranks would ask for
        assert torch.equal(reader.part("model.w", 0, a, b), w[a:b])
    assert torch.equal(reader.part("model.w", 1, 1, 4), w[:, 1:4])  # along another dim than saved
    assert torch.equal(reader.part("model.table", 1, 2, 8), table[:, 2:8])
    whole = jio.load(path)  # the metadata file's path gives the whole state
    assert "sharded" not in whole and whole["epoch"] == 3
    assert torch.equal(whole["model"]["w"], w) and torch.equal(whole["model"]["table"], table)
    with pytest.raises(ValueError, match="outside"):
        reader.part("model.w", 0, 3, 9)


def test_a_shard_of_another_save_is_refused(tmp_path):
    w = torch.randn(6, 2)
    path = _write(tmp_path, "a.pt", {"model.w": (w, 0)}, 2)
    shard = tmp_path / "a.pt.shards" / "test-0001" / "rank00001.pt"
    jio.save({"save_id": "other", "rank": 1, "world_size": 2, "tensors": {"model.w": w[3:]}}, shard)
    with pytest.raises(jio.CheckpointError, match="does not belong to"):
        jio.load(path)


def test_save_sharded_commits_last_and_a_failed_commit_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    first = jio.save_sharded({"model": {"w": torch.ones(3)}, "step": 1}, path, rank=0, world_size=1)
    assert first == path and jio.load(path)["step"] == 1
    jio.save_sharded({"model": {"w": torch.full((3,), 2.0)}, "step": 2}, path, rank=0, world_size=1)
    folders = list((tmp_path / "latest.pt.shards").iterdir())
    assert len(folders) == 1  # the previous save's shard folder is removed after the commit
    real_save = jio.save

    def failing_metadata(state, target, *args, **kwargs):
        if "sharded" in state:  # the commit
            raise OSError("disk full")
        return real_save(state, target, *args, **kwargs)

    monkeypatch.setattr(jio, "save", failing_metadata)
    with pytest.raises(OSError, match="metadata file failed"):
        jio.save_sharded({"model": {"w": torch.zeros(3)}, "step": 3}, path, rank=0, world_size=1)
    monkeypatch.setattr(jio, "save", real_save)
    state = jio.load(path)  # still the step-2 checkpoint, whole
    assert state["step"] == 2 and torch.equal(state["model"]["w"], torch.full((3,), 2.0))


def test_shard_paths_outside_the_checkpoint_folder_are_refused(tmp_path):
    path = _write(tmp_path / "run", "a.pt", {"model.w": (torch.randn(4, 2), 0)}, 2)
    meta = jio.load(path, shards=False)
    meta["sharded"]["shards"] = "../elsewhere"
    jio.save(meta, path)
    with pytest.raises(jio.CheckpointError, match="outside the checkpoint's folder"):
        jio.load(path)
