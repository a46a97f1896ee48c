"""AsyncCheckpointer and save(async_=True): snapshot semantics, wait, error surfacing, one in flight."""

from __future__ import annotations

import threading
import time

import pytest
import torch

import jepa.io as jio
from jepa.io import _async


def _state(seed=0, n=1000):
    gen = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(n, generator=gen), "nc": torch.randn(8, 5, generator=gen).t(), "step": seed, "h": (1, 2.5)}


def test_async_save_writes_the_snapshot_taken_at_call_time(tmp_path):
    state = _state()
    expected = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in state.items()}
    ckpt = jio.AsyncCheckpointer()
    assert ckpt.save(state, tmp_path / "a.pt") == tmp_path / "a.pt"
    state["w"].add_(1.0)  # the training loop goes on mutating its tensors
    state["nc"].mul_(0.0)
    assert ckpt.wait() == tmp_path / "a.pt"
    out = jio.load(tmp_path / "a.pt")
    for k, v in expected.items():
        assert torch.equal(out[k], v) if isinstance(v, torch.Tensor) else out[k] == v
    assert ckpt.wait() is None and not ckpt.in_flight


def test_buffers_are_reused_for_the_same_layout_and_results_stay_right(tmp_path):
    ckpt = jio.AsyncCheckpointer()
    state = _state(1)
    ckpt.save(state, tmp_path / "1.pt")
    first = ckpt._buffers
    before = state["w"].clone()
    state["w"].add_(2.0)
    ckpt.save(state, tmp_path / "2.pt")  # waits for save 1, then copies into the same buffers
    assert ckpt._buffers is first
    ckpt.wait()
    assert torch.equal(jio.load(tmp_path / "2.pt")["w"], state["w"])
    assert torch.equal(jio.load(tmp_path / "1.pt")["w"], before)
    ckpt.save({"other": torch.zeros(3)}, tmp_path / "3.pt")  # new layout: new buffers
    assert ckpt._buffers is not first
    ckpt.close()


def test_at_most_one_save_in_flight(tmp_path, monkeypatch):
    gate = threading.Event()
    running = []
    real_write = _async.write_file

    def slow_write(*args, **kwargs):
        running.append(1)
        assert len(running) == 1, "two saves ran at once"
        gate.wait(10)
        try:
            return real_write(*args, **kwargs)
        finally:
            running.pop()

    monkeypatch.setattr(_async, "write_file", slow_write)
    ckpt = jio.AsyncCheckpointer()
    ckpt.save(_state(0), tmp_path / "a.pt")
    assert ckpt.in_flight and ckpt.pending_path == tmp_path / "a.pt"
    second_started = threading.Event()

    def second():
        ckpt.save(_state(1), tmp_path / "b.pt")
        second_started.set()

    t = threading.Thread(target=second)
    t.start()
    time.sleep(0.2)
    assert not second_started.is_set()  # blocked behind the first save
    assert not (tmp_path / "a.pt").exists()
    gate.set()
    t.join(10)
    assert second_started.is_set()
    ckpt.wait()
    assert jio.load(tmp_path / "a.pt")["step"] == 0 and jio.load(tmp_path / "b.pt")["step"] == 1


def test_background_error_surfaces_on_the_next_call(tmp_path):
    (tmp_path / "blocker").write_text("a file, not a folder")
    ckpt = jio.AsyncCheckpointer()
    bad = tmp_path / "blocker" / "x.pt"
    with pytest.raises(OSError):
        ckpt.save(_state(), bad)  # mkdir of the parent fails up front, in the caller
    ckpt2 = jio.AsyncCheckpointer()
    (tmp_path / "d.pt").mkdir()  # rename over a directory fails in the background
    ckpt2.save(_state(), tmp_path / "d.pt")
    with pytest.raises(jio.CheckpointError, match=r"background save of .*d\.pt.* failed: IsADirectoryError") as info:
        ckpt2.save(_state(), tmp_path / "ok.pt")
    assert isinstance(info.value.__cause__, OSError)
    assert not (tmp_path / "ok.pt").exists()  # the failing call started nothing
    ckpt2.save(_state(3), tmp_path / "ok.pt")  # the error was reported once; the next save works
    assert ckpt2.wait() == tmp_path / "ok.pt" and jio.load(tmp_path / "ok.pt")["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "d.pt", "ok.pt"]  # no tmp left


def test_error_surfaces_on_wait(tmp_path):
    (tmp_path / "d.pt").mkdir()
    ckpt = jio.AsyncCheckpointer()
    ckpt.save(_state(), tmp_path / "d.pt")
    with pytest.raises(jio.CheckpointError, match="failed"):
        ckpt.wait()
    assert ckpt.wait() is None


def test_module_level_async_save_and_load_waits_for_it(tmp_path):
    state = _state(7)
    path = jio.save(state, tmp_path / "m.pt", async_=True)
    out = jio.load(path)  # waits for the pending write of this path
    assert out["step"] == 7 and torch.equal(out["w"], state["w"])
    assert jio.wait() is None


def test_async_checkpointer_argument_checks(tmp_path):
    with pytest.raises(ValueError, match="num_threads"):
        jio.AsyncCheckpointer(num_threads=-2)
    ckpt = jio.AsyncCheckpointer()
    with pytest.raises(TypeError, match="mapping"):
        ckpt.save([1], tmp_path / "x.pt")
    with pytest.raises(TypeError, match="path"):
        ckpt.save({}, None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_async_snapshot_of_cuda_tensors_uses_pinned_buffers(tmp_path):
    state = {"w": torch.randn(1 << 16, device="cuda")}
    expected = state["w"].cpu()
    ckpt = jio.AsyncCheckpointer()
    ckpt.save(state, tmp_path / "g.pt")
    state["w"].add_(1.0)  # queued after the snapshot copy on the same stream
    ckpt.wait()
    assert ckpt._buffers[0].is_pinned()
    assert torch.equal(jio.load(tmp_path / "g.pt")["w"], expected)
    assert jio.load(tmp_path / "g.pt", map_location="cuda")["w"].is_cuda
