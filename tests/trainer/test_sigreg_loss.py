"""jepa.trainer.losses.SIGRegLoss: directions (seeded by seed and call index, saved in state_dict), the
value and gradient against jepa.ops.sigreg, bad arguments, and 2 gloo processes against 1 process on
the concatenated rows (value, per-rank gradient and the parameter gradient after DDP)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import torch

import jepa.ops as ops
from jepa.trainer.losses import SIGRegLoss

HERE = Path(__file__).resolve().parent
WORKER = HERE / "sigreg_worker.py"


def test_value_and_gradient_are_sigreg_on_the_calls_directions():
    loss = SIGRegLoss(num_slices=12, t_max=2.5, knots=7, seed=3)
    gen = torch.Generator().manual_seed(0)
    for call in range(3):
        z = torch.randn(20, 5, generator=gen, dtype=torch.float64).requires_grad_(True)
        a = loss.directions(5, call=call)
        assert loss.calls == call
        out = loss(z)
        assert loss.calls == call + 1
        out.backward()
        z64 = z.detach().clone().requires_grad_(True)
        ref = ops.sigreg_reference(z64, a.double(), 2.5, 7)
        ref.backward()
        assert out.item() == pytest.approx(ref.item(), rel=1e-13)
        assert torch.allclose(z.grad, z64.grad, rtol=1e-12, atol=1e-14)


def test_directions_are_unit_reproducible_and_change_with_call_and_seed():
    a = SIGRegLoss(num_slices=32, seed=7).directions(10, call=4)
    assert a.shape == (10, 32) and a.dtype == torch.float32
    assert torch.allclose(a.norm(dim=0), torch.ones(32), atol=1e-6)
    assert torch.equal(a, SIGRegLoss(num_slices=32, seed=7).directions(10, call=4))  # another instance
    assert not torch.allclose(a, SIGRegLoss(num_slices=32, seed=7).directions(10, call=5))
    assert not torch.allclose(a, SIGRegLoss(num_slices=32, seed=8).directions(10, call=4))
    # seeding does not depend on (and does not disturb) torch's global RNG
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    b = SIGRegLoss(num_slices=32, seed=7).directions(10, call=4)
    assert torch.equal(a, b) and torch.equal(torch.rand(3), before)


def test_state_dict_carries_the_call_index_for_exact_resume():
    gen = torch.Generator().manual_seed(1)
    zs = [torch.randn(16, 4, generator=gen) for _ in range(5)]
    run = SIGRegLoss(num_slices=8, seed=2)
    values = [run(z).item() for z in zs]
    # "checkpoint" after 3 calls, through a weights-only torch file as the trainer writes them
    first = SIGRegLoss(num_slices=8, seed=2)
    for z in zs[:3]:
        first(z)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = SIGRegLoss(num_slices=8, seed=2)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.calls == 3
    assert [resumed(z).item() for z in zs[3:]] == values[3:]
    fresh = SIGRegLoss(num_slices=8, seed=2)
    assert fresh(zs[3]).item() != values[3]  # without the state the sequence would restart
    with pytest.raises(ValueError, match="'calls' >= 0"):
        resumed.load_state_dict({"_extra_state": {"calls": -1}})


def test_gaussian_scores_low_and_collapse_high():
    loss = SIGRegLoss(num_slices=256, seed=0)
    z = torch.randn(1000, 32, generator=torch.Generator().manual_seed(0))
    assert loss(z).item() < 2.5
    assert loss(z[:1].expand(1000, 32)).item() > 500


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"num_slices": 0}, ValueError, "num_slices must be an int >= 1, got 0"),
        ({"num_slices": 2.0}, ValueError, "num_slices must be an int >= 1, got 2.0"),
        ({"t_max": -1.0}, ValueError, "t_max must be a finite number > 0, got -1.0"),
        ({"knots": 1}, ValueError, "knots must be an int >= 2, got 1"),
        ({"seed": -1}, ValueError, r"seed must be an int in \[0, 2\*\*64\), got -1"),
        ({"seed": "0"}, ValueError, "seed must be an int"),
        ({"distributed": 1}, TypeError, "distributed must be a bool, got int"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        SIGRegLoss(**kwargs)


def test_bad_inputs():
    loss = SIGRegLoss(num_slices=4)
    with pytest.raises(TypeError, match="z must be a tensor, got list"):
        loss([[1.0, 2.0]])
    with pytest.raises(TypeError, match="z must be a floating-point tensor, got dtype torch.int64"):
        loss(torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"z must be \(N, D\).*\(2, 3, 4\); pool or flatten"):
        loss(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"N >= 1.*\(0, 4\)"):
        loss(torch.randn(0, 4))
    assert loss.calls == 0  # refused calls draw nothing
    with pytest.raises(ValueError, match="call must be an int >= 0, got -2"):
        loss.directions(3, call=-2)


# ----------------------------------------------------------------------------- 2 processes (gloo)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_two_ranks_match_one_process_on_the_concatenated_rows(tmp_path):
    sys.path.insert(0, str(HERE))
    import sigreg_worker as w  # noqa: PLC0415

    from torchrun_util import torchrun  # noqa: PLC0415

    proc = torchrun([str(WORKER), str(tmp_path)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    # one process, all rows, the same two calls of the loss
    z_all, x_all = w.data()
    ref_loss = SIGRegLoss(num_slices=w.SLICES, knots=w.KNOTS, seed=w.SEED)
    z = z_all.clone().requires_grad_(True)
    value = ref_loss(z)
    value.backward()
    net = w.model()
    value_net = ref_loss(net(x_all))
    value_net.backward()

    world = 2
    for r in ranks:
        assert r["world_size"] == world and r["calls"] == 2
        # value: exactly the one-process statistic of the concatenation, on every rank
        assert r["value"].item() == pytest.approx(value.item(), rel=1e-12)
        assert r["value_ddp"].item() == pytest.approx(value_net.item(), rel=1e-12)
        # gradient w.r.t. the rank's own rows: world_size x the one-process gradient (DDP's convention) ...
        own = z.grad[r["lo"]:r["hi"]]
        assert torch.allclose(r["grad"], world * own, rtol=1e-10, atol=1e-13)
        assert not torch.allclose(r["grad"], own, rtol=1e-3)
        # ... so after DDP averages over ranks the parameter gradients are the one-process ones
        for name, p in net.named_parameters():
            assert torch.allclose(r["param_grads"][name], p.grad, rtol=1e-10, atol=1e-13), name
