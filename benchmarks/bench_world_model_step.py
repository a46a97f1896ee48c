"""World-model training throughput: one training step of the TwoRooms recipe through ``JEPATrainer``
vs a hand-written PyTorch loop, and the cost of fetching a batch of trajectory windows.

Rows (CPU always; CUDA when available, else "no GPU: skipped"):

* ``train step``: ours = ``JEPATrainer.train`` for one epoch over the recipe's data (the
  :class:`~jepa.models.WorldModel` of ``WorldModel.mlp(2, 2, latent_dim=8)``, batch 256 windows of
  4 steps, :class:`~jepa.trainer.world_model_loss.WorldModelLoss` with the variance/covariance and
  smoothness terms, fused AdamW, warmup + cosine schedule, EMA target), per step; reference = the
  same model, loss, optimizer, schedule and EMA in a hand-written loop over the same DataLoader
  (what the trainer's bookkeeping costs). The two alternate in one process so machine load hits
  both. Extra fields: windows per second.
* ``batch fetch``: ours = a ``DataLoader`` batch of 256 windows through
  ``TrajectoryDataset.__getitems__`` (one gather per array); reference = the per-item
  ``__getitem__`` path.

There is no hardware floor for these rows (``-``).

Usage: python benchmarks/bench_world_model_step.py [--out results.json] [--quick] [--repeat N] [--threads N]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Report, apply_threads, cuda_sync, make_parser, measure  # noqa: E402

from jepa.data import TrajectoryDataset  # noqa: E402
from jepa.envs import TwoRooms, collect  # noqa: E402
from jepa.models import WorldModel  # noqa: E402
from jepa.trainer import create_trainer  # noqa: E402
from jepa.trainer.optimizers import build_adamw  # noqa: E402
from jepa.trainer.schedulers import warmup_cosine_schedule  # noqa: E402
from jepa.trainer.world_model_loss import WorldModelLoss  # noqa: E402


class PerItem(Dataset):
    """The same windows without the batched fetch (the DataLoader calls ``__getitem__`` per item)."""

    def __init__(self, data: TrajectoryDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        return self.data[i]


def make_model(device: str) -> WorldModel:
    torch.manual_seed(0)
    return WorldModel.mlp(2, 2, latent_dim=8, hidden_dim=128, momentum=0.99).to(device)


def make_loss() -> WorldModelLoss:
    return WorldModelLoss(regularizer="vc", cov_weight=0.04, smoothness_weight=1.0)


def hand_loop(model, optimizer, scheduler, loss_fn, loader, device: str) -> None:
    """The loop a user writes by hand: forward, loss, backward, step, EMA, schedule."""
    model.train()
    for obs, actions in loader:
        out = model.forward_trajectory(obs.to(device, non_blocking=True), actions.to(device, non_blocking=True))
        loss = loss_fn(out["teacher_forcing"], out["rollout"], out["target"], out["context"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.update_target_encoder()
        scheduler.step()


def step_rows(report: Report, args, device: str, data: TrajectoryDataset) -> None:
    sync = cuda_sync if device == "cuda" else None
    loader = DataLoader(data, batch_size=256, shuffle=False, drop_last=True)
    steps = len(loader)
    trainer = create_trainer(make_model(device), learning_rate=1e-3, weight_decay=1e-4, device=device, loss_fn=make_loss(),
                             progress_bar=False, save_best=False, save_last=False, save_dir="/tmp/jepa-bench-wm")

    def run_trainer():
        trainer.current_epoch = 0
        trainer.train(loader, num_epochs=1)
        if sync:
            sync()

    hand_model = make_model(device)
    opt = build_adamw(hand_model, learning_rate=1e-3, weight_decay=1e-4, device=device)
    sched = warmup_cosine_schedule(opt, total_steps=100_000, warmup_steps=0)
    hand_model.set_total_steps(100_000)
    loss_fn = make_loss()

    def run_hand():
        hand_loop(hand_model, opt, sched, loss_fn, loader, device)
        if sync:
            sync()

    run_trainer(), run_hand()  # warm-up
    repeat = 2 if args.quick else max(3, args.repeat // 5)
    t_lib, t_hand = [], []
    for _ in range(repeat):
        t_lib.append(measure(run_trainer, warmup=0, repeat=1).median)
        t_hand.append(measure(run_hand, warmup=0, repeat=1).median)
    ours, ref = sorted(t_lib)[len(t_lib) // 2] / steps, sorted(t_hand)[len(t_hand) // 2] / steps
    report.add(
        f"{device} train step: WorldModel MLP d=8, B=256 windows of H=4 (TwoRooms recipe)", ours, ref, reference_name="hand loop",
        steps_per_epoch=steps, windows_per_s=256 / ours, model_params=sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
    )


def fetch_row(report: Report, args, data: TrajectoryDataset) -> None:
    def first_batches(dataset, n=10):
        def fn():
            it = iter(DataLoader(dataset, batch_size=256, shuffle=True, drop_last=True))
            for _ in range(n):
                next(it)
        return fn

    n = 10
    ours = measure(first_batches(data, n), warmup=1, repeat=3 if args.quick else 7)
    ref = measure(first_batches(PerItem(data), n), warmup=1, repeat=3 if args.quick else 7)
    report.add("cpu batch fetch: 256 windows of H=4 (DataLoader)", ours.median / n, ref.median / n, reference_name="per-item __getitem__")


def main() -> int:
    parser = make_parser("world-model training step: JEPATrainer vs a hand loop; batched window fetch")
    args = parser.parse_args()
    apply_threads(args)
    report = Report("world_model_step", args)
    episodes = 120 if args.quick else 400  # the recipe collects 1,000; a step does not depend on how many
    data = TrajectoryDataset(collect(TwoRooms(), episodes, 50, seed=1000, action_repeat=3), horizon=4)
    fetch_row(report, args, data)
    step_rows(report, args, "cpu", data)
    if torch.cuda.is_available():
        step_rows(report, args, "cuda", data)
    else:
        report.skip("cuda train step", "no GPU: skipped")
    report.note("ratio = hand loop / trainer for the train step (1.00x = no overhead); per-item / batched for the fetch")
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
