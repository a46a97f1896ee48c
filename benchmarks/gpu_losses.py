"""Benchmark the fused Triton losses (jepa.ops.jepa_loss, jepa.ops.info_nce) against eager torch on a GPU.

Rows (each forward and forward+backward, float32 and bfloat16):
- jepa_loss on an I-JEPA-sized prediction (batch x predicted tokens x D; default 256 x 160 x 1280,
  smooth-L1, normalized target, token mask): ours = the Triton kernels, reference = the eager torch
  reference (layer-norm, smooth_l1, mask multiply, sum). The floor is the bytes the op must move
  (forward: read pred and target; backward: read both again and write d pred) over the device's
  measured copy bandwidth (``dst.copy_(src)`` of 1 GiB, counted as read + write). GB/s and the
  fraction of copy bandwidth are in the JSON, with the peak memory of each side.
- info_nce (N x D, symmetric): ours = Triton (online log-sum-exp, never stores N x N), reference =
  eager torch (materializes the logits). This op is compute-bound; the floor is the time of the
  N x N x D matmuls it needs at least (forward 1, forward+backward 3), timed with torch.mm.

Targets (H100): jepa_loss >= 2x eager and >= 70% of copy bandwidth; info_nce >= 2x eager.
Without CUDA (or without triton) it prints "no GPU: skipped" and exits 0.

Usage: python benchmarks/gpu_losses.py [--out results.json] [--quick] [--repeat N]
       python benchmarks/gpu_losses.py --interpret-smoke   (no GPU: runs the script end to end on the CPU)
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

# "cuda"; --interpret-smoke runs the same code on the CPU through Triton's interpreter (tiny sizes,
# meaningless timings: it only checks that the script and the kernels run end to end).
DEVICE = "cuda"


def _sync():
    return cuda_sync if DEVICE == "cuda" else None


def peak_bytes(fn) -> int | None:
    if DEVICE != "cuda":
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def _time(fn, args):
    return measure(fn, warmup=args.warmup, repeat=args.repeat, sync=_sync())


def bench_jepa_loss(report, args, bw, dtype):
    b, n, d = (32, 160, 1280) if args.quick else (256, 160, 1280)
    if DEVICE != "cuda":
        b, n, d = 2, 33, 65
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    pred = torch.randn(b, n, d, device=DEVICE, dtype=dtype, generator=gen).requires_grad_(True)
    target = torch.randn(b, n, d, device=DEVICE, dtype=dtype, generator=gen)
    mask = torch.rand(b, n, device=DEVICE, generator=gen) > 0.25
    esize = pred.element_size()
    label = f"jepa_loss {str(dtype).replace('torch.', '')} {b}x{n}x{d} smooth_l1 masked"

    def run(backend, backward):
        def fn():
            with ops.use_backend(backend):
                loss = ops.jepa_loss(pred, target, mask=mask)
            if backward:
                pred.grad = None
                loss.backward()
        return fn

    for backward, nbytes in ((False, 2 * pred.numel() * esize), (True, 5 * pred.numel() * esize)):
        name = f"{label} {'fwd+bwd' if backward else 'fwd'}"
        ours = _time(run("triton", backward), args)
        ref = _time(run("torch", backward), args)
        row = report.add(
            name, ours, ref, floor_s=nbytes / bw, reference_name="eager torch",
            bytes=nbytes, ours_GBps=nbytes / ours.median / 1e9, fraction_of_copy_bw=nbytes / ours.median / bw,
            ours_peak_bytes=peak_bytes(run("triton", backward)), reference_peak_bytes=peak_bytes(run("torch", backward)),
        )
        if dtype == torch.bfloat16 and not args.quick:
            report.target(f"{name}: eager / ours", row["ratio"], 2.0, higher_is_better=True)
            report.target(f"{name}: fraction of copy bandwidth", row["fraction_of_copy_bw"], 0.7, higher_is_better=True)


def bench_info_nce(report, args, dtype):
    n, d = (2048, 256) if args.quick else (8192, 768)
    if DEVICE != "cuda":
        n, d = 129, 40
    gen = torch.Generator(device=DEVICE).manual_seed(1)
    a = torch.randn(n, d, device=DEVICE, dtype=dtype, generator=gen).requires_grad_(True)
    b = torch.randn(n, d, device=DEVICE, dtype=dtype, generator=gen).requires_grad_(True)
    mm = _time(lambda: torch.mm(a.detach(), b.detach().T), args).median
    label = f"info_nce {str(dtype).replace('torch.', '')} N={n} D={d} symmetric"

    def run(backend, backward):
        def fn():
            with ops.use_backend(backend):
                loss = ops.info_nce(a, b, temperature=0.1, symmetric=True)
            if backward:
                a.grad = b.grad = None
                loss.backward()
        return fn

    for backward, matmuls in ((False, 1), (True, 3)):
        name = f"{label} {'fwd+bwd' if backward else 'fwd'}"
        ours = _time(run("triton", backward), args)
        ref = _time(run("torch", backward), args)
        row = report.add(
            name, ours, ref, floor_s=matmuls * mm, reference_name="eager torch",
            ours_peak_bytes=peak_bytes(run("triton", backward)), reference_peak_bytes=peak_bytes(run("torch", backward)),
        )
        if dtype == torch.bfloat16 and not args.quick:
            report.target(f"{name}: eager / ours", row["ratio"], 2.0, higher_is_better=True)


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0])
    add_interpret_smoke(parser)
    args = parser.parse_args()
    apply_threads(args)
    global DEVICE
    DEVICE = triton_bench_device(args)
    report = Report("gpu_losses", args)
    skip = triton_bench_skip_reason(DEVICE)
    if skip:
        report.skip("gpu_losses", skip)
        return report.finish()
    bw = copy_bandwidth(args, DEVICE)
    report.note(f"measured device copy bandwidth: {bw / 1e9:.0f} GB/s (read + write)")
    if DEVICE != "cuda":
        report.note("--interpret-smoke: CPU + Triton interpreter, tiny sizes; the timings mean nothing")
    for dtype in (torch.float32, torch.bfloat16):
        bench_jepa_loss(report, args, bw, dtype)
        bench_info_nce(report, args, dtype)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
