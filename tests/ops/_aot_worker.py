"""Compiles Triton kernels for NVIDIA GPUs without a GPU (run as a script by tests/ops/test_triton_aot.py,
in a process without TRITON_INTERPRET, which would turn every @triton.jit into an interpreted function).

stdin: a JSON list of jobs; stdout: a JSON list of results, one per job, in order. A job:

    {"module": "jepa.kernels.triton.attention", "kernel": "_attn_fwd", "cap": 90, "num_warps": 4,
     "num_stages": 3, "signature": {arg: type}, "constexprs": {arg: value}, "divisible": [arg, ...],
     "ptx": true}

Arguments missing from ``signature`` are constexprs; string values "tl.float32" etc. become Triton dtypes.
A result: {"shared": bytes, "regs": n, "stack": bytes, "ptx_ops": [...], "wgmma": bool, "mma_sync": bool,
"seconds": compile time} or {"error": "...", "seconds": ...}. Registers and stack frame come from the cubin (cuobjdump, shipped with Triton).
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
        dtypes = {"tl.float32": tl.float32, "tl.float16": tl.float16, "tl.bfloat16": tl.bfloat16}
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
        result = {"shared": int(k.metadata.shared), "regs": regs, "stack": stack}
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
