"""gather_outputs with real processes: ranks with different numbers of rows, bool masks, outputs
that are not batch-first, and gradients equal to one process holding the whole batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import gather_worker  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")


def test_outputs_of_uneven_ranks_gather_with_the_gradient_of_the_global_loss(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(HERE / "gather_worker.py"), str(tmp_path / "init"), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    # one process holding both ranks' samples
    parts = [gather_worker._outputs(r) for r in range(2)]
    pred = torch.cat([p["prediction"].detach() for p in parts]).requires_grad_()
    target = torch.cat([p["target"] for p in parts])
    valid = torch.cat([p["valid"] for p in parts])
    ref_loss = gather_worker.masked_loss(pred, target, valid)
    ref_loss.backward()
    for r, got in enumerate((r0, r1)):
        assert torch.equal(torch.tensor(got["prediction"]), pred.detach())  # rank order, uneven rows
        assert got["valid_dtype"] == "torch.bool" and torch.equal(torch.tensor(got["valid"]), valid)
        assert got["temperature"] == 0.5 + r  # 0-d: each rank's own value
        assert got["prototypes_shape"] == [7, 6]  # unbatched: not gathered
        assert got["loss"] == pytest.approx(float(ref_loss.detach()), rel=1e-6)
        # each rank's rows get the sum over ranks of their gradient: world_size x the one-process
        # gradient, which DDP's averaging of parameter gradients divides back
        start = sum(gather_worker.ROWS[:r])
        own = pred.grad[start : start + gather_worker.ROWS[r]]
        torch.testing.assert_close(torch.tensor(got["grad"]), 2 * own, rtol=1e-5, atol=1e-7)
        assert got["rows_only"] == [[0.0, 0.0]] * 3 + [[1.0, 1.0]] * 5
        assert "'x'" in got["mismatch_error"] and "only dim 0" in got["mismatch_error"]


def test_not_distributed_outputs_pass_through_unchanged():
    from jepa.trainer.distributed import gather_outputs, gather_rows

    x = torch.randn(3, 2)
    out = gather_outputs({"prediction": x, "n": 3}, ["prediction", "n"])
    assert out["prediction"] is x and out["n"] == 3
    assert gather_rows(x) is x
