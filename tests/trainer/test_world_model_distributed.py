"""A world model under DDP (torch.distributed.run, 2 ranks, gloo on CPU) trains exactly as one
process on twice the batch: the loss sees every rank's windows (the regularizer's batch statistics
included), and the EMA target follows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
WORKER = HERE / "world_model_ddp_worker.py"
sys.path.insert(0, str(HERE))
import world_model_ddp_worker as worker  # noqa: E402
from torchrun_util import torchrun  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    return torchrun([str(WORKER), *args])


@pytest.mark.parametrize("regularizer", ["sigreg"])  # (vc takes the same gathered path; one torchrun run keeps this short)
def test_two_ranks_match_one_process_with_twice_the_batch(tmp_path, regularizer):
    out = tmp_path / "run"
    proc = _torchrun([str(out), regularizer])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    w0 = torch.load(out / "weights_rank0.pt", weights_only=True)
    w1 = torch.load(out / "weights_rank1.pt", weights_only=True)
    r0 = json.loads((out / "result_rank0.json").read_text())
    trainer, loader = worker.build(2 * worker.PER_RANK_BATCH, regularizer, distributed=False, save_dir=tmp_path / "ref")
    trainer.train(loader, num_epochs=worker.EPOCHS)
    ref = trainer.model.state_dict()
    assert r0["global_step"] == trainer.global_step == worker.EPOCHS * len(loader) > 0
    assert any(k.startswith("jepa.target_encoder") for k in w0)  # the EMA target too
    for key in ref:
        assert torch.equal(w0[key], w1[key]), key  # every rank holds the same weights
        assert torch.allclose(w0[key], ref[key], atol=2e-5, rtol=0), (key, float((w0[key] - ref[key]).abs().max()))
    assert r0["history"]["train_loss"] == pytest.approx(trainer.history["train_loss"], rel=1e-5)
