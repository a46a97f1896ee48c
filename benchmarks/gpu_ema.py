"""Benchmark the multi-tensor EMA update on a GPU: Triton kernel vs jepa._C's CUDA kernel vs torch.

A ViT-shaped parameter set (default ViT-H/14: 32 blocks of dim 1280, MLP 5120, about 632M parameters
in ~390 tensors; ``--size`` picks vit_h, vit_l, vit_b or a number of millions of parameters), float32
and bfloat16. Rows: ``jepa.ops.ema_update`` forced to ``triton`` (float momentum, and a 0-d device
tensor momentum: no host sync) and to ``cuda`` (when jepa._C has CUDA), each against the I-JEPA
per-parameter loop (``t.mul_(m).add_(o, alpha=1 - m)``) and ``torch._foreach_lerp_``. The floor is the
EMA's bytes (read target and online, write target: 3x one set) over the measured copy bandwidth.

Targets (H100): Triton EMA >= 80% of copy bandwidth and >= 10x the per-parameter loop.
Without CUDA (or without triton) it prints "no GPU: skipped" and exits 0.

Usage: python benchmarks/gpu_ema.py [--size vit_h|vit_l|vit_b|MILLIONS] [--out results.json] [--quick]
       python benchmarks/gpu_ema.py --interpret-smoke   (no GPU: runs the script end to end on the CPU)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    Report, add_interpret_smoke, apply_threads, copy_bandwidth, cuda_sync, make_parser, measure, triton_bench_device,
    triton_bench_skip_reason,
)

import jepa.ops as ops  # noqa: E402
from jepa.ops import _backend  # noqa: E402

# "cuda"; --interpret-smoke runs the same code on the CPU through Triton's interpreter (tiny sizes,
# meaningless timings: it only checks that the script and the kernels run end to end).
DEVICE = "cuda"


def _sync():
    return cuda_sync if DEVICE == "cuda" else None

MOMENTUM = 0.996
PRESETS = {"vit_b": (12, 768, 16), "vit_l": (24, 1024, 16), "vit_h": (32, 1280, 14)}


def vit_shapes(depth: int, dim: int, patch: int, mlp_ratio: int = 4, tokens: int = 257):
    """Parameter shapes of a ViT (timm layout)."""
    hidden = dim * mlp_ratio
    shapes = [(dim, 3, patch, patch), (dim,), (1, 1, dim), (1, tokens, dim)]
    for _ in range(depth):
        shapes += [(dim,), (dim,), (3 * dim, dim), (3 * dim,), (dim, dim), (dim,)]
        shapes += [(dim,), (dim,), (hidden, dim), (hidden,), (dim, hidden), (dim,)]
    return shapes + [(dim,), (dim,)]


def shapes_for(size: str, quick: bool):
    if size in PRESETS:
        depth, dim, patch = PRESETS[size]
    else:
        try:
            millions = float(size)
        except ValueError:
            raise SystemExit(f"--size must be one of {', '.join(PRESETS)} or a number of millions, got {size!r}") from None
        if millions <= 0:
            raise SystemExit(f"--size must be > 0 million parameters, got {size!r}")
        depth, dim, patch = PRESETS["vit_h"]
        per_block = 12 * dim * dim + 13 * dim
        depth = max(1, round(millions * 1e6 / per_block))
    return vit_shapes(2 if quick else depth, dim, patch)


def per_param_loop(targets, onlines, m):
    for t, o in zip(targets, onlines):
        t.mul_(m).add_(o, alpha=1.0 - m)


def bench(report, args, bw, dtype, shapes):
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    targets = [torch.randn(s, device=DEVICE, generator=gen).to(dtype) for s in shapes]
    onlines = [torch.randn(s, device=DEVICE, generator=gen).to(dtype) for s in shapes]
    numel = sum(t.numel() for t in targets)
    nbytes = 3 * numel * targets[0].element_size()
    floor = nbytes / bw
    label = f"ema {str(dtype).replace('torch.', '')} {numel / 1e6:.1f}M params, {len(shapes)} tensors"
    m_dev = torch.tensor(MOMENTUM, device=DEVICE)

    def t(fn):
        return measure(fn, warmup=args.warmup, repeat=args.repeat, sync=_sync())

    def forced(backend, m):
        def fn():
            with ops.use_backend(backend):
                ops.ema_update(targets, onlines, m)
        return fn

    loop = t(lambda: per_param_loop(targets, onlines, MOMENTUM))
    foreach = t(lambda: torch._foreach_lerp_(targets, onlines, 1.0 - MOMENTUM))
    ours = {"triton": t(forced("triton", MOMENTUM)), "triton (device momentum)": t(forced("triton", m_dev))}
    if _backend.cuda_kernels_available():
        ours["jepa._C cuda"] = t(forced("cuda", MOMENTUM))
    extra = {"numel": numel, "tensors": len(shapes), "bytes_moved": nbytes}
    for name, timing in ours.items():
        gbps = nbytes / timing.median
        report.add(f"{label} {name} vs per-param loop", timing, loop, floor_s=floor, reference_name="mul_+add_ loop",
                   ours_GBps=gbps / 1e9, fraction_of_copy_bw=gbps / bw, **extra)
        report.add(f"{label} {name} vs _foreach_lerp_", timing, foreach, floor_s=floor, reference_name="_foreach_lerp_",
                   ours_GBps=gbps / 1e9, fraction_of_copy_bw=gbps / bw, **extra)
    if not args.quick:
        tri = ours["triton"].median
        report.target(f"{label} triton: fraction of copy bandwidth", nbytes / tri / bw, 0.8, higher_is_better=True)
        report.target(f"{label} triton: per-param loop / ours", loop.median / tri, 10.0, higher_is_better=True)
    del targets, onlines


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--size", default="vit_h", help="vit_h (632M, default), vit_l, vit_b, or millions of parameters")
    add_interpret_smoke(parser)
    args = parser.parse_args()
    apply_threads(args)
    global DEVICE
    DEVICE = triton_bench_device(args)
    shapes = shapes_for(args.size, args.quick)  # validates --size also where there is no GPU
    if DEVICE != "cuda":
        shapes = vit_shapes(1, 64, 4, tokens=17)
    report = Report("gpu_ema", args)
    skip = triton_bench_skip_reason(DEVICE)
    if skip:
        report.skip("gpu_ema", skip)
        return report.finish()
    bw = copy_bandwidth(args, DEVICE)
    report.note(f"measured device copy bandwidth: {bw / 1e9:.0f} GB/s (read + write)")
    if not _backend.cuda_kernels_available():
        report.note("jepa._C has no usable CUDA kernels here: no 'jepa._C cuda' rows")
    if DEVICE != "cuda":
        report.note("--interpret-smoke: CPU + Triton interpreter, tiny sizes; the timings mean nothing")
    with torch.no_grad():
        for dtype in (torch.float32, torch.bfloat16):
            bench(report, args, bw, dtype, shapes)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
