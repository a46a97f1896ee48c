"""Exact resume in a new process, from an epoch-end or a mid-epoch checkpoint after a SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).resolve().parent / "resume_worker.py"
sys.path.insert(0, str(WORKER.parent))
import resume_worker  # noqa: E402


def _run(mode: str, out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(WORKER), mode, str(out)], env=env, capture_output=True, text=True, timeout=300)


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    full = _run("full", tmp_path / "full")
    assert full.returncode == 0, full.stderr[-3000:]
    out = tmp_path / "interrupted"
    crash = _run("crash", out)
    assert crash.returncode == -signal.SIGKILL, crash.stderr[-3000:]
    assert not (out / "result.json").exists()
    assert (out / "ckpt" / "latest.pt").is_file()
    resumed = _run("resume", out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    result = json.loads((out / "result.json").read_text())
    last_saved = (resume_worker.KILL_AT_STEP // resume_worker.EVERY_N_STEPS) * resume_worker.EVERY_N_STEPS
    steps_per_epoch = 40 // 8
    assert result["started"] == {"step": last_saved, "epoch": last_saved // steps_per_epoch}
    assert last_saved % steps_per_epoch != 0  # the checkpoint really is mid-epoch
    reference = json.loads((tmp_path / "full" / "result.json").read_text())
    assert result["global_step"] == reference["global_step"] == resume_worker.EPOCHS * steps_per_epoch
    assert result["history"] == reference["history"]  # same per-epoch losses, bit for bit
    a = torch.load(out / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "full" / "weights.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
