"""Benchmark jepa.ops.jepa_loss (fused layer-norm + distance + mask + reduction, and the fused target gather)
against eager torch, on the GPU (Triton) and the CPU (what auto runs there: the torch reference).

GPU rows (each forward and forward+backward, float32 and bfloat16, timed with CUDA events):
- an I-JEPA-sized prediction (batch x predicted tokens x D; default 256 x 160 x 1280, smooth-L1,
  normalized target, token mask): ours = the Triton kernels, reference = the eager torch reference
  (layer-norm, smooth_l1, mask multiply, sum). The floor is the bytes the op must move (forward: read
  pred and target; backward: read both again and write d pred) over the device's measured copy
  bandwidth (``dst.copy_(src)`` of 1 GiB, counted as read + write). GB/s and the fraction of copy
  bandwidth are in the JSON, with the peak memory of each side.
- the I-JEPA target gather: the target encoder's output (B, N=256, D) read through ``target_index``
  (B, M=160: 4 target blocks of 40 tokens), ours = one Triton pass reading the rows in place, reference
  = the torch path (layer-norm the N rows, gather the M rows, loss). Floor: pred and the M target rows read
  once (the gathered copy is exactly what ours does not write).

Targets (H100/H200, bf16): >= 2x eager and >= 70% of copy bandwidth for the plain loss; the gather
row >= the plain row's bandwidth fraction (the gather costs nothing but index reads).

CPU rows: ``jepa.ops.jepa_loss`` (auto: the reference) against the same loss written inline with
``torch.nn.functional``: the cost of the op's checks and dispatch, on a small batch.

Usage: python benchmarks/bench_jepa_loss.py [--out results.json] [--quick] [--repeat N] [--no-cpu]
       python benchmarks/bench_jepa_loss.py --interpret-smoke   (no GPU: runs the GPU rows on the CPU
       through Triton's interpreter at tiny sizes; checks the script, the timings mean nothing)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    Report, add_interpret_smoke, apply_threads, copy_bandwidth, make_parser, measure, timer, triton_bench_device,
    triton_bench_skip_reason,
)

import jepa.ops as ops  # noqa: E402


def peak_bytes(fn, device) -> int | None:
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def _run(backend, backward, pred, loss_fn):
    def fn():
        with ops.use_backend(jepa_loss=backend):
            loss = loss_fn()
        if backward:
            pred.grad = None
            loss.backward()
    return fn


def plain_rows(report, args, device, bw, dtype):
    b, n, d = (32, 160, 1280) if args.quick else (256, 160, 1280)
    if device != "cuda":
        b, n, d = 2, 33, 65
    gen = torch.Generator(device=device).manual_seed(0)
    pred = torch.randn(b, n, d, device=device, dtype=dtype, generator=gen).requires_grad_(True)
    target = torch.randn(b, n, d, device=device, dtype=dtype, generator=gen)
    mask = torch.rand(b, n, device=device, generator=gen) > 0.25
    esize = pred.element_size()
    label = f"{device} jepa_loss {str(dtype).replace('torch.', '')} {b}x{n}x{d} smooth_l1 masked"
    time = timer(device, args)
    for backward, nbytes in ((False, 2 * pred.numel() * esize), (True, 5 * pred.numel() * esize)):
        name = f"{label} {'fwd+bwd' if backward else 'fwd'}"
        ours_fn = _run("triton", backward, pred, lambda: ops.jepa_loss(pred, target, mask=mask))
        ref_fn = _run("torch", backward, pred, lambda: ops.jepa_loss(pred, target, mask=mask))
        ours, ref = time(ours_fn), time(ref_fn)
        row = report.add(
            name, ours, ref, floor_s=nbytes / bw, reference_name="eager torch",
            bytes=nbytes, ours_GBps=nbytes / ours.median / 1e9, fraction_of_copy_bw=nbytes / ours.median / bw,
            ours_peak_bytes=peak_bytes(ours_fn, device), reference_peak_bytes=peak_bytes(ref_fn, device),
        )
        if dtype == torch.bfloat16 and device == "cuda" and not args.quick:
            report.target(f"{name}: eager / ours", row["ratio"], 2.0, higher_is_better=True)
            report.target(f"{name}: fraction of copy bandwidth", row["fraction_of_copy_bw"], 0.7, higher_is_better=True)


def gather_rows(report, args, device, bw, dtype):
    b, n, m, d = (32, 256, 160, 1280) if args.quick else (256, 256, 160, 1280)
    if device != "cuda":
        b, n, m, d = 2, 20, 12, 65
    gen = torch.Generator(device=device).manual_seed(1)
    pred = torch.randn(b, m, d, device=device, dtype=dtype, generator=gen).requires_grad_(True)
    target = torch.randn(b, n, d, device=device, dtype=dtype, generator=gen)
    # 4 target blocks of m / 4 tokens each, as I-JEPA's multi-block masks (rows may repeat across blocks)
    index = torch.randint(0, n, (b, m), device=device, generator=gen)
    esize = pred.element_size()
    label = f"{device} jepa_loss target gather {str(dtype).replace('torch.', '')} B={b} N={n} M={m} D={d}"
    time = timer(device, args)
    for backward, nbytes in ((False, 2 * pred.numel() * esize), (True, 5 * pred.numel() * esize)):
        name = f"{label} {'fwd+bwd' if backward else 'fwd'}"
        ours_fn = _run("triton", backward, pred, lambda: ops.jepa_loss(pred, target, target_index=index))
        ref_fn = _run("torch", backward, pred, lambda: ops.jepa_loss(pred, target, target_index=index))
        ours, ref = time(ours_fn), time(ref_fn)
        report.add(
            name, ours, ref, floor_s=nbytes / bw, reference_name="torch: layer-norm, gather, loss",
            bytes=nbytes, ours_GBps=nbytes / ours.median / 1e9, fraction_of_copy_bw=nbytes / ours.median / bw,
            ours_peak_bytes=peak_bytes(ours_fn, device), reference_peak_bytes=peak_bytes(ref_fn, device),
        )


def cpu_rows(report, args):
    b, n, d = (8, 49, 192) if args.quick else (32, 196, 384)
    gen = torch.Generator().manual_seed(2)
    pred = torch.randn(b, n, d, generator=gen).requires_grad_(True)
    target = torch.randn(b, n, d, generator=gen)
    mask = torch.rand(b, n, generator=gen) > 0.25

    def inline():
        e = F.smooth_l1_loss(pred, F.layer_norm(target, (d,)), reduction="none") * mask[..., None]
        return e.sum() / (mask.sum() * d)

    for backward in (False, True):
        def run(fn):
            def step():
                out = fn()
                if backward:
                    pred.grad = None
                    out.backward()
            return step

        ours = measure(run(lambda: ops.jepa_loss(pred, target, mask=mask)), warmup=args.warmup, repeat=args.repeat)
        ref = measure(run(inline), warmup=args.warmup, repeat=args.repeat)
        report.add(f"cpu jepa_loss auto(torch) fp32 {b}x{n}x{d} masked {'fwd+bwd' if backward else 'fwd'}", ours, ref,
                   reference_name="inline F.layer_norm + smooth_l1")


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0])
    add_interpret_smoke(parser)
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU rows")
    args = parser.parse_args()
    apply_threads(args)
    device = triton_bench_device(args)
    report = Report("jepa_loss", args)
    skip = triton_bench_skip_reason(device)
    if skip:
        report.skip("gpu jepa_loss", skip)
    else:
        bw = copy_bandwidth(args, device)
        report.note(f"measured device copy bandwidth: {bw / 1e9:.0f} GB/s (read + write)")
        if device != "cuda":
            report.note("--interpret-smoke: CPU + Triton interpreter, tiny sizes; the timings mean nothing")
        for dtype in (torch.float32, torch.bfloat16):
            plain_rows(report, args, device, bw, dtype)
            gather_rows(report, args, device, bw, dtype)
    if not args.no_cpu and not args.interpret_smoke:
        cpu_rows(report, args)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
