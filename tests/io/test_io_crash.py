"""Crash safety: SIGKILL in the middle of a save, and a save that fails on a write error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import torch

import jepa.io as jio
from jepa.trainer.utils import get_best_checkpoint

CHILD_BIG_SAVE = textwrap.dedent(
    """
    import sys, torch, jepa.io as jio
    state = {"big": torch.ones(64 << 20 // 4 * 4), "loss": 0.1}  # 256 MB
    print("ready", flush=True)
    jio.save(state, sys.argv[1], num_threads=1)
    print("done", flush=True)
    """
)


def test_sigkill_during_save_keeps_the_old_file_loadable(tmp_path):
    path = tmp_path / "ckpt.pt"
    jio.save({"old": torch.arange(4.0), "loss": 0.5}, path)
    old = path.read_bytes()
    child = subprocess.Popen([sys.executable, "-c", CHILD_BIG_SAVE, str(path)], stdout=subprocess.PIPE, text=True)
    tmp = tmp_path / f"ckpt.pt.tmp-{child.pid}"
    try:
        assert child.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 120
        while not tmp.exists():
            assert child.poll() is None, "the child finished before the temporary file was seen"
            assert time.monotonic() < deadline, "the temporary file never appeared"
            time.sleep(0.0005)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert path.read_bytes() == old  # rename never happened: the old file is untouched
    state = jio.load(path)
    assert torch.equal(state["old"], torch.arange(4.0)) and state["loss"] == 0.5
    # The leftover temporary file is never taken for a half-written checkpoint: its header is written
    # last, so loading it either fails cleanly or (had every byte been written before the kill) gives
    # the whole new state; and checkpoint discovery skips *.tmp-<pid> names.
    assert tmp.exists()  # SIGKILL leaves it behind: no cleanup ran
    try:
        partial = jio.load(tmp)
    except jio.CheckpointError:
        partial = None
    if partial is not None:
        assert partial["loss"] == 0.1 and partial["big"].numel() == 64 << 20 and bool((partial["big"] == 1).all())
    assert get_best_checkpoint(tmp_path) == path


CHILD_FSIZE_LIMIT = textwrap.dedent(
    """
    import resource, signal, sys, torch, jepa.io as jio
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    try:
        jio.save({"big": torch.ones(1 << 20)}, sys.argv[1])  # 4 MB > 1 MB limit
    except OSError as exc:
        print("OSError", exc.errno, flush=True)
    else:
        print("saved", flush=True)
    """
)


def test_write_error_leaves_no_tmp_and_the_previous_file_intact(tmp_path):
    path = tmp_path / "ckpt.pt"
    jio.save({"v": torch.ones(3)}, path)
    old = path.read_bytes()
    out = subprocess.run([sys.executable, "-c", CHILD_FSIZE_LIMIT, str(path)], capture_output=True, text=True, timeout=120)
    import errno

    assert out.stdout.split() == ["OSError", str(errno.EFBIG)], out.stderr
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]
