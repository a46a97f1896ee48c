"""Trainer overhead: one epoch of ``JEPATrainer.train`` vs a hand-written PyTorch loop.

Both run the same model (the default digits JEPA, and a wider one), the same loss (JEPALoss), the
same fused AdamW, per-step LR schedule and EMA target update, on the same batches. The hand loop is
what a user would write without the library; the difference is the trainer's overhead (batch
checks, non-finite check, loss bookkeeping, progress bar, logging). The two are timed alternately
in one process so machine load affects both alike.

Target: trainer <= 1.05x the hand loop (overhead <= 5%).

Usage: python benchmarks/bench_trainer.py [--out results.json] [--quick] [--repeat N]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Report, make_parser, measure  # noqa: E402

from jepa.data import DigitsPairs  # noqa: E402
from jepa.models import JEPA, Encoder, Predictor  # noqa: E402
from jepa.trainer import JEPALoss, create_trainer  # noqa: E402


def make_data(n_batches: int, batch_size: int, dim_in: int, tokens: int) -> DataLoader:
    if dim_in == 4 and tokens == 16:
        ds = DigitsPairs("train")
        pairs = [ds[i] for i in range(min(len(ds), n_batches * batch_size))]
        x = torch.stack([p[0] for p in pairs])
        y = torch.stack([p[1] for p in pairs])
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n_batches * batch_size, tokens, dim_in, generator=g)
        y = x + 0.1 * torch.randn(x.shape, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False, drop_last=True)


def make_model(dim: int, dim_in: int, layers: int, tokens: int) -> JEPA:
    torch.manual_seed(0)
    enc = Encoder(hidden_dim=dim, input_dim=dim_in, num_layers=layers, num_heads=4, max_seq_len=tokens)
    return JEPA(encoder=enc, predictor=Predictor(hidden_dim=dim))


def hand_loop(model, optimizer, scheduler, loss_fn, loader):
    """The loop a user writes by hand: forward, loss, backward, step, EMA, schedule."""
    model.train()
    for state_t, state_t1 in loader:
        out = model.forward_features(state_t, state_t1)
        loss = loss_fn(out["prediction"], out["target"], out["context"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.update_target_encoder()
        scheduler.step()


def main() -> int:
    parser = make_parser("trainer overhead vs a hand-written loop")
    args = parser.parse_args()
    report = Report("trainer", args)
    repeat = 3 if args.quick else args.repeat
    cases = [
        ("digits JEPA d=64 L=2 (default run)", 64, 4, 2, 16, 22, 64),
        ("JEPA d=256 L=4, T=32", 256, 64, 4, 32, 6 if args.quick else 12, 64),
    ]
    worst = 0.0
    for name, dim, dim_in, layers, tokens, n_batches, bs in cases:
        loader = make_data(n_batches, bs, dim_in, tokens)
        steps = len(loader)
        # library: create_trainer's fused AdamW + cosine, no checkpoint writes (IO is not per-step cost)
        lib_model = make_model(dim, dim_in, layers, tokens)
        trainer = create_trainer(lib_model, learning_rate=1e-3, device="cpu", progress_bar=True, save_best=False, save_last=False, save_dir="/tmp/jepa-bench")
        trainer.optimizer.zero_grad()

        def run_trainer():
            trainer.current_epoch = 0
            trainer.train(loader, num_epochs=1)

        # hand loop: the same optimizer settings and schedule, built by hand
        hand_model = make_model(dim, dim_in, layers, tokens)
        from jepa.trainer.optimizers import build_adamw  # noqa: PLC0415
        from jepa.trainer.schedulers import warmup_cosine_schedule  # noqa: PLC0415

        opt = build_adamw(hand_model, learning_rate=1e-3, weight_decay=0.05)
        sched = warmup_cosine_schedule(opt, total_steps=10_000, warmup_steps=0)
        hand_model.set_total_steps(10_000)
        loss_fn = JEPALoss()

        def run_hand():
            hand_loop(hand_model, opt, sched, loss_fn, loader)

        # alternate the two so drifting machine load hits both
        t_lib, t_hand = [], []
        run_trainer(), run_hand()  # warm-up
        for _ in range(repeat):
            t_lib.append(measure(run_trainer, warmup=0, repeat=1).median)
            t_hand.append(measure(run_hand, warmup=0, repeat=1).median)
        ours, ref = sorted(t_lib)[len(t_lib) // 2], sorted(t_hand)[len(t_hand) // 2]
        report.add(f"{name}: epoch of {steps} steps", ours, ref, reference_name="hand loop", per_step_ours_ms=1e3 * ours / steps, per_step_ref_ms=1e3 * ref / steps)
        worst = max(worst, ours / ref)
    report.target("trainer time / hand-loop time (worst case)", worst, 1.05, higher_is_better=False)

    # Why create_trainer asks for AdamW(fused=True) where the device supports it.
    model = make_model(256, 64, 4, 32)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    fused = torch.optim.AdamW(params, lr=1e-3, fused=True)
    default = torch.optim.AdamW(params, lr=1e-3)
    t_fused = measure(fused.step, warmup=3, repeat=repeat * 5)
    t_default = measure(default.step, warmup=3, repeat=repeat * 5)
    n = sum(p.numel() for p in params)
    report.add(f"AdamW step, {n / 1e6:.1f}M params: fused=True vs default", t_fused, t_default, reference_name="AdamW default")
    report.note("ratio = hand loop / trainer (1.00x = no overhead); the progress bar is on in the trainer runs")
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
