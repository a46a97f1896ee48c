"""Compiles Triton kernels for NVIDIA GPUs without a GPU (run as a script by tests/ops/test_triton_aot.py,
in a process without TRITON_INTERPRET, which would turn every @triton.jit into an interpreted function).

stdin: a JSON list of jobs; stdout: a JSON list of results, one per job, in order. A job:

    {"module": "jepa.kernels.triton.attention", "kernel": "_attn_fwd", "cap": 90, "num_warps": 4,
     "num_stages": 3, "signature": {arg: type}, "constexprs": {arg: value}, "divisible": [arg, ...],
     "ptx": true}

Arguments missing from ``signature`` are constexprs; string values "tl.float32" etc. become Triton dtypes.
A result: {"shared": bytes, "regs": n, "stack": bytes, "ptx_ops": [...], "wgmma": bool, "mma_sync": bool,
"size_products": {"i32": [...], "i64": n}, "seconds": compile time} or {"error": "...", "seconds": ...}.
``size_products`` (see :func:`size_products`): the 32-bit integer multiplications by a size or stride
argument in the kernel's TTIR, which overflow past 2**31, and how many are 64-bit. Registers and stack frame come from the cubin (cuobjdump, shipped with Triton).
Jobs run in a pool of ``os.cpu_count()`` processes (at most 4).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor

# Jobs may name kernels of this folder (_aot_examples); the pool's processes need it on their path too.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


def _cuobjdump():
    import triton  # noqa: PLC0415

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    return path if os.path.exists(path) else None


def _usage(cubin: bytes) -> tuple[int | None, int | None]:
    tool = _cuobjdump()
    if tool is None:
        return None, None
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    finally:
        os.unlink(f.name)
    m = re.search(r"REG:(\d+)\s+STACK:(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (None, None)


_SSA = r"%[\w.#-]+"
_ARG = re.compile(rf"({_SSA}): (i32|i64)\b")
_DEF = re.compile(rf"^\s*({_SSA}) = (\S+) (.*)$")
_MULI = re.compile(rf"^({_SSA}), ({_SSA})(?: overflow<[\w, ]+>)? : (\S+) loc\((.*)\)$")
# Ops that carry a value unchanged into a wider shape: a multiplication by one of them multiplies by the argument.
_SAME_VALUE = {"tt.splat", "tt.broadcast", "tt.expand_dims", "tt.reshape", "arith.extsi"}
_LOC = re.compile(r"^(#loc\d*) = loc\((.*)\)$")
_FILE_LINE = re.compile(r'"([^"]*?)([^/"]+\.py)":(\d+)')


def _source_line(ref: str, locs: dict) -> str:
    """``file.py:line`` of a TTIR location reference (``#loc12``), following named and call-site locations."""
    for _ in range(32):
        body = locs.get(ref)
        if body is None:
            return ref
        m = _FILE_LINE.search(body)
        if m:
            return f"{m.group(2)}:{m.group(3)}"
        nxt = re.search(r"#loc\d*", body)
        if not nxt:
            return ref
        ref = nxt.group(0)
    return ref


def size_products(ttir: str) -> dict:
    """The integer multiplications in a kernel's TTIR with a runtime integer argument (a size or a stride:
    Triton passes those as i32 when they fit) as a factor, directly or splat/broadcast into a tensor, except
    ``tl.arange(0, BLOCK) * stride`` (an offset inside one block, bounded by BLOCK * stride).
    ``{"i32": [ssa name and source location of each 32-bit one], "i64": count of 64-bit ones}``: a 32-bit
    product such as ``row * D`` or ``offs_m * stride_qm`` wraps past 2**31 and addresses the wrong memory,
    where the 64-bit one (a factor cast with ``.to(tl.int64)`` first) does not."""
    head = next((line for line in ttir.splitlines() if "tt.func public" in line), "")
    args = {name for name, _ in _ARG.findall(head)}
    defs, locs = {}, {}
    for line in ttir.splitlines():
        m = _DEF.match(line)
        if m:
            defs[m.group(1)] = (m.group(2), m.group(3))
        m = _LOC.match(line)
        if m:
            locs[m.group(1)] = m.group(2)

    def origin(name: str) -> str:
        """"arg" (a kernel argument), "range" (a tl.arange) or "" (anything else), through _SAME_VALUE ops."""
        for _ in range(16):
            if name in args:
                return "arg"
            op, rest = defs.get(name, ("", ""))
            if op == "tt.make_range":
                return "range"
            if op not in _SAME_VALUE:
                return ""
            name = rest.split(" ", 1)[0].rstrip(",")
        return ""

    narrow, wide = [], 0
    for name, (op, rest) in defs.items():
        m = _MULI.match(rest) if op == "arith.muli" else None
        if not m:
            continue
        factors = {origin(m.group(1)), origin(m.group(2))}
        # arange * stride: an offset inside one block (< BLOCK * stride), 32 bits by design; the block's own
        # offset (program id or loop index times the stride) is the product that must be 64-bit.
        if "arg" not in factors or "range" in factors:
            continue
        if m.group(3).rstrip(">").endswith("i64"):
            wide += 1
        else:
            narrow.append(f"{m.group(1)} * {m.group(2)} : {m.group(3)} at {_source_line(m.group(4), locs)}")
    return {"i32": narrow, "i64": wide}


def compile_one(job: dict) -> dict:
    import time  # noqa: PLC0415

    t0 = time.perf_counter()
    result = _compile(job)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def _compile(job: dict) -> dict:
    try:
        import triton  # noqa: PLC0415
        import triton.language as tl  # noqa: PLC0415
        from triton.backends.compiler import GPUTarget  # noqa: PLC0415
        from triton.compiler import ASTSource  # noqa: PLC0415

        from triton.runtime.jit import JITFunction  # noqa: PLC0415

        fn = getattr(importlib.import_module(job["module"]), job["kernel"])
        while not isinstance(fn, JITFunction):  # an Autotuner (or Heuristics) wraps the JITFunction
            fn = fn.fn
        names = fn.arg_names
        dtypes = {"tl.float32": tl.float32, "tl.float16": tl.float16, "tl.bfloat16": tl.bfloat16,
                  "tl.int32": tl.int32, "tl.int64": tl.int64}
        consts = {k: dtypes.get(v, v) if isinstance(v, str) else v for k, v in job["constexprs"].items()}
        signature = {n: job["signature"].get(n, "constexpr") for n in names}
        missing = [n for n in names if signature[n] == "constexpr" and n not in consts]
        if missing:
            return {"error": f"no value for constexpr arguments {missing}"}
        attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in job.get("divisible", [])}
        src = ASTSource(fn=fn, signature=signature, constexprs={(names.index(k),): v for k, v in consts.items()},
                        attrs=attrs)
        options = {"num_warps": job.get("num_warps", 4), "num_stages": job.get("num_stages", 3)}
        k = triton.compile(src, target=GPUTarget("cuda", job["cap"], 32), options=options)
        regs, stack = _usage(k.asm["cubin"])
        result = {"shared": int(k.metadata.shared), "regs": regs, "stack": stack,
                  "size_products": size_products(k.asm["ttir"])}
        if job.get("ptx"):
            ptx = k.asm["ptx"]
            result["ptx_ops"] = sorted(set(re.findall(r"\b(?:ld|st)\.global(?:\.[a-z0-9]+)+", ptx)))
            result["wgmma"] = "wgmma" in ptx
            result["mma_sync"] = "mma.sync" in ptx
        return result
    except Exception as exc:  # reported per job: one broken kernel must not hide the others
        return {"error": f"{type(exc).__name__}: {str(exc)[-3000:]}"}


def main() -> int:
    os.environ.pop("TRITON_INTERPRET", None)
    os.environ.setdefault("TRITON_DISABLE_LINE_INFO", "1")  # no debug line tables: less work per compile
    jobs = json.load(sys.stdin)
    workers = max(1, min(4, os.cpu_count() or 1, len(jobs)))
    if workers == 1:
        results = [compile_one(j) for j in jobs]
    else:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(compile_one, jobs, chunksize=1))
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
