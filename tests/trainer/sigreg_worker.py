"""Worker launched by tests/trainer/test_sigreg_loss.py under ``torch.distributed.run`` (2 ranks, gloo):

    python -m torch.distributed.run --nproc_per_node=2 tests/trainer/sigreg_worker.py <out_dir>

Each rank takes its own rows of the shared data (``ROWS`` per rank, unequal on purpose) and saves
(1) SIGRegLoss's value and the gradient with respect to its rows (leaf tensors), and (2) the value and
the parameter gradients after DistributedDataParallel of a linear model whose outputs feed the loss.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import torch

ROWS = (5, 8)  # rows of rank 0 and rank 1
DIM, IN_DIM, SLICES, KNOTS, SEED = 6, 4, 16, 9, 5


def data() -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings, model inputs), float64, the rows of every rank in rank order."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(sum(ROWS), DIM, generator=g, dtype=torch.float64) * 1.3 + 0.1
    x = torch.randn(sum(ROWS), IN_DIM, generator=g, dtype=torch.float64)
    return z, x


def model() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Linear(IN_DIM, DIM, dtype=torch.float64)


def main() -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from jepa.trainer.losses import SIGRegLoss

    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    lo = sum(ROWS[:rank])
    hi = lo + ROWS[rank]
    z_all, x_all = data()
    loss_fn = SIGRegLoss(num_slices=SLICES, knots=KNOTS, seed=SEED)
    z = z_all[lo:hi].clone().requires_grad_(True)
    value = loss_fn(z)
    value.backward()
    net = model()
    ddp = DistributedDataParallel(net)
    value_ddp = loss_fn(ddp(x_all[lo:hi]))
    value_ddp.backward()
    out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"rank": rank, "world_size": dist.get_world_size(), "lo": lo, "hi": hi, "value": value.detach(),
         "grad": z.grad, "value_ddp": value_ddp.detach(), "calls": loss_fn.calls,
         "param_grads": {n: p.grad for n, p in net.named_parameters()}},
        out / f"rank{rank}.pt",
    )
    # Tear down as jepa's strategies do: with the group still registered, drop the DDP wrapper (its
    # reducer holds the group) once no collective is in flight. Destroying the group first left the
    # reducer to free it at exit, and ~ProcessGroupGloo joined a gloo thread that waited for the GIL
    # the exiting main thread held: an occasional hang after the results were saved.
    dist.barrier()
    del ddp, value_ddp
    gc.collect()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
