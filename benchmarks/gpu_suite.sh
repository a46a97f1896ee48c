#!/usr/bin/env bash
# The GPU suite: everything a GPU machine can tell about jepa's kernels, in one go, in under 9 minutes on
# an H200 (torch 2.11+cu130, Triton 3.6, nvcc 13.0, no network):
#
#   1. build + install jepa with its CUDA kernels, offline (no build isolation: scikit-build-core,
#      pybind11, cmake must be installed), for JEPA_CUDA_ARCHS (default 90; read from the environment);
#   2. every CUDA/Triton test (tests/ops, tests/amp, the CUDA test of tests/io; the pinned tile configurations:
#      JEPA_TRITON_AUTOTUNE=0), in parallel with pytest-xdist when it is installed; the ahead-of-time
#      compile tests (marker aot) are left to the CPU CI;
#   3. every GPU benchmark, timed with CUDA events: first the attention route table (it ships with the
#      package), then bench_ema_update, bench_jepa_loss, bench_info_nce, bench_sigreg, bench_unscale, then
#      bench_attention's rows (the most Triton compiles; --quick shapes) and bench_checkpoint.py's rows.
#
# Logs and JSON go to one folder: env.txt, build.log, tests.log, tests.xml (JUnit), bench_<op>.log and
# bench_<op>.json, attention_routes.json (copy it to jepa/ops/attention_routes.json to ship the routes),
# summary.json (status and seconds of every step). Without a GPU it prints "no GPU: skipped" and exits 0.
# Each step has a time limit inside the overall budget; a step cut short is reported as "timeout". The
# benchmarks rewrite their JSON after every row and the route table after every bucket, so a step cut
# short keeps what it measured (its JSON then says "complete": false).
#
# Usage: bash benchmarks/gpu_suite.sh [--out DIR] [--skip-build] [--steps LIST] [--budget SECONDS] [--quick]
#   --out DIR         output folder (default gpu-suite-<date>)
#   --skip-build      test the jepa already installed (e.g. pip install -e . done by hand)
#   --steps LIST      comma-separated subset of build,tests,bench (default all three)
#   --budget S        overall time limit in seconds (default 530)
#   --quick           smaller benchmark sizes and fewer repeats
# Env: PYTHON (default python3), JEPA_CUDA_ARCHS (default 90), PYTEST_WORKERS (default 8),
#      JEPA_GPU_SUITE_ASSUME_GPU=1 runs every step without a GPU (to test this script on a CPU machine).
# Exit status: 0 when the build, the tests and the benchmarks passed (or no GPU), 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="gpu-suite-$(date +%Y%m%d-%H%M%S)"
SKIP_BUILD=0
STEPS_WANTED=",build,tests,bench,"
BUDGET=530
QUICK=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --out=*) OUT="${1#--out=}"; shift ;;
        --skip-build) SKIP_BUILD=1; shift ;;
        --steps) STEPS_WANTED=",$2,"; shift 2 ;;
        --budget) BUDGET="$2"; shift 2 ;;
        --quick) QUICK=(--quick); shift ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "gpu_suite: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
PY="${PYTHON:-python3}"
wanted() { case "$STEPS_WANTED" in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
wanted build || SKIP_BUILD=1
export JEPA_CUDA_ARCHS="${JEPA_CUDA_ARCHS:-90}"

# ---------------------------------------------------------------------------------------------- GPU?
gpu_reason=""
if [ "${JEPA_GPU_SUITE_ASSUME_GPU:-0}" = "1" ]; then
    :
elif ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    gpu_reason="nvidia-smi finds no GPU"
elif ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    gpu_reason="torch (${PY}) sees no CUDA device"
fi
if [ -n "$gpu_reason" ]; then
    echo "no GPU: skipped ($gpu_reason)"
    exit 0
fi

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
START=$SECONDS
STEPS=()   # "name status seconds" records for summary.json
FAILED=0

remaining() { echo $(( BUDGET - (SECONDS - START) )); }

# run_step NAME LIMIT LOG CMD...: runs CMD with a time limit of min(LIMIT, time left - 10 s), output to LOG.
run_step() {
    local name="$1" limit="$2" log="$3"; shift 3
    local left; left=$(( $(remaining) - 10 ))
    if [ "$left" -lt 20 ]; then
        echo "== $name: skipped (time budget spent)"
        STEPS+=("$name skipped(budget) 0"); FAILED=1; return 0
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (limit ${limit} s) -> $(basename "$log")"
    local t0=$SECONDS rc
    timeout --signal=TERM --kill-after=10 "$limit" "$@" >"$log" 2>&1
    rc=$?
    local dt=$(( SECONDS - t0 )) status=ok
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status=timeout; FAILED=1
    elif [ $rc -ne 0 ]; then status="failed(rc=$rc)"; FAILED=1; fi
    echo "   $status in ${dt} s"; tail -n 3 "$log" | sed 's/^/   | /'
    STEPS+=("$name $status $dt")
    return $rc
}

# ---------------------------------------------------------------------------------------------- environment
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    nvcc --version 2>&1 | tail -n 2
    "$PY" -c "import sys, torch; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda); print('device', torch.cuda.get_device_name(), torch.cuda.get_device_capability())" 2>&1
    "$PY" -c "import triton; print('triton', triton.__version__)" 2>&1
    echo "JEPA_CUDA_ARCHS=$JEPA_CUDA_ARCHS budget=${BUDGET}s"
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# ---------------------------------------------------------------------------------------------- 1. build
if [ "$SKIP_BUILD" -eq 0 ]; then
    export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
    run_step build 180 "$OUT/build.log" env JEPA_CUDA=ON "$PY" -m pip install --no-build-isolation --no-deps -v \
        -Ccmake.define.JEPA_CUDA_ARCHS="$JEPA_CUDA_ARCHS" -Ccmake.define.JEPA_CUDA=ON . || {
        echo "gpu_suite: the build failed; see $OUT/build.log"
    }
fi
# From another folder: the source tree's jepa/ (without the compiled _C) must not shadow the installed one.
(cd "$OUT" && "$PY" -P -c "import jepa._C as C; i = C.build_info(); print('jepa._C', i); assert C.has_cuda(), 'jepa._C has no CUDA'") \
    >>"$OUT/build.log" 2>&1 || { echo "gpu_suite: jepa._C is not importable with CUDA; see $OUT/build.log"; FAILED=1; STEPS+=("import_check failed 0"); }

# ---------------------------------------------------------------------------------------------- 2. tests
XDIST=()
if "$PY" -c "import xdist" >/dev/null 2>&1; then
    XDIST=(-n "${PYTEST_WORKERS:-8}")
fi
# `python -P -m pytest`: the installed package, not the source tree (as CI's bare `pytest`).
wanted tests && run_step tests 200 "$OUT/tests.log" env JEPA_TRITON_AUTOTUNE=0 JEPA_REQUIRE_EXTENSION=1 \
    "$PY" -P -m pytest -q -p no:cacheprovider -m "not aot" "${XDIST[@]}" --junitxml="$OUT/tests.xml" \
    tests/ops tests/amp tests/io/test_io_async.py

# ---------------------------------------------------------------------------------------------- 3. benchmarks
bench() {  # bench NAME LIMIT [ARGS...]
    local name="$1" limit="$2"; shift 2
    run_step "bench_$name" "$limit" "$OUT/bench_$name.log" \
        "$PY" -P "benchmarks/bench_$name.py" --out "$OUT/bench_$name.json" "${QUICK[@]}" "$@"
}
if wanted bench; then
    # Attention with the pinned tiles (JEPA_TRITON_AUTOTUNE=0): autotuning every shape and route bucket
    # would not fit the budget; the route table then says where even the pinned tiles beat SDPA.
    # Route buckets first, as their own step: 2 dtypes x 3 head sizes (N=256 and 1024 share a Triton
    # specialization) = 6 x 4 kernels to compile (a few s each) + 12 x 4 timed runs; table written per bucket.
    run_step attention_routes 150 "$OUT/attention_routes.log" env JEPA_TRITON_AUTOTUNE="${JEPA_TRITON_AUTOTUNE:-0}" \
        "$PY" -P benchmarks/bench_attention.py --routes-only --routes-out "$OUT/attention_routes.json" \
        --out "$OUT/bench_attention_routes.json" --no-cpu "${QUICK[@]}"
    bench ema_update 40 --no-cpu
    bench jepa_loss 30 --no-cpu
    bench info_nce 30 --no-cpu
    bench sigreg 40
    bench unscale 30
    # Attention rows: --quick shapes (I-JEPA predictor d=24, ViT-H/14 d=80, key-padded ViT-B: ~12 Triton
    # specializations); every shape of the script (~46 specializations, several minutes) by hand:
    # python benchmarks/bench_attention.py --no-cpu --out FILE.
    JEPA_TRITON_AUTOTUNE="${JEPA_TRITON_AUTOTUNE:-0}" bench attention 120 --no-cpu --quick
    # One I-JEPA training step, ViT-B/16 at 224 px in bf16, ours vs the reference-style step (issue 13).
    bench ijepa_step 60 --no-cpu
    run_step checkpoint 30 "$OUT/checkpoint.log" "$PY" -P benchmarks/bench_checkpoint.py --quick --out "$OUT/checkpoint.json"
fi

# ---------------------------------------------------------------------------------------------- summary
TOTAL=$(( SECONDS - START ))
"$PY" - "$OUT" "$TOTAL" "$FAILED" "${STEPS[@]}" <<'EOF'
import json, sys
from pathlib import Path
out, total, failed, steps = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
summary = {"seconds": total, "ok": not failed, "steps": []}
for s in steps:
    name, status, secs = s.rsplit(" ", 2)
    summary["steps"].append({"name": name, "status": status, "seconds": int(secs)})
xml = out / "tests.xml"
if xml.exists():
    import xml.etree.ElementTree as ET
    suites = ET.parse(xml).getroot()
    suites = [suites] if suites.tag == "testsuite" else list(suites)
    summary["tests"] = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
EOF
echo "gpu_suite: $([ $FAILED -eq 0 ] && echo ok || echo FAILED) in ${TOTAL} s; logs and JSON in $OUT"
exit $FAILED
