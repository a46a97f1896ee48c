"""Benchmark latent planning: the latency of one MPC step (one ``plan()`` call) of CEM and MPPI.

Model: a :class:`jepa.models.WorldModel` sized as the TwoRooms recipe (MLP encoder, action encoder
and predictor; the weights do not change the cost, so it is not trained here). Each row times one
``plan(obs, goal_obs)`` call, ours = every candidate of an iteration rolled out in ONE batched
forward (what :mod:`jepa.planning` does), reference = the same planner with the candidates rolled
out one at a time in a Python loop (what a per-candidate implementation costs). There is no
hardware floor for this row (``-``).

CPU rows always; GPU rows when CUDA is available (else "no GPU: skipped"). The loop reference is
slow (samples x iterations forwards per step), so it is timed with one warmup-free call.

Usage: python benchmarks/bench_planning.py [--out results.json] [--quick] [--repeat N] [--threads N]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Report, apply_threads, cuda_sync, make_parser, measure  # noqa: E402

from jepa.models import WorldModel  # noqa: E402
from jepa.planning import CEM, MPPI  # noqa: E402


class PerCandidate(torch.nn.Module):
    """The same model, but ``rollout`` walks the candidates one by one (the reference)."""

    def __init__(self, model: WorldModel) -> None:
        super().__init__()
        self.model = model

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.model.encode(obs)

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.model.rollout(z0[i : i + 1], actions[i : i + 1]) for i in range(actions.shape[0])])


def planners(model, kind: str, horizon: int, samples: int, iterations: int, device: str):
    low, high = -np.ones(2, dtype=np.float32), np.ones(2, dtype=np.float32)
    if kind == "CEM":
        return CEM(model, low, high, horizon, samples=samples, iterations=iterations, elites=max(2, samples // 10), device=device)
    return MPPI(model, low, high, horizon, samples=samples, iterations=iterations, device=device)


def rows(report: Report, args, device: str) -> None:
    sync = cuda_sync if device == "cuda" else None
    torch.manual_seed(0)
    model = WorldModel.mlp(2, 2, latent_dim=args.latent, hidden_dim=args.hidden).to(device).eval()
    params = sum(p.numel() for p in model.parameters())
    obs, goal = np.array([0.2, 0.3], dtype=np.float32), np.array([0.8, 0.3], dtype=np.float32)
    for kind, iterations in (("CEM", args.cem_iterations), ("MPPI", args.mppi_iterations)):
        batched = planners(model, kind, args.horizon, args.samples, iterations, device)
        ours = measure(lambda: batched.plan(obs, goal), warmup=args.warmup, repeat=args.repeat, sync=sync)
        looped = planners(PerCandidate(model), kind, args.horizon, args.samples, iterations, device)
        ref = measure(lambda: looped.plan(obs, goal), warmup=0, repeat=1, sync=sync)
        name = f"{device} {kind} MPC step: {args.samples} samples x {iterations} iters, H={args.horizon}"
        report.add(
            name, ours, ref, reference_name="per-candidate loop", samples=args.samples, iterations=iterations,
            horizon=args.horizon, model_params=params, ms_per_mpc_step=ours.median * 1e3,
            rollouts_per_s=args.samples * iterations / ours.median,
        )


def main() -> int:
    parser = make_parser("MPC step latency of CEM and MPPI: batched rollouts vs a per-candidate loop")
    parser.add_argument("--horizon", type=int, default=10, help="planning horizon (default 10)")
    parser.add_argument("--samples", type=int, default=300, help="candidates per iteration (default 300)")
    parser.add_argument("--cem-iterations", type=int, default=30, help="CEM iterations (default 30)")
    parser.add_argument("--mppi-iterations", type=int, default=10, help="MPPI iterations (default 10)")
    parser.add_argument("--latent", type=int, default=8, help="latent width (default 8, the TwoRooms recipe)")
    parser.add_argument("--hidden", type=int, default=128, help="MLP width (default 128)")
    args = parser.parse_args()
    apply_threads(args)
    if args.quick:
        args.repeat, args.warmup = min(args.repeat, 3), min(args.warmup, 1)
        args.cem_iterations, args.mppi_iterations, args.samples = min(args.cem_iterations, 3), min(args.mppi_iterations, 3), min(args.samples, 100)
    report = Report("planning", args)
    rows(report, args, "cpu")
    if torch.cuda.is_available():
        rows(report, args, "cuda")
    else:
        report.skip("cuda rows", "no GPU: skipped")
    report.note("ours = one batched rollout of all candidates per iteration; reference = one rollout per candidate; "
                "one MPC step = one plan() call (the environment step is not included)")
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
