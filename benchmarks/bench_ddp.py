"""Distributed data parallel vs one process: wall time of the default ``jepa train`` run.

Runs the shipped default recipe twice on this machine's CPU cores:

* ``1 process``: ``jepa train`` with every thread (``--threads``, default: all cores);
* ``N processes``: ``torchrun --nproc_per_node=N -m jepa.cli train --distributed true`` (gloo),
  the same threads split between the processes. ``batch_size`` is per process, so the global
  batch is N times larger and each process takes N times fewer steps per epoch.

Reported: the training seconds each run writes to ``metrics.json`` (the training loop only, not
start-up or the probes), and, as extra fields, the wall time of the whole command, the final
training loss and the linear-probe accuracy at 10 labels per class (so a faster run that learns
less shows). ``ratio`` = 1-process time / N-process time (> 1: the N processes are faster).

Usage: python benchmarks/bench_ddp.py [--epochs 100] [--nproc 2] [--threads 2] [--quick] [--out results.json]

``--quick``: 3 epochs (checks the script, not the speed). Timings are only meaningful on an
otherwise idle machine; on GPUs pass ``--device cuda`` (needs ``--nproc`` GPUs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Report, make_parser  # noqa: E402


def train_run(out: Path, *, nproc: int, threads: int, epochs: int, device: str) -> dict[str, Any]:
    """One ``jepa train`` (``nproc`` > 1: under torchrun); returns its metrics and wall time."""
    cli = ["-m", "jepa.cli", "train", "--epochs", str(epochs), "--output-dir", str(out), "--no-progress", "--device", device]
    if nproc == 1:
        cmd = [sys.executable, *cli]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_port=0",
               "--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:0", *cli, "--distributed", "true"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(name, None)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench_ddp: {' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "train_s": float(metrics["train_seconds"]),
        "wall_s": round(wall, 2),
        "final_train_loss": metrics["final_train_loss"],
        "probe_10_per_class": metrics["probe"]["pretrained"]["10_per_class"],
    }


def main() -> int:
    parser = make_parser("DDP (N processes) vs 1 process: wall time of the default jepa train run")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the recipe's 100; 3 with --quick)")
    parser.add_argument("--nproc", type=int, default=2, help="processes of the distributed run (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu (gloo, default) or cuda (NCCL, one GPU per process)")
    args = parser.parse_args()
    report = Report("ddp", args)
    epochs = args.epochs if args.epochs is not None else (3 if args.quick else 100)
    threads = args.threads or os.cpu_count() or 1
    if args.nproc < 2 or epochs < 1 or threads < args.nproc:
        raise SystemExit(f"bench_ddp: need --nproc >= 2, --epochs >= 1 and --threads >= --nproc; got {args.nproc}, {epochs}, {threads}")
    if args.device.startswith("cuda"):
        import torch  # noqa: PLC0415

        if torch.cuda.device_count() < args.nproc:
            report.skip(f"ddp x{args.nproc} on cuda", f"needs {args.nproc} GPUs, found {torch.cuda.device_count()}")
            return report.finish()
    with tempfile.TemporaryDirectory(prefix="jepa-bench-ddp-") as tmp:
        single = train_run(Path(tmp) / "single", nproc=1, threads=threads, epochs=epochs, device=args.device)
        multi = train_run(Path(tmp) / "ddp", nproc=args.nproc, threads=max(1, threads // args.nproc), epochs=epochs, device=args.device)
    from jepa.config import load_config  # noqa: PLC0415  (after the runs: this process stays light while they run)

    bs = load_config("default").training.batch_size
    name = (f"default run, {epochs} epochs: {args.nproc} processes x {max(1, threads // args.nproc)} thread(s), "
            f"global batch {args.nproc}x{bs} vs 1 process x {threads} thread(s), batch {bs}")
    report.add(name, multi["train_s"], single["train_s"], reference_name="1 process",
               ddp=multi, one_process=single)
    print(f"1 process: {single}")
    print(f"{args.nproc} processes: {multi}")
    report.note("ours = the N-process run; ratio = 1-process time / N-process time (> 1: DDP is faster)")
    report.note("train seconds from metrics.json (the loop only); wall_s includes start-up and the probes")
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
