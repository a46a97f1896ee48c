"""Benchmark jepa.ops.info_nce (fused InfoNCE: online log-sum-exp over logit tiles, never stores N x N)
against eager torch, on the GPU (Triton) and the CPU (what auto runs there: the torch reference).

GPU rows (N x D, symmetric, forward and forward+backward, float32 and bfloat16, CUDA events): ours =
Triton, reference = eager torch (materializes the logits). The op is compute-bound; the floor is the
time of the N x N x D matmuls it needs at least (forward 1, forward+backward 3), timed with torch.mm.
Target (H100/H200, bf16): >= 2x eager.

CPU rows: ``jepa.ops.info_nce`` (auto: the reference) against the loss written inline: the cost of the
op's checks and dispatch.

Usage: python benchmarks/bench_info_nce.py [--out results.json] [--quick] [--repeat N] [--no-cpu]
       python benchmarks/bench_info_nce.py --interpret-smoke   (no GPU: the GPU rows on the CPU through
       Triton's interpreter at tiny sizes; checks the script, the timings mean nothing)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    Report, add_interpret_smoke, apply_threads, make_parser, measure, timer, triton_bench_device,
    triton_bench_skip_reason,
)

import jepa.ops as ops  # noqa: E402


def gpu_rows(report, args, device, dtype):
    n, d = (2048, 256) if args.quick else (8192, 768)
    if device != "cuda":
        n, d = 129, 40
    gen = torch.Generator(device=device).manual_seed(1)
    a = torch.randn(n, d, device=device, dtype=dtype, generator=gen).requires_grad_(True)
    b = torch.randn(n, d, device=device, dtype=dtype, generator=gen).requires_grad_(True)
    time = timer(device, args)
    mm = time(lambda: torch.mm(a.detach(), b.detach().T)).median
    label = f"{device} info_nce {str(dtype).replace('torch.', '')} N={n} D={d} symmetric"

    def run(backend, backward):
        def fn():
            with ops.use_backend(info_nce=backend):
                loss = ops.info_nce(a, b, temperature=0.1, symmetric=True)
            if backward:
                a.grad = b.grad = None
                loss.backward()
        return fn

    for backward, matmuls in ((False, 1), (True, 3)):
        name = f"{label} {'fwd+bwd' if backward else 'fwd'}"
        ours, ref = time(run("triton", backward)), time(run("torch", backward))
        row = report.add(name, ours, ref, floor_s=matmuls * mm, reference_name="eager torch")
        if dtype == torch.bfloat16 and device == "cuda" and not args.quick:
            report.target(f"{name}: eager / ours", row["ratio"], 2.0, higher_is_better=True)


def cpu_rows(report, args):
    n, d = (256, 64) if args.quick else (1024, 256)
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(n, d, generator=gen).requires_grad_(True)
    b = torch.randn(n, d, generator=gen).requires_grad_(True)

    def inline():
        logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / 0.1
        labels = torch.arange(n)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))

    for backward in (False, True):
        def run(fn):
            def step():
                out = fn()
                if backward:
                    a.grad = b.grad = None
                    out.backward()
            return step

        ours = measure(run(lambda: ops.info_nce(a, b, temperature=0.1, symmetric=True)), warmup=args.warmup,
                       repeat=args.repeat)
        ref = measure(run(inline), warmup=args.warmup, repeat=args.repeat)
        report.add(f"cpu info_nce auto(torch) fp32 N={n} D={d} symmetric {'fwd+bwd' if backward else 'fwd'}", ours, ref,
                   reference_name="inline normalize + cross_entropy")


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0])
    add_interpret_smoke(parser)
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU rows")
    args = parser.parse_args()
    apply_threads(args)
    device = triton_bench_device(args)
    report = Report("info_nce", args)
    skip = triton_bench_skip_reason(device)
    if skip:
        report.skip("gpu info_nce", skip)
    else:
        if device != "cuda":
            report.note("--interpret-smoke: CPU + Triton interpreter, tiny sizes; the timings mean nothing")
        for dtype in (torch.float32, torch.bfloat16):
            gpu_rows(report, args, device, dtype)
    if not args.no_cpu and not args.interpret_smoke:
        cpu_rows(report, args)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
