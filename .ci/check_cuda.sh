#!/usr/bin/env bash
# Compile-check every kernels/cuda/*.cu with nvcc for sm_80 and sm_90, warnings as errors
# (nvcc's own, ptxas's register spills and local-memory use, and the host compiler's). Nothing runs
# on a GPU. Usage: bash .ci/check_cuda.sh
# Env: NVCC (default: nvcc on PATH), JEPA_CUDA_CHECK_ARCHS (default: "80 90").
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC="${NVCC:-nvcc}"
if ! command -v "$NVCC" >/dev/null 2>&1; then
    echo "check_cuda: nvcc not found (set NVCC or put it on PATH)" >&2
    exit 1
fi
ARCHS="${JEPA_CUDA_CHECK_ARCHS:-80 90}"

shopt -s nullglob
sources=(kernels/cuda/*.cu)
if [ ${#sources[@]} -eq 0 ]; then
    echo "check_cuda: no kernels/cuda/*.cu to check"
    exit 0
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
echo "check_cuda: $("$NVCC" --version | tail -n 2 | head -n 1)"
status=0
for src in "${sources[@]}"; do
    for arch in $ARCHS; do
        if "$NVCC" -c -std=c++17 -O3 -arch="sm_${arch}" \
            -Werror all-warnings -Xptxas=-warn-spills,-warn-lmem-usage -Xcompiler=-Wall,-Wextra,-Werror \
            -I csrc/include "$src" -o "$out/$(basename "$src" .cu).sm_${arch}.o"; then
            echo "check_cuda: ok   $src sm_${arch}"
        else
            echo "check_cuda: FAIL $src sm_${arch}" >&2
            status=1
        fi
    done
done
exit $status
