"""Benchmark jepa.ops.unscale_ (loss scaling: jepa.ops.unscale_ / jepa.amp.GradScaler) against torch.

Gradients of a ViT-B-shaped model (~86M parameters in ~150 tensors; --size N shrinks it to about N
million parameters), float32 on CPU:

(a) ``jepa.ops.unscale_`` (one fused C++ pass: multiply + inf/NaN check) vs a bare ``torch._foreach_mul_``
    (multiply only, no check: the target is ours <= 1.1x of it);
(b) vs ``torch._foreach_mul_`` followed by an inf/NaN check (``torch._foreach_norm(grads, inf)``, the usual
    way to do both with public foreach ops);
(c) vs ``torch._amp_foreach_non_finite_check_and_unscale_`` (what torch.amp.GradScaler runs);
(d) ``jepa.amp.GradScaler.unscale_(optimizer)`` vs ``torch.amp.GradScaler("cpu").unscale_(optimizer)``
    end to end (target: >= 1.25x faster);
plus float16/bfloat16 grads against the torch op, and 2,000 small tensors (per-tensor overhead): the op on
the same tensors every call, and GradScaler.unscale_ on grads re-created every step.
``floor`` is the fastest of the timed in-place ``mul_`` passes over one flat float32 buffer of the same bytes
(read + write once); the other columns are medians.

The grads are multiplied by 2**-16 and 2**16 (float16: 2**-4 and 2**4) on alternate calls (exact powers of two), so the values stay
put and no call runs into subnormal slow paths. CUDA rows run when torch sees a GPU and jepa._C has its
CUDA kernels; otherwise they print "no GPU: skipped". The kernel rows on the GPU are timed with CUDA
events (``triton.testing.do_bench``); the GradScaler rows, which include host work, with the wall clock
and a synchronize per call.

Usage: python benchmarks/bench_unscale.py [--size 85] [--out results.json] [--quick] [--repeat N] [--threads N]
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Report, apply_threads, cuda_sync, make_parser, measure, measure_gpu  # noqa: E402

import jepa.ops as ops  # noqa: E402
from jepa.amp import GradScaler  # noqa: E402
from jepa.ops import _backend  # noqa: E402

SCALE = 2.0**16


def vit_shapes(size_m: float) -> list[tuple[int, ...]]:
    """Parameter shapes of a ViT (timm layout) with about ``size_m`` million parameters: ViT-B/16 (dim 768,
    ~7.1M per block) with as many blocks as fit, or dim 256 blocks (~0.8M each) below one ViT-B block."""
    dim = 768 if size_m >= 8 else 256
    per_block = 12 * dim * dim + 13 * dim
    depth = max(1, round(size_m * 1e6 / per_block))
    hidden = 4 * dim
    shapes: list[tuple[int, ...]] = [(dim, 3, 16, 16), (dim,), (1, 1, dim), (1, 197, dim)]
    for _ in range(depth):
        shapes += [(dim,), (dim,), (3 * dim, dim), (3 * dim,), (dim, dim), (dim,)]
        shapes += [(dim,), (dim,), (hidden, dim), (hidden,), (dim, hidden), (dim,)]
    return shapes + [(dim,), (dim,)]


def make_grads(shapes, dtype, device, seed=0, scale=SCALE):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(s, generator=gen) * scale).to(dtype=dtype, device=device) for s in shapes]


class Alternate:
    """Calls fn(inv_scale_tensor) with 1/scale and scale on alternate calls (powers of two: values return)."""

    def __init__(self, fn, device, scale=SCALE):
        self.fn = fn
        self.invs = [torch.tensor(1.0 / scale, device=device), torch.tensor(scale, device=device)]
        self.k = 0

    def __call__(self):
        self.k ^= 1
        return self.fn(self.invs[self.k])


def _timer(device, args, sync, warmup=None, repeat=None):
    """CUDA events on a GPU (the kernel rows are µs to ms), wall clock on the CPU."""
    warmup = args.warmup if warmup is None else warmup
    repeat = args.repeat if repeat is None else repeat
    if device == "cuda":
        return lambda fn: measure_gpu(fn, warmup=warmup, repeat=repeat)
    return lambda fn: measure(fn, warmup=warmup, repeat=repeat, sync=sync)


def floor_time(nbytes, device, args, sync):
    flat = torch.ones(max(1, nbytes // 4), dtype=torch.float32, device=device)
    factors = [1.0 / SCALE, SCALE]
    state = [0]

    def step():
        state[0] ^= 1
        flat.mul_(factors[state[0]])

    t = _timer(device, args, sync)(step)
    del flat
    return t.min  # the fastest pass: the best estimate of the hardware limit on a shared machine


def big_rows(report, args, device, dtype, shapes, sync, *, full):
    # float16 tops out at 65504: scale its grads by 2**4 instead of 2**16 so they stay finite
    factor = 2.0**4 if dtype == torch.float16 else SCALE
    grads = make_grads(shapes, dtype, device, scale=factor)
    numel = sum(g.numel() for g in grads)
    esize = grads[0].element_size()
    found = torch.zeros((), device=device)
    name = f"{device} {str(dtype).replace('torch.', '')} {numel / 1e6:.1f}M grads, {len(grads)} tensors"
    time = _timer(device, args, sync)

    ours = time(Alternate(lambda inv: ops.unscale_(grads, inv, found), device, factor))
    torch_op = time(
        Alternate(lambda inv: torch._amp_foreach_non_finite_check_and_unscale_(grads, found, inv), device, factor)
    )
    floor = floor_time(numel * esize, device, args, sync)
    extra = {"numel": numel, "tensors": len(grads), "bytes_moved": 2 * numel * esize}
    rows = {"ours": ours.median, "torch_op": torch_op.median, "floor": floor}
    if full:
        bare = time(Alternate(lambda inv: torch._foreach_mul_(grads, inv), device))

        def mul_and_check(inv):
            torch._foreach_mul_(grads, inv)
            norms = torch._foreach_norm(grads, float("inf"))
            found.copy_(torch.logical_not(torch.isfinite(torch.stack(norms)).all()).float().maximum(found))

        mul_check = time(Alternate(mul_and_check, device))
        report.add(f"{name}: unscale_ vs bare mul", ours, bare, floor_s=floor, reference_name="_foreach_mul_", **extra)
        report.add(
            f"{name}: unscale_ vs mul + check", ours, mul_check, floor_s=floor,
            reference_name="_foreach_mul_ + _foreach_norm(inf)", **extra,
        )
        rows["bare_mul"] = bare.median
    report.add(
        f"{name}: unscale_ vs torch op", ours, torch_op, floor_s=floor,
        reference_name="_amp_foreach_non_finite_check_and_unscale_", **extra,
    )
    assert found.item() == 0.0, "benchmark grads must stay finite"
    del grads
    return rows


def scaler_rows(report, args, device, shapes, sync):
    """GradScaler.unscale_(optimizer), ours vs torch's, on the same float32 grads."""
    params = [torch.nn.Parameter(torch.zeros(s, device=device)) for s in shapes]
    for p, g in zip(params, make_grads(shapes, torch.float32, device)):
        p.grad = g
    opt = torch.optim.SGD(params, lr=0.1)
    numel = sum(p.numel() for p in params)
    name = f"{device} fp32 {numel / 1e6:.1f}M grads: GradScaler.unscale_(optimizer)"
    timings = {}
    for label, scaler in (("ours", GradScaler(device)), ("torch", torch.amp.GradScaler(device))):
        scaler.scale(torch.ones((), device=device))  # makes the scale tensor
        scales = [SCALE, 1.0 / SCALE]  # unscale_ multiplies by 1/scale: alternate 2**-16 and 2**16
        state = [0]

        def setup(scaler=scaler, scales=scales, state=state):
            state[0] ^= 1
            scaler._per_optimizer_states = defaultdict(scaler._per_optimizer_states.default_factory)
            scaler._scale.fill_(scales[state[0]])

        timings[label] = measure(lambda scaler=scaler: scaler.unscale_(opt), setup=setup, warmup=args.warmup,
                                 repeat=args.repeat, sync=sync)
        assert not any(v.item() for v in scaler._per_optimizer_states[id(opt)]["found_inf_per_device"].values())
    floor = floor_time(numel * 4, device, args, sync)
    report.add(name, timings["ours"], timings["torch"], floor_s=floor, reference_name="torch.amp.GradScaler",
               numel=numel, tensors=len(params))
    return timings["ours"].median, timings["torch"].median


def small_rows(report, args, device, sync, n_layers):
    torch.manual_seed(0)
    grads = [torch.randn(s, device=device) * SCALE for _ in range(n_layers) for s in ((32, 32), (32,))]
    found = torch.zeros((), device=device)
    reps, warm = max(args.repeat * 10, 50), max(args.warmup * 5, 10)
    time = _timer(device, args, sync, warmup=warm, repeat=reps)
    ours = time(Alternate(lambda inv: ops.unscale_(grads, inv, found), device))
    ref = time(Alternate(lambda inv: torch._amp_foreach_non_finite_check_and_unscale_(grads, found, inv), device))
    numel = sum(g.numel() for g in grads)
    report.add(
        f"{device} fp32 {len(grads)} small tensors ({n_layers} x Linear(32,32) grads)", ours, ref,
        reference_name="_amp_foreach_non_finite_check_and_unscale_", numel=numel, tensors=len(grads),
        ours_us_per_tensor=ours.median / len(grads) * 1e6, reference_us_per_tensor=ref.median / len(grads) * 1e6,
    )


def small_scaler_fresh_rows(report, args, device, sync, n_layers):
    """GradScaler.unscale_ on n_layers x Linear(32,32) grads that are new tensors every step (the default
    zero_grad(set_to_none=True)): per-tensor Python overhead, nothing cached."""
    params = [torch.nn.Parameter(torch.zeros(s, device=device)) for _ in range(n_layers) for s in ((32, 32), (32,))]
    opt = torch.optim.SGD(params, lr=0.1)
    reps, warm = max(args.repeat * 10, 50), max(args.warmup * 5, 10)
    timings = {}
    for label, scaler in (("ours", GradScaler(device)), ("torch", torch.amp.GradScaler(device))):
        scaler.scale(torch.ones((), device=device))

        def setup(scaler=scaler):
            for p in params:
                p.grad = torch.ones_like(p)
            scaler._per_optimizer_states = defaultdict(scaler._per_optimizer_states.default_factory)

        timings[label] = measure(lambda scaler=scaler: scaler.unscale_(opt), setup=setup, warmup=warm, repeat=reps,
                                 sync=sync)
    report.add(
        f"{device} fp32 {len(params)} small fresh grads: GradScaler.unscale_(optimizer)", timings["ours"],
        timings["torch"], reference_name="torch.amp.GradScaler", tensors=len(params),
    )


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=85.0, help="model size in millions of parameters (default 85)")
    args = parser.parse_args()
    apply_threads(args)
    if args.size <= 0:
        raise SystemExit(f"--size must be > 0, got {args.size}")
    if args.quick:
        args.repeat, args.warmup = min(args.repeat, 5), min(args.warmup, 1)
        args.size = min(args.size, 15.0)
    report = Report("unscale", args)
    if _backend.native_module() is None:
        report.note("jepa._C is not built: 'ours' is the torch fallback")
    shapes = vit_shapes(args.size)
    with torch.no_grad():
        big = big_rows(report, args, "cpu", torch.float32, shapes, None, full=True)
        report.target("cpu fp32 unscale_ / bare _foreach_mul_", big["ours"] / big["bare_mul"], 1.1, higher_is_better=False)
        ours_s, torch_s = scaler_rows(report, args, "cpu", shapes, None)
        report.target("cpu fp32 torch.amp.GradScaler.unscale_ / ours", torch_s / ours_s, 1.25, higher_is_better=True)
        for dtype in (torch.float16, torch.bfloat16):
            big_rows(report, args, "cpu", dtype, shapes, None, full=False)
        small_rows(report, args, "cpu", None, n_layers=200 if args.quick else 1000)
        small_scaler_fresh_rows(report, args, "cpu", None, n_layers=200 if args.quick else 1000)

        if torch.cuda.is_available() and _backend.cuda_kernels_available():
            big_rows(report, args, "cuda", torch.float32, shapes, cuda_sync, full=True)
            big_rows(report, args, "cuda", torch.bfloat16, shapes, cuda_sync, full=False)
            scaler_rows(report, args, "cuda", shapes, cuda_sync)
            small_rows(report, args, "cuda", cuda_sync, n_layers=200 if args.quick else 1000)
        else:
            report.skip("cuda unscale_", "no GPU: skipped")
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
