"""SIGReg through the trainer under DDP: 2 gloo ranks x b rows give the loss value and the parameter
gradients of 1 process x 2b rows. The trainer gathers the prediction and target (batch statistics) but
not the projection, whose SIGReg all-reduces its characteristic function itself; gathering it too would
count every row twice (checked to differ)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
WORKER = HERE / "sigreg_trainer_worker.py"

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")


def test_two_ranks_through_the_trainer_match_one_process_with_both_batches(tmp_path):
    sys.path.insert(0, str(HERE))
    import sigreg_trainer_worker as w  # noqa: PLC0415

    from torchrun_util import torchrun  # noqa: PLC0415

    proc = torchrun([str(WORKER), str(tmp_path)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    # one process, both ranks' rows in one batch, the same first call of the loss
    ref = w.trainer(False, tmp_path / "ref")
    terms = ref.training_step(w.data(), 0)
    terms["loss"].backward()
    grads = {n: p.grad for n, p in ref.model.named_parameters() if p.grad is not None}
    assert {"pred_loss", "global_loss", "sigreg_loss"} <= set(terms)
    for r in ranks:
        assert r["world_size"] == 2
        for name, value in terms.items():
            assert r["terms"][name].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-7), name
        assert set(r["grads"]) == set(grads)
        for name, g in grads.items():
            torch.testing.assert_close(r["grads"][name], g, rtol=1e-4, atol=1e-6, msg=name)
        # gathering the projection as well double-counts: SIGReg (N * statistic) of every row twice
        assert r["naive"]["sigreg_loss"].item() == pytest.approx(2 * terms["sigreg_loss"].item(), rel=1e-4)
        assert r["naive"]["loss"].item() != pytest.approx(terms["loss"].item(), rel=1e-3)
