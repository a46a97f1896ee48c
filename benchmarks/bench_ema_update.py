"""Benchmark jepa.ops.ema_update (EMA target update) against the torch ways of doing it.

(a) A ViT-B-sized parameter set (patch embedding, 12 blocks of dim 768 with a 4x MLP, final norm:
    ~86M parameters in ~150 tensors), float32 (and bf16/fp16 against _foreach_lerp_):
    ours (jepa.ops.ema_update -> jepa._C) vs the I-JEPA per-parameter loop
    ``t.mul_(m).add_(o, alpha=1 - m)`` vs ``torch._foreach_lerp_``, next to the memory-bandwidth
    floor: the EMA reads target and online and writes target (3x the bytes of one set), timed as an
    in-place float32 ``add_`` of two flat buffers of the same bytes.
(b) 2,000 small tensors (1000 x Linear(32, 32) weights and biases): ours vs ``_foreach_lerp_``;
    here per-tensor overhead dominates. Two rows: ``jepa.ops.ema_update`` on the tensor lists (it must
    re-read every data pointer per call for safety), and ``JEPA.update_target_encoder``, which keeps
    the encoder and its EMA copy in flat buffers and so pays no per-tensor cost at all.

GPU rows (CUDA; timed with CUDA events, ``triton.testing.do_bench``, which also flushes L2 between calls):
(c) a ViT-H/14-sized set (32 blocks of dim 1280: ~632M parameters in ~390 tensors; ``--size`` picks
    vit_h, vit_l, vit_b or millions of parameters), float32 and bfloat16: ``jepa.ops.ema_update`` forced
    to ``cuda`` (jepa._C) and to ``triton`` (float momentum, and a 0-d device-tensor momentum: no host
    sync) against the per-parameter loop and ``_foreach_lerp_``;
(d) the EMA the trainer actually runs: ``JEPA.update_target_encoder`` keeps the encoder and its EMA copy
    as views of one flat buffer per dtype, so each step is one ``ema_update`` over one flat pair: timed
    on the same parameter count, against ``torch.lerp_`` on the flat pair;
(e) ``JEPA.update_target_encoder`` on 1000 x Linear(32, 32) (per-tensor overhead on a GPU).
The floor is the EMA's bytes (read target and online, write target: 3x one set) over the measured copy
bandwidth.

Targets, restated to what memory bandwidth allows: on the CPU (a) ours <= 1.15x the floor, (b) ours >=
5x faster than _foreach_lerp_; on the GPU the flat-buffer EMA (d) and the CUDA list EMA (c) >= 80% of copy
bandwidth, and (c) >= 1.5x the per-parameter loop. (An earlier ">= 10x the per-parameter loop" cannot be
met on a large model: the loop is memory-bound as well, ``mul_`` + ``add_`` move 5 bytes per 3 of the
fused kernel, so ~1.7x is the most a fused EMA can gain once launch overhead is amortized; 10x holds only
for models of many tiny tensors, row (e).)
GPU rows run when CUDA is available, else print "no GPU: skipped".

Usage: python benchmarks/bench_ema_update.py [--out results.json] [--quick] [--repeat N] [--size vit_h]
       python benchmarks/bench_ema_update.py --interpret-smoke   (no GPU: the Triton rows on the CPU through
       Triton's interpreter at tiny sizes; checks the script, the timings mean nothing)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    Report, add_interpret_smoke, apply_threads, copy_bandwidth, make_parser, measure, timer, triton_bench_device,
)

import jepa.ops as ops  # noqa: E402
from jepa.ops import _backend  # noqa: E402

MOMENTUM = 0.996


def vit_b_shapes(depth: int = 12, dim: int = 768, mlp_ratio: int = 4, patch: int = 16, tokens: int = 197):
    """Parameter shapes of a ViT-B/16 (timm layout): ~86M parameters."""
    hidden = dim * mlp_ratio
    shapes = [(dim, 3, patch, patch), (dim,), (1, 1, dim), (1, tokens, dim)]
    for _ in range(depth):
        shapes += [(dim,), (dim,), (3 * dim, dim), (3 * dim,), (dim, dim), (dim,)]  # norm1, qkv, proj
        shapes += [(dim,), (dim,), (hidden, dim), (hidden,), (dim, hidden), (dim,)]  # norm2, fc1, fc2
    shapes += [(dim,), (dim,)]  # final norm
    return shapes


def make_set(shapes, dtype, device, seed):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return [torch.randn(s, generator=gen).to(dtype=dtype, device=device) for s in shapes]


def per_param_loop(targets, onlines, m):
    with torch.no_grad():
        for t, o in zip(targets, onlines):
            t.mul_(m).add_(o, alpha=1.0 - m)


def foreach_lerp(targets, onlines, m):
    with torch.no_grad():
        torch._foreach_lerp_(targets, onlines, 1.0 - m)


def floor_time(nbytes, device, args, sync):
    """Memory-bandwidth floor of a pass that reads two buffers of `nbytes` and writes one back: the
    median time of an in-place float32 ``a.add_(b)`` over flat buffers of the same bytes (float32 so
    that the floor measures memory, not a slow half-precision add)."""
    numel = max(1, (nbytes + 3) // 4)
    a = torch.ones(numel, dtype=torch.float32, device=device)
    b = torch.ones(numel, dtype=torch.float32, device=device)
    t = measure(lambda: a.add_(b), warmup=args.warmup, repeat=args.repeat, sync=sync)
    del a, b
    return t.median


def big_set(report, args, device, dtype, shapes, *, with_loop, sync):
    numel = sum(torch.Size(s).numel() for s in shapes)
    esize = torch.tensor([], dtype=dtype).element_size()
    targets = make_set(shapes, dtype, device, 0)
    onlines = make_set(shapes, dtype, device, 1)
    label = f"{device} {str(dtype).replace('torch.', '')} ViT-B {numel / 1e6:.1f}M params, {len(shapes)} tensors"
    ours = measure(lambda: ops.ema_update(targets, onlines, MOMENTUM), warmup=args.warmup, repeat=args.repeat, sync=sync)
    ref_foreach = measure(lambda: foreach_lerp(targets, onlines, MOMENTUM), warmup=args.warmup, repeat=args.repeat, sync=sync)
    ref_loop = None
    if with_loop:
        ref_loop = measure(
            lambda: per_param_loop(targets, onlines, MOMENTUM), warmup=args.warmup, repeat=args.repeat, sync=sync
        )
    del targets, onlines
    floor = floor_time(numel * esize, device, args, sync)
    bandwidth = 3 * numel * esize / floor
    extra = {"numel": numel, "tensors": len(shapes), "bytes_moved": 3 * numel * esize, "bandwidth_GBps": bandwidth / 1e9}
    if ref_loop is not None:
        report.add(f"{label} vs per-param loop", ours, ref_loop, floor_s=floor, reference_name="mul_+add_ loop", **extra)
    report.add(f"{label} vs _foreach_lerp_", ours, ref_foreach, floor_s=floor, reference_name="_foreach_lerp_", **extra)
    return ours.median, floor, ref_foreach.median


def small_set(report, args, device, sync, n_layers=1000):
    torch.manual_seed(0)
    online = [torch.nn.Linear(32, 32).to(device) for _ in range(n_layers)]
    target = [torch.nn.Linear(32, 32).to(device) for _ in range(n_layers)]
    onlines = [p for layer in online for p in layer.parameters()]
    targets = [p for layer in target for p in layer.parameters()]
    numel = sum(p.numel() for p in targets)
    label = f"{device} fp32 {len(targets)} small tensors ({n_layers} x Linear(32,32))"
    reps, warm = max(args.repeat * 10, 50), max(args.warmup * 5, 10)
    # First call: validates the lists and builds the pointer table (cached for the following calls).
    first = measure(lambda: ops.ema_update(targets, onlines, MOMENTUM), warmup=0, repeat=1, sync=sync,
                    setup=ops._native.clear_plan_cache)
    ours = measure(lambda: ops.ema_update(targets, onlines, MOMENTUM), warmup=warm, repeat=reps, sync=sync)
    ref = measure(lambda: foreach_lerp(targets, onlines, MOMENTUM), warmup=warm, repeat=reps, sync=sync)
    floor = floor_time(numel * 4, device, argparse_like(warm, reps), sync)
    report.add(
        label, ours, ref, floor_s=floor, reference_name="_foreach_lerp_", numel=numel, tensors=len(targets),
        ours_us_per_tensor=ours.median / len(targets) * 1e6, reference_us_per_tensor=ref.median / len(targets) * 1e6,
        first_call_s=first.median,
    )
    report.note(
        f"{label}: first call (validation + plan) {first.median * 1e3:.2f} ms; steady state "
        f"{ours.median / len(targets) * 1e6:.3f} us/tensor vs _foreach_lerp_ {ref.median / len(targets) * 1e6:.3f} us/tensor"
    )
    return ours.median, ref.median


def jepa_small_set(report, args, device, sync, n_layers=1000):
    """The model-level path: JEPA.update_target_encoder on an encoder of n_layers x Linear(32, 32).

    JEPA lays the encoder and its EMA copy out as views of one flat buffer per dtype on the first
    update, so each later update is one ema_update call over one flat tensor pair, instead of a
    per-tensor walk (module traversal + one pointer read and dispatch per tensor).
    """
    from jepa.models import JEPA  # noqa: PLC0415

    torch.manual_seed(0)
    encoder = torch.nn.Sequential(*[torch.nn.Linear(32, 32) for _ in range(n_layers)]).to(device)
    model = JEPA(encoder=encoder, predictor=torch.nn.Identity())
    targets, onlines = list(model.target_encoder.parameters()), list(model.encoder.parameters())
    label = f"{device} fp32 JEPA.update_target_encoder, {len(targets)} tensors ({n_layers} x Linear(32,32))"
    reps, warm = max(args.repeat * 10, 50), max(args.warmup * 5, 10)
    ours = measure(lambda: model.update_target_encoder(MOMENTUM), warmup=warm, repeat=reps, sync=sync)
    ref = measure(lambda: foreach_lerp(targets, onlines, MOMENTUM), warmup=warm, repeat=reps, sync=sync)
    loop = measure(lambda: per_param_loop(targets, onlines, MOMENTUM), warmup=warm, repeat=max(args.repeat, 15), sync=sync)
    numel = sum(p.numel() for p in targets)
    floor = floor_time(numel * 4, device, argparse_like(warm, reps), sync)
    report.add(label, ours, ref, floor_s=floor, reference_name="_foreach_lerp_", numel=numel, tensors=len(targets))
    report.add(label, ours, loop, floor_s=floor, reference_name="mul_+add_ loop", numel=numel, tensors=len(targets))
    return ours.median, ref.median


class argparse_like:  # noqa: N801 - a tiny stand-in for the parsed args of floor_time
    def __init__(self, warmup, repeat):
        self.warmup, self.repeat = warmup, repeat


PRESETS = {"vit_b": (12, 768, 16), "vit_l": (24, 1024, 16), "vit_h": (32, 1280, 14)}


def vit_shapes(depth: int, dim: int, patch: int, mlp_ratio: int = 4, tokens: int = 257):
    """Parameter shapes of a ViT (timm layout)."""
    hidden = dim * mlp_ratio
    shapes = [(dim, 3, patch, patch), (dim,), (1, 1, dim), (1, tokens, dim)]
    for _ in range(depth):
        shapes += [(dim,), (dim,), (3 * dim, dim), (3 * dim,), (dim, dim), (dim,)]
        shapes += [(dim,), (dim,), (hidden, dim), (hidden,), (dim, hidden), (dim,)]
    return shapes + [(dim,), (dim,)]


def gpu_shapes(size: str, quick: bool):
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
        depth = max(1, round(millions * 1e6 / (12 * dim * dim + 13 * dim)))
    return vit_shapes(2 if quick else depth, dim, patch)


def gpu_list_rows(report, args, device, bw, dtype, shapes):
    """(c) lists of tensors: cuda / triton backends vs the per-parameter loop and _foreach_lerp_."""
    gen = torch.Generator(device=device).manual_seed(0)
    targets = [torch.randn(s, device=device, generator=gen).to(dtype) for s in shapes]
    onlines = [torch.randn(s, device=device, generator=gen).to(dtype) for s in shapes]
    numel = sum(t.numel() for t in targets)
    nbytes = 3 * numel * targets[0].element_size()
    floor = nbytes / bw
    label = f"{device} ema {str(dtype).replace('torch.', '')} {numel / 1e6:.1f}M params, {len(shapes)} tensors"
    m_dev = torch.tensor(MOMENTUM, device=device)
    time = timer(device, args)

    def forced(backend, m):
        def fn():
            with ops.use_backend(ema_update=backend):
                ops.ema_update(targets, onlines, m)
        return fn

    loop = time(lambda: per_param_loop(targets, onlines, MOMENTUM))
    foreach = time(lambda: foreach_lerp(targets, onlines, MOMENTUM))
    ours = {}
    if _backend.triton_available():
        ours["triton"] = time(forced("triton", MOMENTUM))
        ours["triton (device momentum)"] = time(forced("triton", m_dev))
    if device == "cuda" and _backend.cuda_kernels_available():
        ours["jepa._C cuda"] = time(forced("cuda", MOMENTUM))
    extra = {"numel": numel, "tensors": len(shapes), "bytes_moved": nbytes}
    for name, timing in ours.items():
        gbps = nbytes / timing.median
        for ref, ref_name in ((loop, "mul_+add_ loop"), (foreach, "_foreach_lerp_")):
            report.add(f"{label} {name}", timing, ref, floor_s=floor, reference_name=ref_name,
                       ours_GBps=gbps / 1e9, fraction_of_copy_bw=gbps / bw, **extra)
    best = ours.get("jepa._C cuda") or ours.get("triton")
    if best is not None and device == "cuda" and not args.quick:
        report.target(f"{label}: fraction of copy bandwidth", nbytes / best.median / bw, 0.8, higher_is_better=True)
        report.target(f"{label}: per-param loop / ours", loop.median / best.median, 1.5, higher_is_better=True)
    del targets, onlines
    return numel


def gpu_flat_rows(report, args, device, bw, dtype, numel):
    """(d) the trainer's flat-buffer EMA: one ema_update over one flat pair of `numel` elements."""
    gen = torch.Generator(device=device).manual_seed(1)
    flat_t = torch.randn(numel, device=device, generator=gen).to(dtype)
    flat_o = torch.randn(numel, device=device, generator=gen).to(dtype)
    nbytes = 3 * numel * flat_t.element_size()
    time = timer(device, args)
    ours = time(lambda: ops.ema_update([flat_t], [flat_o], MOMENTUM))  # auto: what JEPA.update_target_encoder runs
    ref = time(lambda: flat_t.lerp_(flat_o, 1.0 - MOMENTUM))
    label = f"{device} ema flat buffer (JEPA.update_target_encoder) {str(dtype).replace('torch.', '')} {numel / 1e6:.1f}M params"
    report.add(label, ours, ref, floor_s=nbytes / bw, reference_name="torch.lerp_ on the flat pair",
               ours_GBps=nbytes / ours.median / 1e9, fraction_of_copy_bw=nbytes / ours.median / bw)
    if device == "cuda" and not args.quick:
        report.target(f"{label}: fraction of copy bandwidth", nbytes / ours.median / bw, 0.8, higher_is_better=True)
    del flat_t, flat_o


def gpu_small_model_rows(report, args, device, n_layers=1000):
    """(e) JEPA.update_target_encoder on many tiny tensors (flat layout) vs _foreach_lerp_ / the loop."""
    from jepa.models import JEPA  # noqa: PLC0415

    torch.manual_seed(0)
    encoder = torch.nn.Sequential(*[torch.nn.Linear(32, 32) for _ in range(n_layers)]).to(device)
    model = JEPA(encoder=encoder, predictor=torch.nn.Identity())
    targets, onlines = list(model.target_encoder.parameters()), list(model.encoder.parameters())
    time = timer(device, args)
    ours = time(lambda: model.update_target_encoder(MOMENTUM))
    label = f"{device} fp32 JEPA.update_target_encoder, {len(targets)} tensors ({n_layers} x Linear(32,32))"
    report.add(label, ours, time(lambda: foreach_lerp(targets, onlines, MOMENTUM)), reference_name="_foreach_lerp_")
    report.add(label, ours, time(lambda: per_param_loop(targets, onlines, MOMENTUM)), reference_name="mul_+add_ loop")


def gpu_rows(report, args, device):
    if device == "cuda" and not torch.cuda.is_available():
        report.skip("gpu ema_update", "no GPU: skipped")
        return
    if device != "cuda" and not _backend.triton_available():
        report.skip("gpu ema_update", "no GPU: skipped (triton is not installed)")
        return
    shapes = gpu_shapes(args.size, args.quick) if device == "cuda" else vit_shapes(1, 64, 4, tokens=17)
    bw = copy_bandwidth(args, device)
    report.note(f"measured {device} copy bandwidth: {bw / 1e9:.0f} GB/s (read + write)")
    if device == "cuda" and not _backend.cuda_kernels_available():
        report.note("jepa._C has no usable CUDA kernels here: no 'jepa._C cuda' rows")
    if device != "cuda":
        report.note("--interpret-smoke: CPU + Triton interpreter, tiny sizes; the timings mean nothing")
    with torch.no_grad():
        for dtype in (torch.float32, torch.bfloat16):
            numel = gpu_list_rows(report, args, device, bw, dtype, shapes)
            if device == "cuda":
                gpu_flat_rows(report, args, device, bw, dtype, numel)
                torch.cuda.empty_cache()
        if device == "cuda":
            gpu_small_model_rows(report, args, device, n_layers=200 if args.quick else 1000)


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--size", default="vit_h", help="GPU rows: vit_h (632M, default), vit_l, vit_b, or millions")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU rows")
    add_interpret_smoke(parser)
    args = parser.parse_args()
    apply_threads(args)
    gpu_shapes(args.size, args.quick)  # validates --size also where there is no GPU
    device = triton_bench_device(args)
    if args.quick:
        args.repeat, args.warmup = min(args.repeat, 5), min(args.warmup, 1)
    report = Report("ema_update", args)  # after apply_threads: the environment records the thread count
    if not args.no_cpu and not args.interpret_smoke:
        cpu_rows(report, args)
    gpu_rows(report, args, device)
    return report.finish()


def cpu_rows(report, args) -> None:
    shapes = vit_b_shapes(depth=2 if args.quick else 12)
    if _backend.native_module() is None:
        report.note("jepa._C is not built: 'ours' is the torch fallback")
    with torch.no_grad():
        ours, floor, _ = big_set(report, args, "cpu", torch.float32, shapes, with_loop=True, sync=None)
        if not args.quick:
            report.target("cpu fp32 ViT-B: ours / floor", ours / floor, 1.15, higher_is_better=False)
        for dtype in (torch.bfloat16, torch.float16):
            big_set(report, args, "cpu", dtype, shapes, with_loop=False, sync=None)
        small_ours, small_ref = small_set(report, args, "cpu", None, n_layers=200 if args.quick else 1000)
        jepa_ours, jepa_ref = jepa_small_set(report, args, "cpu", None, n_layers=200 if args.quick else 1000)
        if not args.quick:
            report.target("cpu 2,000 small tensors (ops.ema_update on lists): _foreach_lerp_ / ours", small_ref / small_ours, 5.0, higher_is_better=True)
            report.target("cpu 2,000 small tensors (JEPA flat layout): _foreach_lerp_ / ours", jepa_ref / jepa_ours, 5.0, higher_is_better=True)


if __name__ == "__main__":
    sys.exit(main())
