"""Run every benchmark script of benchmarks/ (bench_<op>.py: CPU and GPU rows in one script each,
bench_trainer.py, bench_checkpoint.py, ...), each writing its JSON into --out-dir. The training runs
(quality.py: multi-seed JEPA runs; quality_images.py: jepa train --data runs per recipe; shapes_baselines.py: supervised baselines of the shapes set; minutes
each) only run when named with --only, and then get --quick when run_all has it. On a GPU machine,
benchmarks/gpu_suite.sh builds with CUDA, runs the GPU tests and the GPU rows in one go.

Usage: python benchmarks/run_all.py [--out-dir bench-results] [--quick] [--only NAME ...]
Exit status: 1 when a benchmark crashed (or, with --strict, missed a target), else 0.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Training runs of minutes: only run when named with --only.
ON_DEMAND = frozenset({"quality", "quality_images", "shapes_baselines"})
# Common flags a script does not take (shapes_baselines has no targets, so no --strict; quality_images
# sizes its runs with --epochs/--seeds instead of --quick).
LACKS = {"shapes_baselines": frozenset({"--strict"}), "quality_images": frozenset({"--quick", "--strict"})}


def command(script: Path, args: argparse.Namespace) -> list[str]:
    """The command line run_all runs ``script`` with: --out, then the common flags it takes."""
    cmd = [sys.executable, str(script), "--out", str(args.out_dir / f"{script.stem}.json")]
    flags = []
    if args.quick:
        flags.append(["--quick"])
    if args.strict:
        flags.append(["--strict"])
    if args.threads is not None:
        flags.append(["--threads", str(args.threads)])
    lacks = LACKS.get(script.stem, frozenset())
    for flag in flags:
        if flag[0] not in lacks:
            cmd += flag
    return cmd


def main() -> int:
    p = argparse.ArgumentParser(description="Run every benchmark script of benchmarks/")
    p.add_argument("--out-dir", type=Path, default=Path("bench-results"), help="folder for the JSON files")
    p.add_argument("--quick", action="store_true", help="pass --quick to every benchmark (smoke run)")
    p.add_argument("--strict", action="store_true", help="pass --strict: a missed target fails the run")
    p.add_argument("--only", nargs="*", default=None, help="run only these benchmarks (e.g. ema_update)")
    p.add_argument("--threads", type=int, default=None, help="pass --threads N (torch.set_num_threads) to each")
    args = p.parse_args()

    every = sorted(p for p in HERE.glob("*.py") if not p.stem.startswith("_") and p.stem != "run_all")
    if args.only:
        wanted = {name.removeprefix("bench_").removesuffix(".py") for name in args.only}
        scripts = [s for s in every if s.stem.removeprefix("bench_") in wanted]
    else:
        scripts = [s for s in every if s.stem not in ON_DEMAND]
    if not scripts:
        print("run_all: no benchmarks to run", file=sys.stderr)
        return 1
    args.out_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    for script in scripts:
        cmd = command(script, args)
        print(f"\n### {script.name}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        print(f"### {script.name}: exit {rc} in {time.perf_counter() - t0:.1f} s", flush=True)
        if rc != 0:
            failed.append(script.name)
    print(f"\nrun_all: {len(scripts) - len(failed)} of {len(scripts)} benchmarks ok; JSON in {args.out_dir}")
    if failed:
        print("run_all: failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
