"""Benchmark jepa.ops.attention: our Triton flash attention against torch SDPA, forward and forward+backward.

GPU rows (CUDA only): ours = ``jepa.ops.attention`` with the ``triton`` backend forced; references =
``F.scaled_dot_product_attention`` restricted to one SDPA backend at a time with
``torch.nn.attention.sdpa_kernel`` (FLASH_ATTENTION, CUDNN_ATTENTION, EFFICIENT_ATTENTION; a backend that
refuses the shape is reported as skipped), and what ``auto`` runs (SDPA for unmasked calls unless the
route table says otherwise, Triton for key-padded ones). Timed with CUDA events (``triton.testing.do_bench``).
Shapes:

- I-JEPA predictor: B=128, H=12, N=196, d=24 (our kernel pads d to 32 in registers) and d=32;
  B=128, H=16, N=256, d=64; B=64, H=8, N=256, d=128;
- encoders: ViT-B/16 at 224 px (B=64, H=12, N=196, d=64), ViT-L/16 (B=32, H=16, N=256, d=64),
  ViT-H/14 (B=32, H=16, N=256, d=80), a long sequence (B=8, H=12, N=1024, d=64), plus a causal and a
  key-padded variant of ViT-B.

Each row gives the time and TFLOP/s (forward 4*B*H*Nq*Nk*d FLOPs, halved when causal; backward 2.5x
the forward); ``floor`` is the FLOPs at the measured throughput of a large bf16/fp16 matmul (the tensor
core roof). Expectation (not a target to chase): unmasked, SDPA's flash/cuDNN kernels are the state of
the art and ours runs at roughly 0.5-0.8x of them, which is why ``auto`` sends unmasked calls to SDPA;
ours is there for key-padded batches (SDPA has no fast masked path) and where it measured faster.

``--routes-out FILE``: time ours (as configured: ``JEPA_TRITON_AUTOTUNE``) against the best SDPA backend,
forward+backward, unmasked and non-causal, per route bucket (bf16/fp16 x head size 32/64/128 x sequence
256/1024) and write the table ``jepa.ops.attention_routes`` reads: Triton where it was >= 5% faster.
The buckets are measured before the GPU rows and the table is rewritten (atomically) after each one, as
the JSON of ``--out`` is after each row, so a run cut short by a time limit keeps what it measured.
``--routes-only``: the route buckets alone (benchmarks/gpu_suite.sh runs them as their own step).

Without CUDA the GPU part prints ``no GPU: skipped``; the CPU rows then time what ``auto`` runs on CPU
(the torch reference, i.e. SDPA plus the key-padding handling) against a bare SDPA call: the overhead of
the op's checks and of its NaN-free handling of fully masked rows (floor: FLOPs at the measured speed of
a 1024^3 float32 matmul).

Usage: python benchmarks/bench_attention.py [--out results.json] [--quick] [--repeat N] [--dtype bf16|fp16]
                                            [--routes-out routes.json [--routes-only]] [--no-cpu]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Report, apply_threads, make_parser, measure, measure_gpu, write_atomic  # noqa: E402

import jepa.ops as ops  # noqa: E402
from jepa.ops import attention_routes  # noqa: E402

PREDICTOR = [
    ("I-JEPA predictor d=24", 128, 12, 196, 24),
    ("I-JEPA predictor d=32", 128, 12, 196, 32),
    ("I-JEPA predictor d=64", 128, 16, 256, 64),
    ("I-JEPA predictor d=128", 64, 8, 256, 128),
]
ENCODER = [
    ("ViT-B/16 encoder", 64, 12, 196, 64),
    ("ViT-L/16 encoder", 32, 16, 256, 64),
    ("ViT-H/14 encoder", 32, 16, 256, 80),
    ("long sequence", 8, 12, 1024, 64),
]
ROUTE_BUCKETS = [(d, n) for d in (32, 64, 128) for n in (256, 1024)]


def attn_flops(b, h, n_q, n_k, d, causal, backward):
    fwd = 4.0 * b * h * n_q * n_k * d * (0.5 if causal else 1.0)
    return fwd * (3.5 if backward else 1.0)


def matmul_tflops(dtype, args, device="cuda"):
    """Measured throughput of a large square matmul (the tensor-core roof used for the floor column)."""
    n = 4096 if args.quick else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = measure_gpu(lambda: a @ b, warmup=3, repeat=max(5, args.repeat // 2))
    return 2.0 * n**3 / t.median / 1e12


def _sdpa_backends():
    from torch.nn.attention import SDPBackend  # noqa: PLC0415

    return [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
            ("efficient", SDPBackend.EFFICIENT_ATTENTION)]


_GRADS: dict = {}


def grad_out_like(out):
    key = (out.shape, out.dtype)
    if key not in _GRADS:
        _GRADS[key] = torch.randn_like(out)
    return _GRADS[key]


def _runner(fn, q, k, v, backward):
    if not backward:
        return lambda: fn(q, k, v)

    def step():
        out = fn(q, k, v)
        torch.autograd.grad(out, (q, k, v), grad_out_like(out))

    return step


def default_variants(quick: bool):
    """(name, B, H, N, d, causal, key-padded) of every GPU row."""
    variants = [(name, b, h, n, d, False, False) for name, b, h, n, d in PREDICTOR + ENCODER]
    variants += [("ViT-B/16 causal", 64, 12, 196, 64, True, False), ("ViT-B/16 key-padded", 64, 12, 196, 64, False, True)]
    if quick:
        variants = [v for v in variants if v[0] in ("I-JEPA predictor d=24", "ViT-H/14 encoder", "ViT-B/16 key-padded")]
    return variants


def _inputs(b, h, n, d, dtype, padded, device="cuda"):
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(b, h, n, d, device=device, dtype=dtype, generator=g).requires_grad_() for _ in range(3))
    kpm = None
    if padded:
        lengths = torch.randint(n // 2, n + 1, (b,), device=device, generator=g)
        kpm = torch.arange(n, device=device)[None, :] >= lengths[:, None]
    return q, k, v, kpm


def _best_sdpa(report, label, q, k, v, kpm, causal, backward):
    """(best time, {backend: Timing}) over the SDPA backends that take the inputs."""
    from torch.nn.attention import sdpa_kernel  # noqa: PLC0415

    def sdpa_fn(q, k, v):
        mask = None if kpm is None else (~kpm)[:, None, None, :]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)

    timings = {}
    for sname, backend in _sdpa_backends():
        try:
            with sdpa_kernel([backend]):
                timings[sname] = measure_gpu(_runner(sdpa_fn, q, k, v, backward), warmup=3, repeat=10)
        except RuntimeError as exc:  # this SDPA backend does not take the shape / mask / dtype
            if report is not None:
                report.skip(f"{label} sdpa[{sname}]", f"unsupported: {str(exc).splitlines()[0][:120]}")
    best = min((t.median for t in timings.values()), default=None)
    return best, timings


def gpu_rows(report, args, dtype, peak, variants):
    dname = str(dtype).replace("torch.", "")
    for name, b, h, n, d, causal, padded in variants:
        q, k, v, kpm = _inputs(b, h, n, d, dtype, padded)

        def ours_fn(q, k, v):
            with ops.use_backend(attention="triton"):
                return ops.attention(q, k, v, causal=causal, key_padding_mask=kpm)

        def auto_fn(q, k, v):
            return ops.attention(q, k, v, causal=causal, key_padding_mask=kpm)

        for backward in (False, True):
            what = "fwd+bwd" if backward else "fwd"
            label = f"{name} B={b} H={h} N={n} d={d} {dname} {what}"
            flops = attn_flops(b, h, n, n, d, causal, backward)
            ours = measure_gpu(_runner(ours_fn, q, k, v, backward), warmup=args.warmup, repeat=args.repeat)
            auto = measure_gpu(_runner(auto_fn, q, k, v, backward), warmup=args.warmup, repeat=args.repeat)
            _, timings = _best_sdpa(report, label, q, k, v, kpm, causal, backward)
            for sname, ref in timings.items():
                report.add(f"{label} triton", ours, ref, floor_s=flops / (peak * 1e12), reference_name=f"sdpa[{sname}]",
                           ours_tflops=flops / ours.median / 1e12, reference_tflops=flops / ref.median / 1e12)
            if timings:
                best_name, best = min(timings.items(), key=lambda kv: kv[1].median)
                report.add(f"{label} auto", auto, best, floor_s=flops / (peak * 1e12),
                           reference_name=f"best sdpa ({best_name})", ours_tflops=flops / auto.median / 1e12)
            print(f"{label}: triton {flops / ours.median / 1e12:.1f} TFLOP/s, auto {flops / auto.median / 1e12:.1f}"
                  + (f", best SDPA {flops / min(t.median for t in timings.values()) / 1e12:.1f}" if timings else ""),
                  flush=True)
        del q, k, v
        torch.cuda.empty_cache()


def write_routes(out_path: Path, entries: list) -> None:
    """The route table jepa.ops.attention_routes reads, written atomically (a kill keeps the last one)."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out_path, json.dumps({"format": 1, "note": "written by benchmarks/bench_attention.py --routes-out",
                                       "entries": entries}, indent=1) + "\n")
    attention_routes.clear_cache()


def measure_routes(report, args, dtypes, out_path: Path):
    """Per route bucket (unmasked, non-causal): ours vs the best SDPA backend, forward+backward; write the
    table jepa.ops.attention_routes reads (Triton where >= 5% faster) after every bucket."""
    major, minor = torch.cuda.get_device_capability()
    arch = f"sm_{major}{minor}"
    entries = []
    for dtype in dtypes:
        dname = str(dtype).replace("torch.", "")
        for d, n in ROUTE_BUCKETS:
            h = 16 if d <= 64 else 8
            b = max(2, min(256, (1 << 32) // (h * n * n * d)))  # about the same work in every bucket
            q, k, v, _ = _inputs(b, h, n, d, dtype, False)

            def ours_fn(q, k, v):
                with ops.use_backend(attention="triton"):
                    return ops.attention(q, k, v)

            ours = measure_gpu(_runner(ours_fn, q, k, v, True), warmup=3, repeat=10)
            best, timings = _best_sdpa(None, "", q, k, v, None, False, True)
            winner = "triton" if best is None or ours.median < 0.95 * best else "torch"
            entries.append({"arch": arch, "dtype": dname, "head_dim": d, "n": n, "causal": False, "backend": winner,
                            "triton_ms": round(ours.median * 1e3, 4), "sdpa_ms": None if best is None else round(best * 1e3, 4),
                            "sdpa": {k2: round(t.median * 1e3, 4) for k2, t in timings.items()},
                            "shape": [b, h, n, d], "device": torch.cuda.get_device_name(), "tiles": _tiles(),
                            "torch": torch.__version__, "triton": _triton_version()})
            write_routes(out_path, entries)
            report.add(f"route {arch} {dname} d={d} N={n} B={b} H={h} fwd+bwd", ours, best, reference_name="best sdpa",
                       winner=winner)
            del q, k, v
    report.note(f"route table ({sum(e['backend'] == 'triton' for e in entries)} of {len(entries)} buckets to Triton) "
                f"written to {out_path}; copy it to {attention_routes.ROUTES_FILE} to ship it")


def _tiles() -> str:
    """How our kernel chose its tiles for these measurements (JEPA_TRITON_AUTOTUNE)."""
    from jepa.kernels.triton import attention as kern  # noqa: PLC0415

    return "autotuned" if kern.autotune_enabled() else "pinned"


def _triton_version():
    try:
        import triton  # noqa: PLC0415
    except ImportError:
        return None
    return triton.__version__


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
    parser.add_argument("--routes-out", type=Path, default=None,
                        help="also measure the route buckets (first) and write the route table to this file")
    parser.add_argument("--routes-only", action="store_true",
                        help="with --routes-out: measure the route buckets only, no GPU rows")
    args = parser.parse_args()
    if args.routes_only and args.routes_out is None:
        parser.error("--routes-only needs --routes-out FILE")
    apply_threads(args)
    if args.quick:
        args.repeat, args.warmup = min(args.repeat, 5), min(args.warmup, 1)
    report = Report("attention", args)
    if torch.cuda.is_available() and ops._backend.triton_available():
        dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
        if args.routes_out is not None:  # first: the table ships with the package, the rows are for reading
            measure_routes(report, args, (torch.bfloat16, torch.float16), args.routes_out)
        if not args.routes_only:
            peak = matmul_tflops(dtype, args)
            report.note(f"floor: FLOPs at the measured {str(dtype).replace('torch.', '')} matmul throughput, "
                        f"{peak:.0f} TFLOP/s")
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
