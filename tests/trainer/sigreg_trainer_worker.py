"""Worker launched by tests/trainer/test_sigreg_trainer.py under ``torch.distributed.run`` (2 ranks, gloo):

    python -m torch.distributed.run --nproc_per_node=2 tests/trainer/sigreg_trainer_worker.py <out_dir>

Each rank runs one training step of the trainer (DDP model step, gathered loss inputs, JEPALoss with a
distributed SIGReg on the projection and batch-normalized targets) on its own rows (``ROWS``, unequal on
purpose) and saves the loss terms and the parameter gradients after DDP's all-reduce. It also saves the
value the loss would have if the trainer gathered the projection too (the double counting the trainer
avoids), for the test to tell the two apart.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROWS = (5, 7)  # samples of rank 0 and rank 1
TOKENS, DIM, PROJ, SLICES, KNOTS, SEED = 3, 8, 6, 16, 9, 5


def data() -> tuple[torch.Tensor, torch.Tensor]:
    """(state_t, state_t1) of every rank's rows, in rank order."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(sum(ROWS), TOKENS, DIM, generator=g)
    return x, x.roll(1, dims=1) + 0.1 * torch.randn(sum(ROWS), TOKENS, DIM, generator=g)


def loss_fn():
    from jepa.trainer.losses import JEPALoss, SIGRegLoss

    return JEPALoss(target_norm="batch", token_weight=1.0, global_weight=0.5, regularizer=SIGRegLoss(num_slices=SLICES, knots=KNOTS, seed=SEED),
                    regularizer_weight=0.5)


def trainer(distributed: bool, save_dir: Path):
    """A trainer of a small JEPA with a linear projector (no BatchNorm: its statistics would be per rank)."""
    from jepa.models import JEPA, Encoder, Predictor
    from jepa.trainer import create_trainer

    torch.manual_seed(1)
    model = JEPA(Encoder(hidden_dim=DIM, num_layers=1, num_heads=2), Predictor(hidden_dim=DIM), projector=torch.nn.Linear(DIM, PROJ))
    return create_trainer(model, device="cpu", loss_fn=loss_fn(), distributed=distributed, save_dir=save_dir, progress_bar=False)


def main() -> None:
    import torch.distributed as dist

    from jepa.trainer.distributed import gather_outputs
    from jepa.trainer.objective import loss_inputs, loss_terms, model_outputs

    out = Path(sys.argv[1])
    t = trainer(True, out / "ckpt")
    rank = dist.get_rank()
    lo = sum(ROWS[:rank])
    x, y = data()
    batch = (x[lo : lo + ROWS[rank]], y[lo : lo + ROWS[rank]])
    terms = t.training_step(batch, 0)
    terms["loss"].backward()
    # what gathering every loss input (the projection too) would give: SIGReg counts each row world_size times
    naive = loss_fn()
    outputs = gather_outputs(model_outputs(t.model, batch), loss_inputs(naive, model_outputs(t.model, batch)))
    naive_terms = loss_terms(naive, outputs)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"world_size": dist.get_world_size(), "terms": {k: v.detach() for k, v in terms.items()},
         "naive": {k: v.detach() for k, v in naive_terms.items()},
         "grads": {n: p.grad for n, p in t.model.named_parameters() if p.grad is not None}},
        out / f"rank{rank}.pt",
    )
    t.close()


if __name__ == "__main__":
    main()
