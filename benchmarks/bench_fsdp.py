"""FSDP vs DDP: per-rank memory of parameters + optimizer state + EMA target, and step time.

Trains an I-JEPA with a ViT-B/16 encoder (86M parameters; predictor 6 blocks of width 384; EMA target
encoder 86M) for a few steps under ``torchrun --nproc_per_node=N``, once with ``strategy="ddp"``
(everything replicated) and once with ``strategy="fsdp"`` (FSDP2, sharded per block), through the
library's own trainer (``create_trainer(..., distributed=True, strategy=...)``, AdamW).

Per rank it reports the bytes this rank holds, counted from the tensors themselves (a DTensor counts
its local shard):

* ``params``: the online encoder, predictor (and projector) weights;
* ``optimizer``: AdamW's state (two moments per weight);
* ``ema``: the EMA target encoder's weights;

and ``total`` (their sum; gradients are freed after every step and not counted). With N ranks the
FSDP total should approach 1/N of the DDP total (a target row: ``fsdp/ddp <= 1.1/N``). Also the
median step time (forward, backward, optimizer step, EMA update; after one warm-up step) and each
rank's peak RSS (on the CPU the model is built whole before it is sharded, so the peak RSS includes
one full model; memory numbers are exact, timings on a loaded machine are not).

Usage: python benchmarks/bench_fsdp.py [--nproc 2] [--arch vit_base] [--steps 4] [--batch 2]
       [--image-size 64] [--device cpu|cuda] [--mixed-precision bf16] [--quick] [--out results.json]

``--quick``: ViT-Tiny, 3 steps (checks the script). ``--device cuda`` needs N GPUs (NCCL).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Report, make_parser  # noqa: E402

GRID_CONTEXT, TARGET_BLOCKS, TARGET_PATCHES = 6, 2, 3


# ----------------------------------------------------------------------------------- the worker (one rank)
def _loader(n: int, batch: int, image_size: int, patch: int):
    import torch  # noqa: PLC0415
    from torch.utils.data import DataLoader, Dataset  # noqa: PLC0415

    grid = (image_size // patch) ** 2

    class Images(Dataset):
        def __init__(self) -> None:
            g = torch.Generator().manual_seed(0)
            self.images = torch.randn(n, 3, image_size, image_size, generator=g)
            perms = torch.stack([torch.randperm(grid, generator=g) for _ in range(n)])
            self.context = perms[:, :GRID_CONTEXT]
            self.target = perms[:, GRID_CONTEXT : GRID_CONTEXT + TARGET_BLOCKS * TARGET_PATCHES].reshape(n, TARGET_BLOCKS, TARGET_PATCHES)

        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int):
            return {"images": self.images[i], "context_idx": self.context[i], "target_idx": self.target[i]}

    return DataLoader(Images(), batch_size=batch, shuffle=False)


def _ijepa_loss(prediction, target_tokens, target_index, target_valid):
    from jepa.models import ijepa_prediction_loss  # noqa: PLC0415

    return ijepa_prediction_loss({"prediction": prediction, "target_tokens": target_tokens, "target_index": target_index,
                                  "target_valid": target_valid})


def _local_bytes(tensors) -> int:
    total = 0
    for t in tensors:
        local = t.to_local() if hasattr(t, "to_local") else t
        total += local.numel() * local.element_size()
    return total


def worker(args) -> None:
    import torch  # noqa: PLC0415
    import torch.distributed as dist  # noqa: PLC0415

    from jepa.models import IJEPA  # noqa: PLC0415
    from jepa.trainer import create_trainer  # noqa: PLC0415
    from jepa.trainer.callbacks import BaseCallback  # noqa: PLC0415

    torch.set_num_threads(max(1, args.worker_threads))

    class BatchIJEPA(IJEPA):
        def forward_batch(self, batch):
            return self.forward_features(batch["images"], batch["context_idx"], batch["target_idx"])

    times: list[float] = []

    class StepTimer(BaseCallback):
        def on_batch_start(self, trainer, model, batch, batch_idx):
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_batch_end(self, trainer, model, outputs, batch, batch_idx):
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t0)

    torch.manual_seed(0)
    model = BatchIJEPA.from_preset(args.arch, image_size=args.image_size, patch_size=16)
    world = int(os.environ["WORLD_SIZE"])
    trainer = create_trainer(
        model, learning_rate=1e-4, device=args.device, loss_fn=_ijepa_loss, distributed=True, strategy=args.strategy,
        mixed_precision=args.mixed_precision, progress_bar=False, save_best=False, save_last=False, callbacks=[StepTimer()],
        save_dir=args.json.parent / f"ckpt-{args.strategy}",
    )
    loader = _loader(args.steps * args.batch * world, args.batch, args.image_size, 16)
    history = trainer.train(loader, num_epochs=1)
    online = [p for m in trainer.model.online_modules() for p in m.parameters()]
    target = list(trainer.model.target_encoder.parameters())
    states = [v for s in trainer.optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor) and v.dim() > 0]
    mine = {
        "rank": dist.get_rank(),
        "params": _local_bytes(online),
        "optimizer": _local_bytes(states),
        "ema": _local_bytes(target),
        "numel_online": sum(p.numel() for p in online),
        "numel_target": sum(p.numel() for p in target),
        "step_times": times,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "loss": history["train_loss"][-1],
    }
    if trainer.device.type == "cuda":
        mine["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, mine)
    if dist.get_rank() == 0:
        args.json.write_text(json.dumps(gathered))
    trainer.close()


# ----------------------------------------------------------------------------------- the driver
def run(strategy: str, args, tmp: Path, threads: int) -> list[dict[str, Any]]:
    out = tmp / f"{strategy}.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.nproc}", "--master_port=0",
           "--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:0", str(Path(__file__).resolve()), "--worker",
           "--strategy", strategy, "--json", str(out), "--arch", args.arch, "--steps", str(args.steps), "--batch", str(args.batch),
           "--image-size", str(args.image_size), "--device", args.device, "--worker-threads", str(threads)]
    if args.mixed_precision:
        cmd += ["--mixed-precision", args.mixed_precision]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(name, None)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench_fsdp: the {strategy} run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text())


def _median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2] if len(values) % 2 else 0.5 * (values[len(values) // 2 - 1] + values[len(values) // 2])


def main() -> int:
    parser = make_parser("FSDP vs DDP: per-rank parameter + optimizer + EMA memory and step time")
    parser.add_argument("--nproc", type=int, default=2, help="processes (ranks; default 2)")
    parser.add_argument("--arch", default=None, help="ViT preset of the encoder (default vit_base; vit_tiny with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run, the first untimed (default 4; 3 with --quick)")
    parser.add_argument("--batch", type=int, default=2, help="images per rank and step (default 2)")
    parser.add_argument("--image-size", type=int, default=64, help="image side in pixels, patches of 16 (default 64)")
    parser.add_argument("--device", default="cpu", help="cpu (gloo, default) or cuda (NCCL, one GPU per rank)")
    parser.add_argument("--mixed-precision", default=None, choices=("bf16", "fp16"), help="the trainer's mixed_precision")
    parser.add_argument("--worker", action="store_true", help=argparse_hidden())
    parser.add_argument("--strategy", default="fsdp", help=argparse_hidden())
    parser.add_argument("--json", type=Path, default=None, help=argparse_hidden())
    parser.add_argument("--worker-threads", type=int, default=1, help=argparse_hidden())
    args = parser.parse_args()
    args.arch = args.arch or ("vit_tiny" if args.quick else "vit_base")
    args.steps = args.steps or (3 if args.quick else 4)
    if args.worker:
        worker(args)
        return 0
    if args.nproc < 1 or args.steps < 2:
        raise SystemExit(f"bench_fsdp: need --nproc >= 1 and --steps >= 2, got {args.nproc} and {args.steps}")
    report = Report("fsdp", args)
    if args.device.startswith("cuda"):
        import torch  # noqa: PLC0415

        if torch.cuda.device_count() < args.nproc:
            report.skip(f"fsdp vs ddp x{args.nproc} on cuda", f"needs {args.nproc} GPUs, found {torch.cuda.device_count()}")
            return report.finish()
    threads = max(1, (args.threads or os.cpu_count() or 1) // args.nproc)
    with tempfile.TemporaryDirectory(prefix="jepa-bench-fsdp-") as tmp:
        ddp = run("ddp", args, Path(tmp), threads)
        fsdp = run("fsdp", args, Path(tmp), threads)
    n = args.nproc
    what = f"{args.arch} I-JEPA ({ddp[0]['numel_online'] / 1e6:.1f}M online + {ddp[0]['numel_target'] / 1e6:.1f}M EMA), {n} ranks, {args.device}"
    for key in ("params", "optimizer", "ema"):
        report.add_bytes(f"{key} per rank (max over ranks), {what}", max(r[key] for r in fsdp), max(r[key] for r in ddp),
                         reference_name="ddp", per_rank_fsdp=[r[key] for r in fsdp], per_rank_ddp=[r[key] for r in ddp])
    total_f = max(r["params"] + r["optimizer"] + r["ema"] for r in fsdp)
    total_d = max(r["params"] + r["optimizer"] + r["ema"] for r in ddp)
    report.add_bytes(f"params + optimizer + EMA per rank, {what}", total_f, total_d, reference_name="ddp",
                     floor=total_d // n, fsdp_over_ddp=total_f / total_d,
                     peak_rss_fsdp=[r["peak_rss_bytes"] for r in fsdp], peak_rss_ddp=[r["peak_rss_bytes"] for r in ddp],
                     **({"peak_cuda_fsdp": [r["peak_cuda_bytes"] for r in fsdp], "peak_cuda_ddp": [r["peak_cuda_bytes"] for r in ddp]}
                        if "peak_cuda_bytes" in fsdp[0] else {}))
    step_f = _median([t for r in fsdp for t in r["step_times"][1:]])
    step_d = _median([t for r in ddp for t in r["step_times"][1:]])
    report.add(f"step time (median of {args.steps - 1} steps x {n} ranks, batch {args.batch}/rank, {args.image_size}px), {what}",
               step_f, step_d, reference_name="ddp", loss_fsdp=fsdp[0]["loss"], loss_ddp=ddp[0]["loss"])
    report.target(f"fsdp/ddp per-rank memory <= 1.1/{n}", total_f / total_d, 1.1 / n, higher_is_better=False)
    print(f"per-rank total: fsdp {total_f / 2**20:.1f} MiB vs ddp {total_d / 2**20:.1f} MiB = {total_f / total_d:.3f} (1/{n} = {1 / n:.3f})")
    print("peak RSS per rank (MiB): fsdp " + ", ".join(f"{r['peak_rss_bytes'] / 2**20:.0f}" for r in fsdp)
          + "; ddp " + ", ".join(f"{r['peak_rss_bytes'] / 2**20:.0f}" for r in ddp))
    report.note("ours = FSDP, reference = DDP; memory ratio = ddp / fsdp (-> N), time ratio = ddp / fsdp (> 1: FSDP faster)")
    report.note("memory counted from the tensors each rank holds (exact); timings on a shared machine are provisional")
    return report.finish()


def argparse_hidden() -> str:
    import argparse  # noqa: PLC0415

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())
