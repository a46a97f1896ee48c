"""Benchmark jepa.ops.attention (Triton flash attention) against torch SDPA, forward and forward+backward.

GPU rows (CUDA only): ours = ``jepa.ops.attention`` with the ``triton`` backend forced; references =
``F.scaled_dot_product_attention`` restricted to one SDPA backend at a time with
``torch.nn.attention.sdpa_kernel`` (FLASH_ATTENTION, CUDNN_ATTENTION, EFFICIENT_ATTENTION; a backend that
refuses the shape is reported as skipped). Shapes:

- I-JEPA predictor: B=128, H=12, N=196, d=24 (our kernel pads d to 32 in registers) and d=32;
  B=128, H=16, N=256, d=64; B=64, H=8, N=256, d=128;
- encoders: ViT-B/16 at 224 px (B=64, H=12, N=196, d=64), ViT-L/16 (B=32, H=16, N=256, d=64),
  a long sequence (B=8, H=12, N=1024, d=64), plus a causal and a key-padded variant of ViT-B.

Each row gives the time and TFLOP/s (forward 4*B*H*Nq*Nk*d FLOPs, halved when causal; backward 2.5x
the forward); ``floor`` is the FLOPs at the measured throughput of a large bf16/fp16 matmul (the tensor
core roof). Target on H100: ours >= 0.9x the best SDPA backend at d=64, forward+backward, bf16.

Without CUDA the GPU part prints ``no GPU: skipped``; the CPU rows then time what ``auto`` runs on CPU
(the torch reference, i.e. SDPA plus the key-padding handling) against a bare SDPA call: the overhead of
the op's checks and of its NaN-free handling of fully masked rows (floor: FLOPs at the measured speed of
a 1024^3 float32 matmul).

Usage: python benchmarks/gpu_attention.py [--out results.json] [--quick] [--repeat N] [--dtype bf16|fp16]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Report, apply_threads, cuda_sync, make_parser, measure  # noqa: E402

import jepa.ops as ops  # noqa: E402

PREDICTOR = [
    ("I-JEPA predictor d=24", 128, 12, 196, 24),
    ("I-JEPA predictor d=32", 128, 12, 196, 32),
    ("I-JEPA predictor d=64", 128, 16, 256, 64),
    ("I-JEPA predictor d=128", 64, 8, 256, 128),
]
ENCODER = [
    ("ViT-B/16 encoder", 64, 12, 196, 64),
    ("ViT-L/16 encoder", 32, 16, 256, 64),
    ("long sequence", 8, 12, 1024, 64),
]


def attn_flops(b, h, n_q, n_k, d, causal, backward):
    fwd = 4.0 * b * h * n_q * n_k * d * (0.5 if causal else 1.0)
    return fwd * (3.5 if backward else 1.0)


def matmul_tflops(dtype, args, device="cuda"):
    """Measured throughput of a large square matmul (the tensor-core roof used for the floor column)."""
    n = 4096 if args.quick else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = measure(lambda: a @ b, warmup=3, repeat=max(5, args.repeat // 2), sync=cuda_sync)
    return 2.0 * n**3 / t.median / 1e12


def _sdpa_backends():
    from torch.nn.attention import SDPBackend  # noqa: PLC0415

    return [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
            ("efficient", SDPBackend.EFFICIENT_ATTENTION)]


def _runner(fn, q, k, v, backward):
    if not backward:
        return lambda: fn(q, k, v)

    def step():
        out = fn(q, k, v)
        torch.autograd.grad(out, (q, k, v), grad_out_like(out))

    return step


_GRADS: dict = {}


def grad_out_like(out):
    key = (out.shape, out.dtype)
    if key not in _GRADS:
        _GRADS[key] = torch.randn_like(out)
    return _GRADS[key]


def default_variants(quick: bool):
    """(name, B, H, N, d, causal, key-padded) of every GPU row."""
    variants = [(name, b, h, n, d, False, False) for name, b, h, n, d in PREDICTOR + ENCODER]
    variants += [("ViT-B/16 causal", 64, 12, 196, 64, True, False), ("ViT-B/16 key-padded", 64, 12, 196, 64, False, True)]
    if quick:
        variants = [v for v in variants if v[0] in ("I-JEPA predictor d=24", "I-JEPA predictor d=64")]
    return variants


def gpu_rows(report, args, dtype, peak, variants, device="cuda"):
    from torch.nn.attention import sdpa_kernel  # noqa: PLC0415
    dname = str(dtype).replace("torch.", "")
    ratios_d64 = []
    for name, b, h, n, d, causal, padded in variants:
        g = torch.Generator(device=device).manual_seed(0)
        q, k, v = (torch.randn(b, h, n, d, device=device, dtype=dtype, generator=g).requires_grad_() for _ in range(3))
        kpm = None
        if padded:
            lengths = torch.randint(n // 2, n + 1, (b,), device=device, generator=g)
            kpm = torch.arange(n, device=device)[None, :] >= lengths[:, None]

        def ours_fn(q, k, v):
            with ops.use_backend("triton"):
                return ops.attention(q, k, v, causal=causal, key_padding_mask=kpm)

        def sdpa_fn(q, k, v):
            mask = None if kpm is None else (~kpm)[:, None, None, :]
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)

        for backward in (False, True):
            what = "fwd+bwd" if backward else "fwd"
            flops = attn_flops(b, h, n, n, d, causal, backward)
            ours = measure(_runner(ours_fn, q, k, v, backward), warmup=args.warmup, repeat=args.repeat, sync=cuda_sync)
            best = None
            for sname, backend in _sdpa_backends():
                try:
                    with sdpa_kernel([backend]):
                        ref = measure(_runner(sdpa_fn, q, k, v, backward), warmup=args.warmup, repeat=args.repeat,
                                      sync=cuda_sync)
                except RuntimeError as exc:  # this SDPA backend does not take the shape / mask / dtype
                    report.skip(f"{name} {dname} {what} sdpa[{sname}]", f"unsupported: {str(exc).splitlines()[0][:120]}")
                    continue
                label = f"{name} B={b} H={h} N={n} d={d} {dname} {what}"
                report.add(label, ours, ref, floor_s=flops / (peak * 1e12), reference_name=f"sdpa[{sname}]",
                           ours_tflops=flops / ours.median / 1e12, reference_tflops=flops / ref.median / 1e12)
                if best is None or ref.median < best:
                    best = ref.median
            print(f"{name} {dname} {what}: ours {flops / ours.median / 1e12:.1f} TFLOP/s"
                  + (f", best SDPA {flops / best / 1e12:.1f} TFLOP/s" if best else ""), flush=True)
            if backward and d == 64 and not causal and not padded and best is not None:
                ratios_d64.append(best / ours.median)
        del q, k, v
        if device == "cuda":
            torch.cuda.empty_cache()
    if ratios_d64:
        report.target(f"d=64 {dname} fwd+bwd: best SDPA time / ours (worst shape)", min(ratios_d64), 0.9,
                      higher_is_better=True)


def cpu_rows(report, args):
    """What auto runs on CPU tensors (the torch reference) against a bare SDPA call."""
    b, h, n, d = (8, 4, 64, 32) if args.quick else (32, 12, 196, 32)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b, h, n, d, generator=g).requires_grad_() for _ in range(3))
    lengths = torch.randint(n // 2, n + 1, (b,), generator=g)
    kpm = torch.arange(n)[None, :] >= lengths[:, None]
    m = 1024
    a, bm = torch.randn(m, m), torch.randn(m, m)
    cpu_peak = 2.0 * m**3 / measure(lambda: a @ bm, warmup=2, repeat=5).median  # FLOP/s of a fp32 matmul
    for padded in (False, True):
        mask = kpm if padded else None
        sdpa_mask = None if mask is None else (~mask)[:, None, None, :]
        for backward in (False, True):
            what = "fwd+bwd" if backward else "fwd"
            ours = measure(_runner(lambda q, k, v: ops.attention(q, k, v, key_padding_mask=mask), q, k, v, backward),
                           warmup=args.warmup, repeat=args.repeat)
            ref = measure(_runner(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_mask),
                                  q, k, v, backward), warmup=args.warmup, repeat=args.repeat)
            label = f"cpu auto(torch) B={b} H={h} N={n} d={d} fp32 {'key-padded ' if padded else ''}{what}"
            flops = attn_flops(b, h, n, n, d, False, backward)
            report.add(label, ours, ref, floor_s=flops / cpu_peak, reference_name="bare sdpa",
                       ours_gflops=flops / ours.median / 1e9, reference_gflops=flops / ref.median / 1e9)


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16", help="GPU dtype (default bf16)")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU rows")
    args = parser.parse_args()
    apply_threads(args)
    if args.quick:
        args.repeat, args.warmup = min(args.repeat, 5), min(args.warmup, 1)
    report = Report("gpu_attention", args)
    if torch.cuda.is_available() and ops._backend.triton_available():
        dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
        peak = matmul_tflops(dtype, args)
        report.note(f"floor: FLOPs at the measured {str(dtype).replace('torch.', '')} matmul throughput, {peak:.0f} TFLOP/s")
        gpu_rows(report, args, dtype, peak, default_variants(args.quick))
    elif torch.cuda.is_available():
        report.skip("gpu attention", "triton is not installed: skipped")
    else:
        report.skip("gpu attention", "no GPU: skipped")
    if not args.no_cpu:
        cpu_rows(report, args)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
