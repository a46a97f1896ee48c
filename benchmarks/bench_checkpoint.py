"""Benchmark checkpoint IO (jepa.io, C++ writer/reader in jepa._C) against torch.save/torch.load
and the safetensors package, next to the hardware floor.

State: a ViT-B/16-sized model (~86M parameters, timm layout), its EMA target copy and AdamW state
(exp_avg, exp_avg_sq, step), float32: ~1.4 GB. ``--size`` scales the depth down (0.25: 3 blocks).

Rows (save timings are interleaved across methods; files are read from the page cache):
  save (durable)       ours: jepa.io.save (tmp file, fsync, rename, dir fsync)
                       reference: torch.save + fsync of the file; floor: one write() of the same
                       bytes from one buffer + fsync
  save async: blocked  ours: AsyncCheckpointer.save returning (steady state: snapshot buffers reused)
                       reference: our sync save (target: < 10% of it); the first call, which also
                       allocates the snapshot buffers, is a separate row
  load verified        ours: jepa.io.load (every CRC32C checked) vs warm torch.load
  load vs safetensors  ours verified vs safetensors.torch.load_file of the same tensors
  load lazy            ours verify=False vs torch.load(mmap=True)
  floor for loads      a read of the file's bytes from the page cache into a buffer
GPU row (async snapshot of CUDA tensors) runs only with CUDA: else "no GPU: skipped".

Targets: save <= 1.2x the floor and >= 1.3x faster than torch.save+fsync; async blocked < 10% of a
sync save; verified load >= 1.5x faster than warm torch.load and within 1.5x of safetensors; lazy
load as fast as torch.load(mmap=True).

Usage: python benchmarks/bench_checkpoint.py [--size 1.0] [--dir DIR] [--out results.json] [--repeat N] [--quick]
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Report, Timing, apply_threads, make_parser, measure  # noqa: E402

import jepa.io as jio  # noqa: E402


def vit_b_shapes(depth: int, dim: int = 768, mlp_ratio: int = 4, patch: int = 16, tokens: int = 197):
    """Parameter shapes of a ViT-B/16 with ``depth`` blocks (12 blocks: ~86M parameters)."""
    hidden = dim * mlp_ratio
    shapes = {"patch_embed.proj.weight": (dim, 3, patch, patch), "patch_embed.proj.bias": (dim,),
              "cls_token": (1, 1, dim), "pos_embed": (1, tokens, dim)}
    for b in range(depth):
        p = f"blocks.{b}."
        shapes.update({p + "norm1.weight": (dim,), p + "norm1.bias": (dim,), p + "attn.qkv.weight": (3 * dim, dim),
                       p + "attn.qkv.bias": (3 * dim,), p + "attn.proj.weight": (dim, dim), p + "attn.proj.bias": (dim,),
                       p + "norm2.weight": (dim,), p + "norm2.bias": (dim,), p + "mlp.fc1.weight": (hidden, dim),
                       p + "mlp.fc1.bias": (hidden,), p + "mlp.fc2.weight": (dim, hidden), p + "mlp.fc2.bias": (dim,)})
    shapes.update({"norm.weight": (dim,), "norm.bias": (dim,)})
    return shapes


def make_state(size: float):
    depth = max(1, round(12 * size))
    gen = torch.Generator().manual_seed(0)
    model = {k: torch.randn(s, generator=gen) for k, s in vit_b_shapes(depth).items()}
    target = {k: v.clone() for k, v in model.items()}
    opt_state = {i: {"step": torch.tensor(10.0), "exp_avg": torch.randn_like(v), "exp_avg_sq": torch.rand_like(v)}
                 for i, v in enumerate(model.values())}
    state = {
        "model": model,
        "target_encoder": target,
        "optimizer": {"state": opt_state, "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8,
                                                             "weight_decay": 0.05, "params": list(range(len(model)))}]},
        "epoch": 3, "global_step": 1000, "best_loss": float("inf"), "history": {"loss": [1.0, 0.5, 0.25]},
    }
    nbytes = sum(t.numel() * t.element_size() for t in _tensors(state))
    return state, nbytes, sum(v.numel() for v in model.values())


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_floor(path: Path, buf: memoryview) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = buf
        while len(view):
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_floor(path: Path, buf: bytearray) -> None:
    with open(path, "rb", buffering=0) as fh:
        view = memoryview(buf)
        while len(view):
            n = fh.readinto(view)
            if not n:
                break
            view = view[n:]


def interleaved(fns, *, warmup: int, repeat: int) -> list[Timing]:
    """Time each of ``fns`` ``repeat`` times, in rotation (after ``warmup`` untimed rounds)."""
    values: list[list[float]] = [[] for _ in fns]
    for round_ in range(warmup + repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            if round_ >= warmup:
                values[i].append(time.perf_counter() - t0)
    return [Timing(statistics.median(v), min(v), max(v), repeat, v) for v in values]


def touch_all(state) -> None:
    """Read one element per 4 KiB page of every tensor (lazy loads really map their pages)."""
    for t in _tensors(state):
        if t.numel():
            t.view(-1)[:: max(1, 4096 // t.element_size())].sum()


def main() -> int:
    parser = make_parser("checkpoint save/load: jepa.io vs torch.save/torch.load vs safetensors")
    parser.add_argument("--size", type=float, default=1.0, help="fraction of the ViT-B depth (default 1.0: ~1.4 GB)")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the files (default: a temp folder)")
    parser.set_defaults(warmup=1, repeat=3)
    args = parser.parse_args()
    apply_threads(args)
    if args.quick:
        args.size, args.repeat, args.warmup = min(args.size, 1 / 12), 2, 1
    if not 0 < args.size <= 1:
        raise SystemExit(f"--size must be in (0, 1], got {args.size}")
    report = Report("checkpoint", args)
    state, nbytes, n_params = make_state(args.size)
    gb = nbytes / 1e9
    print(f"state: {n_params / 1e6:.1f}M parameters (model + EMA target + AdamW state) = {gb:.2f} GB", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="jepa-ckpt-bench-", dir=args.dir))
    w, r = args.warmup, args.repeat
    try:
        ours_path, torch_path, st_path, floor_path = (workdir / n for n in ("ours.pt", "torch.pt", "st.safetensors", "floor.bin"))

        # ---------------------------------------------------------------- saves
        flat = torch.empty(nbytes, dtype=torch.uint8)
        flat.fill_(1)
        # Interleaved (floor, ours, torch, floor, ours, ...): the disk's speed drifts with what else
        # the machine writes, and each method should see the same conditions.
        floor_save, ours_save, torch_save = interleaved(
            [lambda: write_floor(floor_path, memoryview(flat.numpy())), lambda: jio.save(state, ours_path),
             lambda: (torch.save(state, torch_path), fsync_file(torch_path))], warmup=w, repeat=r)
        report.add(f"save {gb:.2f} GB (durable)", ours_save, torch_save, floor_s=floor_save.median,
                   reference_name="torch.save+fsync")
        report.target("save <= 1.2x write+fsync floor", ours_save.median / floor_save.median, 1.2, higher_is_better=False)
        report.target("save >= 1.3x faster than torch.save+fsync", torch_save.median / ours_save.median, 1.3, higher_is_better=True)

        ckpt = jio.AsyncCheckpointer()
        t0 = time.perf_counter()
        ckpt.save(state, workdir / "async.pt")
        first_block = time.perf_counter() - t0
        ckpt.wait()
        async_block = measure(lambda: ckpt.save(state, workdir / "async.pt"), warmup=w, repeat=r, setup=ckpt.wait)
        ckpt.wait()
        report.add("save async: loop blocked (buffers reused)", async_block, ours_save, reference_name="our sync save")
        report.add("save async: loop blocked (1st, allocates)", first_block, ours_save, reference_name="our sync save")
        report.target("async save blocks < 10% of a sync save", async_block.median / ours_save.median, 0.10, higher_is_better=False)
        ckpt.close()
        del flat

        # ---------------------------------------------------------------- loads (page cache)
        from safetensors.torch import load_file, save_file  # noqa: PLC0415

        from jepa.io._codec import encode  # noqa: PLC0415

        enc = encode(state)
        enc_flat = dict(zip(enc.names, enc.tensors))
        save_file(enc_flat, str(st_path))
        del enc, enc_flat
        file_bytes = ours_path.stat().st_size
        buf = bytearray(file_bytes)
        floor_read = measure(lambda: read_floor(ours_path, buf), warmup=w, repeat=r)
        del buf
        ours_load = measure(lambda: jio.load(ours_path), warmup=w, repeat=r)
        torch_load = measure(lambda: torch.load(torch_path, weights_only=True), warmup=w, repeat=r)
        # safetensors.torch.load_file maps the file lazily: "+ copy" copies every tensor into
        # preallocated ones (what loading into a model does), so that every byte is read.
        dst = {name: torch.empty(shape, dtype=dtype) for name, shape, dtype in
               ((n, t.shape, t.dtype) for n, t in load_file(str(st_path)).items())}

        def st_load_copy():
            for name, t in load_file(str(st_path)).items():
                dst[name].copy_(t)

        def ours_load_copy():
            from jepa.io._codec import encode as _enc  # noqa: PLC0415

            loaded = _enc(jio.load(ours_path))
            for name, t in zip(loaded.names, loaded.tensors):
                dst[name].copy_(t)

        st_load = measure(st_load_copy, warmup=w, repeat=r)
        ours_copy = measure(ours_load_copy, warmup=w, repeat=r)
        report.add("load verified (every CRC)", ours_load, torch_load, floor_s=floor_read.median, reference_name="torch.load warm")
        report.add("load verified vs safetensors", ours_load, st_load, floor_s=floor_read.median,
                   reference_name="safetensors load_file+copy")
        report.add("load verified + copy vs safetensors", ours_copy, st_load, floor_s=floor_read.median,
                   reference_name="safetensors load_file+copy")
        del dst
        report.target("verified load >= 1.5x faster than warm torch.load", torch_load.median / ours_load.median, 1.5, higher_is_better=True)
        report.target("verified load within 1.5x of safetensors load_file+copy", ours_load.median / st_load.median, 1.5, higher_is_better=False)

        ours_lazy = measure(lambda: jio.load(ours_path, verify=False), warmup=w, repeat=r)
        torch_mmap = measure(lambda: torch.load(torch_path, weights_only=True, mmap=True), warmup=w, repeat=r)
        report.add("load lazy (verify=False)", ours_lazy, torch_mmap, reference_name="torch.load(mmap=True)")
        report.target("lazy load as fast as torch.load(mmap=True)", torch_mmap.median / ours_lazy.median, 1.0, higher_is_better=True)
        ours_lazy_touch = measure(lambda: touch_all(jio.load(ours_path, verify=False)), warmup=w, repeat=r)
        torch_mmap_touch = measure(lambda: touch_all(torch.load(torch_path, weights_only=True, mmap=True)), warmup=w, repeat=r)
        report.add("load lazy + touch every page", ours_lazy_touch, torch_mmap_touch, floor_s=floor_read.median,
                   reference_name="torch.load(mmap=True) + touch")

        # ---------------------------------------------------------------- GPU
        if torch.cuda.is_available():
            gpu_state = {k: v.cuda() for k, v in state["model"].items()}
            gckpt = jio.AsyncCheckpointer()
            gckpt.save(gpu_state, workdir / "gpu.pt")
            gckpt.wait()
            g_block = measure(lambda: gckpt.save(gpu_state, workdir / "gpu.pt"), warmup=w, repeat=r, setup=gckpt.wait)
            gckpt.wait()
            g_sync = measure(lambda: jio.save(gpu_state, workdir / "gpu_sync.pt"), warmup=w, repeat=r)
            report.add("GPU weights: async save blocked", g_block, g_sync, reference_name="our sync save from GPU")
        else:
            report.skip("GPU weights: async save blocked", "no GPU: skipped")
        report.note(f"files in {workdir} (page cache warm); single machine, other processes may share the CPU and disk")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
