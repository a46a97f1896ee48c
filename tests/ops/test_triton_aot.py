"""Ahead-of-time compilation of every Triton kernel for NVIDIA GPUs (sm_90: H100/H200, sm_80: A100), no GPU.

The CPU interpreter never runs Triton's compiler, so it cannot see shared-memory overflows, register
spills, type errors of integer arguments that Triton specializes to the constant 1, or missing vector
loads. Here every kernel is compiled with Triton's real compiler (in one subprocess without
TRITON_INTERPRET, a pool of workers, each configuration once) and checked:

- attention: the pinned configuration (what ``JEPA_TRITON_AUTOTUNE=0`` and the tests run) of every kernel
  for float32 with tf32 on and off, float16, bfloat16 and head sizes 24, 32, 64, 80, 96, 128, for sm_90
  (and sm_80 for a subset): it compiles, fits the device's shared memory, does not spill (sm_90) and
  uses tensor cores (wgmma on sm_90 for 64-row tiles, mma.sync otherwise); every other autotuning
  candidate of the tile tables compiles for sm_90 without spills; the shared-memory estimate the
  run-time pruner uses is an upper bound of every compiled kernel's;
- every kernel of every module compiles with all its integer arguments equal to 1 (Triton turns those
  into constants: ``R.to(...)`` on one failed at the first single-row call) and with ordinary ones;
- the Triton EMA's aligned path loads and stores 16-byte vectors;
- no kernel multiplies a size or stride argument in 32 bits (``row * D``, ``offs_m * stride_qm``: these wrap
  past 2**31 elements and address the wrong memory): every such product in the TTIR is 64-bit.

Marked ``aot``; they run in the default test run (a Triton with its NVIDIA backend is all they need).
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.aot

triton = pytest.importorskip("triton")
kern = pytest.importorskip("jepa.kernels.triton.attention")

WORKER = Path(__file__).with_name("_aot_worker.py")
SMEM = {90: 232448, 80: 166912}  # opt-in shared memory per block: H100/H200, A100
HEAD_DIMS = (24, 32, 64, 80, 96, 128)
ATTN = "jepa.kernels.triton.attention"
KERNEL_NAMES = {"fwd": "_attn_fwd", "dkdv": "_attn_bwd_dkdv", "dq": "_attn_bwd_dq", "delta": "_attn_bwd_delta"}
# (name, torch dtype, dot precision)
DTYPES = {
    "fp32-tf32": (torch.float32, "tf32"),
    "fp32-tf32x3": (torch.float32, "tf32x3"),
    "fp16": (torch.float16, "tf32"),
    "bf16": (torch.bfloat16, "tf32"),
}
PTR = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16"}


def _arg_names(module: str, kernel: str) -> list[str]:
    import importlib  # noqa: PLC0415

    fn = getattr(importlib.import_module(module), kernel)
    fn = getattr(fn, "fn", fn)  # JITFunction / InterpretedFunction -> the Python function
    return list(inspect.signature(fn).parameters)


def _attn_job(kernel, dtype_name, head_dim, cfg, cap, *, ones=False, ptx=False, offs="tl.int32"):
    dtype, precision = DTYPES[dtype_name]
    ptr = PTR[dtype]
    sig, divisible = {}, []
    consts = dict(HEAD_D=head_dim, BLOCK_D=kern.padded_head_dim(head_dim), OFFS=offs)
    if kernel != "delta":
        consts.update(CAUSAL=True, HAS_KPM=True, DOT_PRECISION=precision, UPCAST_DOT=False)
    bm, bn, warps, stages = cfg
    consts["BLOCK_M"] = bm
    if kernel != "delta":
        consts["BLOCK_N"] = bn
    for name in _arg_names(ATTN, KERNEL_NAMES[kernel]):
        if name in consts:
            continue
        if name in ("Q", "K", "V", "O", "DO", "DQ", "DK", "DV"):
            sig[name] = ptr
            divisible.append(name)
        elif name in ("LSE", "DELTA"):
            sig[name], divisible = "*fp32", divisible + [name]
        elif name == "KPM":
            sig[name], divisible = "*u8", divisible + [name]
        elif name.startswith("stride") and (name.endswith("d") or name == "stride_kpm_n"):
            consts[name] = 1  # unit strides of the last dimension: Triton specializes them to 1
        elif name in ("qk_scale", "sm_scale"):
            sig[name] = "fp32"
        elif ones and name != "N_BUCKET":
            consts[name] = 1
        else:
            sig[name] = "i32"
            if name.startswith("stride"):
                divisible.append(name)
    return {"module": ATTN, "kernel": KERNEL_NAMES[kernel], "cap": cap, "num_warps": warps, "num_stages": stages,
            "signature": sig, "constexprs": consts, "divisible": divisible, "ptx": ptx}


def _pinned_jobs() -> dict:
    """(cap, dtype, head dim, kernel) -> job of the pinned configuration."""
    jobs = {}
    # bf16 at every head size; float32 at every padded width, padded (24, 80; 96 pads to 128 like 80) and
    # not (64, 128); fp16 shares bf16's tiles and code but for the dot's input type: one size. sm_80 (its
    # own tables, SM80_TILE_TABLES, and smaller shared memory): one head size per padded width and class.
    plan = {90: {"bf16": HEAD_DIMS, "fp32-tf32": (24, 64, 80, 128), "fp32-tf32x3": (24, 64, 80, 128),
                 "fp16": (64,)},
            80: {"bf16": (24, 64, 80), "fp32-tf32": (24, 64, 128), "fp32-tf32x3": (24, 64, 96), "fp16": (128,)}}
    for cap, per_dtype in plan.items():
        for dtype_name, dims in per_dtype.items():
            dtype, precision = DTYPES[dtype_name]
            for d in dims:
                for kernel in ("fwd", "dkdv", "dq"):
                    cfg = kern.fitting_configs(kernel, dtype, precision, kern.padded_head_dim(d), SMEM[cap], cap)[0]
                    jobs[("pinned", cap, dtype_name, d, kernel)] = _attn_job(kernel, dtype_name, d, cfg, cap, ptx=True)
    return jobs


def _candidate_jobs(pinned: dict) -> dict:
    """Every tile-table entry a device of each architecture can select (sm_90: TILE_TABLES; sm_80: those
    with SM80_TILE_TABLES replacing entries) not already compiled as a pinned configuration."""
    seen = {(k[1], k[4], kern.dot_class(*DTYPES[k[2]]), kern.padded_head_dim(k[3]), tuple(j["constexprs"][x] for x in ("BLOCK_M", "BLOCK_N")) + (j["num_warps"], j["num_stages"]))
            for k, j in pinned.items()}
    rep = {"16bit": "bf16", "tf32": "fp32-tf32", "tf32x3": "fp32-tf32x3"}
    jobs = {}
    for cap in (90, 80):
        for kernel, tables in kern.TILE_TABLES.items():
            for (cls, block_d) in tables:
                dtype, precision = DTYPES[rep[cls]]
                for cfg in kern.table_configs(kernel, dtype, precision, block_d, cap):
                    if (cap, kernel, cls, block_d, tuple(cfg)) in seen:
                        continue
                    jobs[("candidate", cap, kernel, cls, block_d, tuple(cfg))] = _attn_job(kernel, rep[cls], block_d, cfg, cap)
    return jobs


def _jepa_loss_jobs(ones: bool) -> dict:
    mod = "jepa.kernels.triton.jepa_loss"
    jobs = {}
    ints = {"R": "i64", "D": "i32", "M_PER_B": "i32", "N_T": "i32"}
    for dt in (("bf16",) if ones else ("fp32",)):
        common = {"P": f"*{dt}", "T": f"*{dt}", "M": "*u8", "IDX": "*i64", "beta": "fp32", "eps": "fp32"}
        ones_c = {k: 1 for k in ints} if ones else {}
        sig = {**common, **({} if ones else ints)}
        for reduce in (True, False):
            c = {"LOSS": 0, "NORMALIZE": True, "HAS_MASK": True, "GATHER": reduce, "BLOCK_R": 2, "BLOCK_D": 2048,
                 "REDUCE": reduce, **ones_c}
            jobs[("jepa_loss_fwd", dt, reduce, ones)] = {
                "module": mod, "kernel": "_jepa_loss_fwd_kernel", "cap": 90, "num_warps": 8,
                "signature": {**sig, "OUT": f"*{dt}", "PARTIAL": "*fp32"}, "constexprs": c}
            c = {"LOSS": 2, "NORMALIZE": True, "HAS_MASK": True, "GATHER": not reduce, "BLOCK_R": 2, "BLOCK_D": 2048,
                 "G_FULL": not reduce, "MEAN": reduce, **ones_c}
            jobs[("jepa_loss_bwd", dt, reduce, ones)] = {
                "module": mod, "kernel": "_jepa_loss_bwd_kernel", "cap": 90, "num_warps": 8,
                "signature": {**sig, "G": f"*{dt}", "COUNT": "*fp32", "GP": f"*{dt}"}, "constexprs": c}
        fin_ints = {"R": "i64", "D": "i32"}
        jobs[("jepa_loss_finalize", dt, ones)] = {
            "module": mod, "kernel": "_jepa_loss_finalize_kernel", "cap": 90, "num_warps": 4,
            "signature": {"PARTIAL": "*fp32", "OUT": f"*{dt}", "COUNT": "*fp32", **({} if ones else fin_ints)},
            "constexprs": {"HAS_MASK": False, "MEAN": True, "BLOCK": 1024, **({k: 1 for k in fin_ints} if ones else {})}}
    return jobs


_INFO_NCE_DIVISIBLE = {"_inv_norm_kernel": ["X", "OUT"], "_lse_kernel": ["X", "Y", "RX", "RY", "LSE", "POS"],
                       "_bwd_kernel": ["X", "Y", "RX", "RY", "LSE_ROW", "LSE_COL", "DXH"],
                       "_finish_kernel": ["X", "RX", "DXH", "DX"]}


def _info_nce_jobs(ones: bool) -> dict:
    """The launches of ``kernels/triton/info_nce.py`` with the configuration its ``_blocks`` picks.

    ``ones``: bf16 with N = D = 1 (Triton's value-1 specialization) on sm_90. Otherwise, for sm_90 and
    sm_80, fp32 (tf32x3 dots), fp16 (the G_SCALE path) and bf16 at large N and D (the largest tiles), once
    with N and D of no particular alignment and once divisible by 16 (Triton specializes those: other
    code, other register counts)."""
    info = pytest.importorskip("jepa.kernels.triton.info_nce")
    mod = "jepa.kernels.triton.info_nce"
    jobs = {}
    if ones:
        plan = [(90, "bf16", False)]
    else:
        plan = [(cap, dt, div) for cap in (90, 80) for dt in ("fp32", "fp16", "bf16") for div in (False, True)]
    torch_dt = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    for cap, dt, div in plan:
        n = d = 1 if ones else 4096
        cfg = info._blocks(n, d, torch_dt[dt])
        prec = "tf32x3" if dt == "fp32" else "tf32"
        one = {"N": 1, "D": 1} if ones else {}
        sig_nd = {} if ones else {"N": "i32", "D": "i32"}
        p = f"*{dt}"
        tag = (cap, dt, div, ones)

        def job(kernel, sig, consts, warps, stages=3):
            divisible = (_INFO_NCE_DIVISIBLE[kernel] + ["N", "D"]) if div else []
            return {"module": mod, "kernel": kernel, "cap": cap, "num_warps": warps, "num_stages": stages,
                    "signature": {**sig, **sig_nd}, "constexprs": {**consts, **one}, "divisible": divisible}

        rows = {"BLOCK_R": cfg.block_r, "BLOCK_K": cfg.block_kr}
        jobs[("info_nce_norm",) + tag] = job("_inv_norm_kernel", {"X": p, "OUT": "*fp32", "eps": "fp32"}, rows, 4)
        tiles = {"BLOCK_M": cfg.block, "BLOCK_N": cfg.block, "BLOCK_K": cfg.block_k, "DOT_PRECISION": prec}
        jobs[("info_nce_lse",) + tag] = job(
            "_lse_kernel", {"X": p, "Y": p, "RX": "*fp32", "RY": "*fp32", "LSE": "*fp32", "POS": "*fp32",
                            "scale2": "fp32", "inv_t": "fp32"},
            {**tiles, "WRITE_POS": True}, cfg.warps, cfg.lse_stages)
        jobs[("info_nce_bwd",) + tag] = job(
            "_bwd_kernel", {"X": p, "Y": p, "RX": "*fp32", "RY": "*fp32", "LSE_ROW": "*fp32", "LSE_COL": "*fp32",
                            "DXH": "*fp32", "scale2": "fp32", "inv_t": "fp32"},
            {**tiles, "ROW_TERM": True, "COL_TERM": True, "DIAG": 2.0, "BLOCK_DO": cfg.block_do,
             "G_SCALE": info._g_scale(torch_dt[dt])}, cfg.warps, cfg.bwd_stages)
        jobs[("info_nce_finish",) + tag] = job(
            "_finish_kernel", {"X": p, "RX": "*fp32", "DXH": "*fp32", "COEF": "*fp32", "DX": p, "eps": "fp32"},
            rows, 4)
    return jobs


def test_info_nce_default_configs_fit_and_do_not_spill(compiled):
    """Every info_nce kernel at the configuration the dispatcher launches, sm_90 and sm_80, every dtype."""
    keys = [k for k in compiled if k[0].startswith("info_nce_") and not k[-1]]
    assert len(keys) == 4 * 2 * 3 * 2
    problems = []
    for key in keys:
        job, res = compiled[key]
        if "error" in res:
            problems.append(f"{key}: {res['error'][-400:]}")
            continue
        if res["shared"] > SMEM[job["cap"]]:
            problems.append(f"{key}: {res['shared']} B of shared memory > the device's {SMEM[job['cap']]}")
        if res["stack"] is None or res["stack"] > 0:
            problems.append(f"{key}: {res['stack']} B stack frame (register spills), {res['regs']} registers")
    assert not problems, "\n".join(problems)


def _row_kernel_jobs() -> dict:
    """jepa_loss (fp32 and bf16, the launch shape ``_launch_shape`` picks for D = 768 and 4096; rows wider
    than 4096 run one whole row per program and spill at D = MAX_D = 16384, see kernels/README.md) and
    the EMA at their launch configurations, for sm_90 and sm_80: the spill and shared-memory checks."""
    from jepa.kernels.triton import jepa_loss as jl  # noqa: PLC0415

    jobs = {}
    for cap in (90, 80):
        for dt in ("fp32", "bf16"):
            for d in (768, 4096):
                block_r, block_d, _, warps = jl._launch_shape(4096, d)
                for key, job in _jepa_loss_jobs(False).items():
                    if key[0] == "jepa_loss_finalize":
                        continue
                    job = json.loads(json.dumps(job).replace('"*fp32"', f'"*{dt}"') if dt != "fp32" else json.dumps(job))
                    job["signature"].update(PARTIAL="*fp32", **({"COUNT": "*fp32"} if "COUNT" in job["signature"] else {}))
                    job.update(cap=cap, num_warps=warps)
                    job["constexprs"].update(BLOCK_R=block_r, BLOCK_D=block_d)
                    jobs[("rowspill", cap, dt, d) + key] = job
        for key, job in _ema_jobs().items():
            jobs[("rowspill", cap) + key] = {**job, "cap": cap}
    return jobs


def test_row_kernels_do_not_spill_on_sm90_and_sm80(compiled):
    keys = [k for k in compiled if k[0] == "rowspill"]
    assert len(keys) == 2 * (2 * 2 * 4 + 3)
    problems = []
    for key in keys:
        job, res = compiled[key]
        if "error" in res:
            problems.append(f"{key}: {res['error'][-400:]}")
        elif res["stack"] is None or res["stack"] > 0 or res["shared"] > SMEM[job["cap"]]:
            problems.append(f"{key}: {res['stack']} B stack frame, {res['regs']} registers, {res['shared']} B shared")
    assert not problems, "\n".join(problems)


def _ema_jobs() -> dict:
    from jepa.kernels.triton.ema_update import _BLOCK, CHUNK  # noqa: PLC0415

    mod = "jepa.kernels.triton.ema_update"
    jobs = {}
    for dt, aligned, ones in (("tl.float32", True, False), ("tl.bfloat16", True, True), ("tl.float16", False, False)):
        sig = {"TABLE": "*i64", "M_PTR": "*fp32", "w_value": "fp32"}
        consts = {"DTYPE": dt, "M_FROM_PTR": True, "CHUNK": CHUNK, "BLOCK": _BLOCK, "ALIGNED": aligned}
        if ones:
            consts.update(T=1, C=1)
        else:
            sig.update(T="i32", C="i32")
        jobs[("ema", dt, aligned, ones)] = {"module": mod, "kernel": "_ema_kernel", "cap": 90, "num_warps": 4,
                                            "signature": sig, "constexprs": consts, "divisible": ["TABLE", "M_PTR"],
                                            "ptx": True}
    return jobs


def _value_one_attention_jobs() -> dict:
    jobs = {}
    for kernel in ("fwd", "dkdv", "dq", "delta"):
        cfg = (64, 32, 4, 2) if kernel != "delta" else (64, 0, 4, 1)
        jobs[("attention_ones", kernel)] = _attn_job(kernel, "bf16", 24, cfg, 90, ones=True)
    return jobs


def _wide_offset_attention_jobs() -> dict:
    """The OFFS=int64 builds (slices of 2**31 elements or more) of every attention kernel, pinned tiles."""
    jobs = {}
    for dtype_name, d in (("bf16", 64), ("fp32-tf32x3", 80)):
        dtype, precision = DTYPES[dtype_name]
        for kernel in ("fwd", "dkdv", "dq", "delta"):
            cfg = (64, 0, 4, 1) if kernel == "delta" else kern.fitting_configs(
                kernel, dtype, precision, kern.padded_head_dim(d), SMEM[90])[0]
            jobs[("wide", dtype_name, d, kernel)] = _attn_job(kernel, dtype_name, d, cfg, 90, offs="tl.int64")
    return jobs


def _size_product_examples() -> dict:
    sig = {"X": "*fp32", "Y": "*fp32", "D": "i32"}
    return {("examples", name): {"module": "_aot_examples", "kernel": name, "cap": 90, "signature": sig,
                                 "constexprs": {"BLOCK": 128}}
            for name in ("narrow_row_copy", "wide_row_copy")}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Every job of this module compiled once, in one subprocess: {key: result}."""
    try:
        from triton.backends import backends  # noqa: PLC0415
    except ImportError:
        pytest.skip("this triton has no backend registry")
    if "nvidia" not in backends:
        pytest.skip("this triton has no NVIDIA backend")
    pinned = _pinned_jobs()
    jobs = {**pinned, **_candidate_jobs(pinned), **_jepa_loss_jobs(False), **_jepa_loss_jobs(True),
            **_info_nce_jobs(False), **_info_nce_jobs(True), **_ema_jobs(), **_value_one_attention_jobs(),
            **_size_product_examples(), **_wide_offset_attention_jobs(), **_row_kernel_jobs()}
    keys = list(jobs)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path_factory.mktemp("triton_cache"))
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run([sys.executable, str(WORKER)], input=json.dumps([jobs[k] for k in keys]), env=env,
                          capture_output=True, text=True, timeout=900, cwd=tmp_path_factory.getbasetemp())
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout)
    return {k: (jobs[k], r) for k, r in zip(keys, results)}


def _select(compiled, kind):
    return {k: v for k, v in compiled.items() if k[0] == kind}


def test_pinned_attention_configs_fit_do_not_spill_and_use_tensor_cores(compiled):
    pinned = _select(compiled, "pinned")
    assert len(pinned) == 3 * (len(HEAD_DIMS) + 4 + 4 + 1 + 10)
    problems = []
    for (kind, cap, dtype_name, d, kernel), (job, res) in pinned.items():
        name = f"sm_{cap} {dtype_name} d={d} {kernel} {job['constexprs']['BLOCK_M']}x{job['constexprs']['BLOCK_N']}"
        if "error" in res:
            problems.append(f"{name}: {res['error'][-400:]}")
            continue
        if res["shared"] > SMEM[cap]:
            problems.append(f"{name}: {res['shared']} B of shared memory > the device's {SMEM[cap]}")
        if res["stack"]:
            problems.append(f"{name}: {res['stack']} B stack frame (register spills), {res['regs']} registers")
        wants = "wgmma" if cap >= 90 and job["constexprs"]["BLOCK_M" if kernel != "dkdv" else "BLOCK_N"] >= 64 else None
        if wants == "wgmma" and not res["wgmma"]:
            problems.append(f"{name}: no wgmma in the sm_90 PTX")
        if not (res["wgmma"] or res["mma_sync"]):
            problems.append(f"{name}: no tensor-core instruction in the PTX")
    assert not problems, "\n".join(problems)


def test_every_autotuning_candidate_compiles_without_spills_within_its_estimate(compiled):
    problems = []
    everything = {**_select(compiled, "candidate"), **_select(compiled, "pinned")}
    assert _select(compiled, "candidate"), "no candidate beyond the pinned configurations"
    for key, (job, res) in everything.items():
        if "error" in res:
            problems.append(f"{key}: {res['error'][-400:]}")
            continue
        c = job["constexprs"]
        cfg = (c["BLOCK_M"], c["BLOCK_N"], job["num_warps"], job["num_stages"])
        kernel = {v: k for k, v in KERNEL_NAMES.items()}[job["kernel"]]
        cls = kern.dot_class(torch.float32 if job["signature"]["Q"] == "*fp32" else torch.bfloat16, c["DOT_PRECISION"])
        estimate = kern.smem_bytes(kernel, cls, c["BLOCK_D"], cfg)
        if res["shared"] > estimate:
            problems.append(f"{key}: compiled {res['shared']} B of shared memory > the pruner's estimate {estimate}")
        if res["stack"]:
            problems.append(f"{key}: {res['stack']} B stack frame (register spills), {res['regs']} registers")
    assert not problems, "\n".join(problems)


def test_pruner_never_keeps_a_config_over_the_limit_and_falls_back_to_the_smallest():
    for kernel, tables in kern.TILE_TABLES.items():
        for (cls, block_d), entries in tables.items():
            dtype, precision = {"16bit": (torch.bfloat16, "tf32"), "tf32": (torch.float32, "tf32"),
                                "tf32x3": (torch.float32, "tf32x3")}[cls]
            sizes = {cfg: kern.smem_bytes(kernel, cls, block_d, cfg) for cfg in entries}
            for limit in (SMEM[90], SMEM[80], 101376, 65536, 1):
                kept = kern.fitting_configs(kernel, dtype, precision, block_d, limit)
                fits = [c for c in entries if sizes[c] <= limit]
                assert kept == (fits or [min(entries, key=sizes.get)])
                pinned = kern.pinned_config(kernel, dtype, precision, block_d, limit)
                assert (pinned.kwargs["BLOCK_M"], pinned.kwargs["BLOCK_N"], pinned.num_warps, pinned.num_stages) == kept[0]
            # below compute capability 9.0 the SM80 entries replace the table's where listed
            sm80 = kern.SM80_TILE_TABLES[kernel].get((cls, block_d), entries)
            assert kern.table_configs(kernel, dtype, precision, block_d, 80) == sm80
            assert kern.table_configs(kernel, dtype, precision, block_d, 86) == sm80
            assert kern.table_configs(kernel, dtype, precision, block_d, 100) == entries
            kept = kern.fitting_configs(kernel, dtype, precision, block_d, SMEM[80], 80)
            assert kept == [c for c in sm80 if kern.smem_bytes(kernel, cls, block_d, c) <= SMEM[80]]


def test_every_kernel_compiles_with_integer_arguments_of_one_and_without(compiled):
    keys = [k for k in compiled if k[0] in ("jepa_loss_fwd", "jepa_loss_bwd", "jepa_loss_finalize", "info_nce_norm",
                                             "info_nce_lse", "info_nce_bwd", "info_nce_finish", "ema", "attention_ones")]
    assert any(k[-1] is True for k in keys) and any(k[-1] is False for k in keys)
    errors = [f"{k}: {compiled[k][1]['error'][-600:]}" for k in keys if "error" in compiled[k][1]]
    assert not errors, "\n".join(errors)


def test_triton_ema_aligned_path_moves_16_byte_vectors(compiled):
    for key, (job, res) in _select(compiled, "ema").items():
        assert "error" not in res, res.get("error")
        vec = [op for op in res["ptx_ops"] if ".v4." in op]
        if job["constexprs"]["ALIGNED"]:
            assert any(op.startswith("ld.") for op in vec) and any(op.startswith("st.") for op in vec), (key, res["ptx_ops"])
        assert res["stack"] == 0, key


def test_the_size_product_scan_tells_32_from_64_bit_offsets(compiled):
    narrow = compiled[("examples", "narrow_row_copy")][1]
    wide = compiled[("examples", "wide_row_copy")][1]
    assert "error" not in narrow and "error" not in wide, (narrow.get("error"), wide.get("error"))
    assert len(narrow["size_products"]["i32"]) >= 1 and narrow["size_products"]["i64"] == 0, narrow["size_products"]
    assert wide["size_products"] == {"i32": [], "i64": wide["size_products"]["i64"]} and wide["size_products"]["i64"] >= 1


def test_no_kernel_multiplies_a_size_or_stride_in_32_bits(compiled):
    # Attention's default builds (OFFS=int32) keep row * stride inside one (batch, head) slice in 32 bits,
    # which the host picks only when every slice spans < 2**31 elements (tests/ops/test_attention_triton.py);
    # its OFFS=int64 builds ("wide") and every other kernel have no 32-bit size product at all.
    narrow_by_design = ("pinned", "candidate", "attention_ones")
    problems, errors = [], []
    for key, (job, res) in compiled.items():
        if key[0] in ("examples", "rowspill") or key[0] in narrow_by_design:
            continue
        if "error" in res:
            errors.append(f"{key}: {res['error'][-400:]}")
        elif res["size_products"]["i32"]:
            problems.append(f"{key}: {res['size_products']['i32']}")
    assert not errors, "\n".join(errors)
    assert not problems, "32-bit products of sizes or strides (cast a factor to tl.int64):\n" + "\n".join(problems)
    wide = {k: res for k, (job, res) in compiled.items() if k[0] == "wide"}
    assert len(wide) == 8
    for key, res in wide.items():  # the scan sees them: (batch, head) bases and the rows of Q, K, V, O, ...
        assert res["size_products"]["i64"] >= (4 if key[3] == "delta" else 10), (key, res["size_products"])
    for key, (job, res) in compiled.items():  # the default builds: 64-bit up to the slice all the same
        if key[0] == "pinned" and key[1] == 90:
            assert res["size_products"]["i64"] >= 6, (key, res["size_products"])
