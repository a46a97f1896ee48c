"""Benchmark jepa.ops.sigreg: the fused Triton kernels against the eager torch reference.

Rows:
- memory, every device: peak bytes live at once during forward + backward, beyond the inputs, traced
  op by op (a TorchDispatchMode that adds up the storages each torch op creates and drops them when
  they are freed). "reference" is the eager ``sigreg_reference`` with autograd (it stores the
  ``(N, M, knots)`` angles, cosines and sines); "ours" is the fused path's host code (the kernels'
  partial sums, the ECF, ``dL/dx (N, M)``, ``dz``). Floor: ``dz`` plus the ECF, what the op returns.
  Without a GPU the fused kernels run on the CPU through Triton's interpreter (TRITON_INTERPRET=1,
  set here): the bytes are those of the host code, the same on a GPU. On a GPU a second row compares
  ``torch.cuda.max_memory_allocated`` of the op through jepa.ops (auto backend vs torch backend).
- time, GPU only (``no GPU: skipped`` elsewhere): forward and forward + backward, float32 and bfloat16,
  ours (backend triton) vs the eager reference (backend torch), timed with CUDA events
  (``_harness.measure_gpu``). Floor: the projection matmuls the op
  needs at least (forward 1, forward + backward 3: projection, recomputed projection, dz), timed with
  torch.mm on the same shapes.

Usage: python benchmarks/bench_sigreg.py [--out r.json] [--quick] [--repeat N]
       python benchmarks/bench_sigreg.py --interpret-smoke   (tiny sizes, CPU, checks the script end to end)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    Report,
    add_interpret_smoke,
    apply_threads,
    make_parser,
    timer,
    triton_bench_device,
    triton_bench_skip_reason,
)


def _live_bytes_mode():
    """A TorchDispatchMode measuring the peak of bytes live at once in storages created under it."""
    import torch  # noqa: PLC0415
    from torch.multiprocessing.reductions import StorageWeakRef  # noqa: PLC0415
    from torch.utils._python_dispatch import TorchDispatchMode  # noqa: PLC0415
    from torch.utils._pytree import tree_leaves  # noqa: PLC0415

    class LiveBytes(TorchDispatchMode):
        def __init__(self, existing=()):
            super().__init__()
            self.existing = {t.untyped_storage().data_ptr() for t in existing}
            self.live: dict[int, tuple[StorageWeakRef, int]] = {}
            self.current = self.peak = 0

        def _sweep(self) -> None:
            for ptr, (ref, nbytes) in list(self.live.items()):
                if ref.expired():
                    del self.live[ptr]
                    self.current -= nbytes

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self._sweep()
            out = func(*args, **(kwargs or {}))
            self._sweep()  # storages the op freed (an address may be reused by its output)
            for t in tree_leaves(out):
                if not isinstance(t, torch.Tensor):
                    continue
                storage = t.untyped_storage()
                ptr = storage.data_ptr()
                if ptr == 0 or ptr in self.existing or ptr in self.live:
                    continue
                self.live[ptr] = (StorageWeakRef(storage), storage.nbytes())
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
            return out

    return LiveBytes


def _inputs(n, d, m, dtype, device):
    import torch  # noqa: PLC0415

    gen = torch.Generator(device=device).manual_seed(0)
    z = torch.randn(n, d, device=device, dtype=torch.float32, generator=gen).to(dtype)
    a = torch.randn(d, m, device=device, dtype=torch.float32, generator=gen)
    return z, a / a.norm(dim=0, keepdim=True)


def memory_rows(report, device, n, d, m, knots, dtype):
    import torch  # noqa: PLC0415
    from jepa.kernels.triton import sigreg as kernels  # noqa: PLC0415

    import jepa.ops as ops  # noqa: PLC0415

    z, a = _inputs(n, d, m, dtype, device)
    mode = _live_bytes_mode()
    label = f"sigreg {str(dtype).replace('torch.', '')} N={n} D={d} M={m} knots={knots} fwd+bwd peak bytes"

    def eager():
        x = z.clone().requires_grad_(True)
        with mode([z, a, x]) as tracker:
            ops.sigreg_reference(x, a, 3.0, knots).backward()
        return tracker.peak

    def fused():
        # what torch.ops.jepa.sigreg_ecf runs forward and backward (its internals, traced one by one)
        with mode([z, a]) as tracker:
            ecf = kernels.ecf_forward(z, a, t_max=3.0, knots=knots).requires_grad_(True)
            value = ops.sigreg_from_ecf(ecf, n, 3.0)
            (grad,) = torch.autograd.grad(value, ecf)
            dz = kernels.ecf_backward(grad, z, a, t_max=3.0, knots=knots)
            del dz
        return tracker.peak

    ref_bytes, ours_bytes = eager(), fused()
    floor = n * d * z.element_size() + 2 * m * knots * 4
    report.add_bytes(label + " (traced)", ours_bytes, ref_bytes, floor=floor, reference_name="eager torch",
                     nmk_tensor_bytes=n * m * knots * 4)
    if device == "cuda":
        def peak(backend):
            x = z.clone().requires_grad_(True)
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            with ops.use_backend(backend):
                ops.sigreg(x, a, knots=knots).backward()
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - base

        report.add_bytes(label + " (cuda allocator)", peak("triton"), peak("torch"), floor=floor,
                         reference_name="eager torch")


def time_rows(report, args, device, n, d, m, knots, dtype):
    import torch  # noqa: PLC0415

    import jepa.ops as ops  # noqa: PLC0415

    z, a = _inputs(n, d, m, dtype, device)
    time = timer(device, args)  # CUDA events on a GPU: these rows are µs to ms long
    mm = time(lambda: torch.mm(z, a.to(dtype))).median
    label = f"sigreg {str(dtype).replace('torch.', '')} N={n} D={d} M={m} knots={knots}"
    x = z.clone().requires_grad_(True)

    def run(backend, backward):
        def fn():
            with ops.use_backend(backend):
                value = ops.sigreg(x, a, knots=knots)
            if backward:
                x.grad = None
                value.backward()
        return fn

    for backward, matmuls in ((False, 1), (True, 3)):
        name = f"{label} {'fwd+bwd' if backward else 'fwd'}"
        ours = time(run("triton", backward))
        ref = time(run("torch", backward))
        report.add(name, ours, ref, floor_s=matmuls * mm, reference_name="eager torch")


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0])
    add_interpret_smoke(parser)
    args = parser.parse_args()
    apply_threads(args)
    import torch  # noqa: PLC0415

    gpu = torch.cuda.is_available() and not args.interpret_smoke
    if not gpu:
        # the fused kernels run on CPU tensors through the interpreter, which must be on before triton loads
        os.environ.setdefault("TRITON_INTERPRET", "1")
    time_device = triton_bench_device(args)
    report = Report("sigreg", args)
    skip = triton_bench_skip_reason("cuda" if gpu else "cpu")
    if skip:
        report.skip("sigreg", skip)
        return report.finish()
    knots = 17
    device = "cuda" if gpu else "cpu"
    if gpu:
        mem_shapes = [(4096, 512, 1024)] if not args.quick else [(1024, 256, 512)]
    else:
        mem_shapes = [(33, 17, 20)] if args.interpret_smoke else ([(256, 64, 64)] if args.quick else [(1024, 128, 256)])
        report.note("memory rows on the CPU: the fused kernels run through Triton's interpreter; bytes are the host "
                    "code's, as on a GPU")
    for n, d, m in mem_shapes:
        for dtype in (torch.float32, torch.bfloat16):
            memory_rows(report, device, n, d, m, knots, dtype)
    if time_device == "cuda" and not gpu:
        report.skip("sigreg time rows", "no GPU: skipped")
    else:
        if gpu:
            shape = (1024, 256, 512) if args.quick else (4096, 512, 1024)
        else:
            shape = (33, 17, 20)
            report.note("--interpret-smoke: CPU + Triton interpreter, tiny sizes; the timings mean nothing")
        for dtype in (torch.float32, torch.bfloat16):
            time_rows(report, args, time_device, *shape, knots, dtype)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
