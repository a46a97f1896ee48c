// CUDA loss scaling: the fused unscale + non-finite check over every gradient of a TensorTable, and the
// dynamic scale update. Nothing is read back to the host, nothing is allocated or copied: the call only
// enqueues kernels on the given stream.
//
// The table (pointers and prefix sums) travels by value as the kernel argument, apex multi_tensor_apply
// style, rather than in device memory: gradients are usually re-created every step (zero_grad with
// set_to_none), so a table uploaded once per tensor set would cost a cudaMalloc + cudaMemcpy (host
// syncs) per step. With CUDA >= 12.1 kernel arguments may take up to 32 KB, enough for kLaunchTensors
// (1984) gradients per launch; a longer list is cut into consecutive launches of that many tensors.
//
// Inside a launch the gradients form one virtual index space [0, total) (csrc/include/jepa/multi_tensor.h);
// each block takes fixed-size chunks of it (grid-stride), finds the tensor owning the chunk start by a
// binary search over the prefix sums and walks the pieces of the chunk. The search indexes the argument
// arrays directly (block-uniform indices, like apex's tl.addresses[..][tensor_loc]) instead of going
// through jepa::locate_tensor's pointer, so the arrays stay in the constant bank. inv_scale is read and
// found_inf written on the device. Element math (jepa/amp_math.h) is float32 and shared with the CPU loop.
//
// found_inf: every block that saw a non-finite value stores 1.0f to it. Several blocks may store at once;
// the race is harmless because they all store the same value and nothing reads it during the launch.
// It is never cleared here (the caller zeroes it), so it accumulates across calls like torch's.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

#include "jepa/amp_math.h"
#include "jepa/cuda_elem.cuh"
#include "jepa/cuda_ops.h"
#include "jepa/dtype.h"

namespace jepa {
namespace cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;
constexpr std::int64_t kChunk = std::int64_t{kThreads} * kUnroll * 8;  // 8192 elements per chunk
constexpr std::int64_t kMaxBlocks = 8192;                               // grid-stride beyond this

#if CUDART_VERSION >= 12010
constexpr int kLaunchTensors = 1984;  // sizeof(LaunchTable) ~31.8 KB <= 32764 bytes of kernel arguments
#else
constexpr int kLaunchTensors = 248;  // the classic 4 KB kernel-argument limit
#endif

// One launch's share of the table, passed by value: gradient pointers and prefix sums relative to the
// first gradient of the launch.
struct LaunchTable {
  std::uintptr_t ptrs[kLaunchTensors];
  std::int64_t prefix[kLaunchTensors + 1];
  std::int64_t total;
  int n;
};
static_assert(sizeof(LaunchTable) + 2 * sizeof(void*) <= (kLaunchTensors > 248 ? 32764 : 4096),
              "kernel arguments too large");

template <typename T>
__global__ void __launch_bounds__(kThreads)
    unscale_kernel(const LaunchTable table, const float* __restrict__ inv_scale_ptr, float* found_inf) {
  const float inv = *inv_scale_ptr;
  const bool write = inv != 1.0f;  // uniform: inv == 1 leaves every value as it is, so only check
  std::uint32_t flag = 0;
  const std::int64_t nchunks = (table.total + kChunk - 1) / kChunk;
  for (std::int64_t c = blockIdx.x; c < nchunks; c += gridDim.x) {
    const std::int64_t begin = c * kChunk;
    const std::int64_t end = begin + kChunk < table.total ? begin + kChunk : table.total;
    // the tensor owning `begin`: the largest ti with prefix[ti] <= begin (empty tensors are never it)
    int lo_t = 0;
    int hi_t = table.n;
    while (hi_t - lo_t > 1) {
      const int mid = lo_t + (hi_t - lo_t) / 2;
      if (table.prefix[mid] <= begin) {
        lo_t = mid;
      } else {
        hi_t = mid;
      }
    }
    int ti = lo_t;
    std::int64_t pos = begin;
    while (pos < end && ti < table.n) {
      const std::int64_t t0 = table.prefix[ti];
      const std::int64_t t1 = table.prefix[ti + 1];
      const std::int64_t stop = end < t1 ? end : t1;
      if (stop > pos) {
        T* __restrict__ g = reinterpret_cast<T*>(table.ptrs[ti]);
        const std::int64_t lo = pos - t0;
        const std::int64_t hi = stop - t0;
        // kUnroll independent loads in flight per thread; consecutive threads touch consecutive elements.
        for (std::int64_t base = lo + threadIdx.x; base < hi; base += std::int64_t{kThreads} * kUnroll) {
          float v[kUnroll];
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) {
            const std::int64_t i = base + std::int64_t{u} * kThreads;
            v[u] = i < hi ? Elem<T>::load(g + i) : 0.0f;
            flag |= f32_nonfinite_flag(float_as_bits(v[u]));  // widening keeps inf/NaN: same test as the bits
          }
          if (write) {
#pragma unroll
            for (int u = 0; u < kUnroll; ++u) {
              const std::int64_t i = base + std::int64_t{u} * kThreads;
              if (i < hi) Elem<T>::store(g + i, unscale_value(v[u], inv));
            }
          }
        }
        pos = stop;
      }
      ++ti;
    }
  }
  // Every thread of the block reaches this barrier (the chunk loop is uniform per block).
  if (__syncthreads_or(flag != 0) && threadIdx.x == 0) *found_inf = 1.0f;
}

__global__ void update_scale_kernel(float* scale, std::int32_t* growth_tracker, const float* found_inf,
                                    double growth_factor, double backoff_factor, std::int64_t growth_interval) {
  jepa::update_scale(scale, growth_tracker, *found_inf, growth_factor, backoff_factor, growth_interval);
}

template <typename T>
void launch(const LaunchTable& lt, const float* inv_scale, float* found_inf, cudaStream_t s) {
  const std::int64_t nchunks = (lt.total + kChunk - 1) / kChunk;
  const unsigned blocks = static_cast<unsigned>(nchunks < kMaxBlocks ? nchunks : kMaxBlocks);
  unscale_kernel<T><<<blocks, kThreads, 0, s>>>(lt, inv_scale, found_inf);
}

}  // namespace

void unscale(const TensorTable& table, const float* inv_scale, float* found_inf, std::uintptr_t stream) {
  if (table.depth() != 1) throw std::invalid_argument("unscale_cuda: the table must hold 1 pointer list");
  const int dtype = table.dtype();
  if (dtype != kFloat32 && dtype != kFloat16 && dtype != kBFloat16) {
    throw std::invalid_argument("unscale_cuda: unsupported dtype_code " + std::to_string(dtype));
  }
  if (table.total() == 0) return;
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  const std::int64_t* prefix = table.prefix();
  const std::uintptr_t* ptrs = table.ptrs(0);
  auto lt = std::make_unique<LaunchTable>();  // ~32 KB: on the heap, copied into the launch
  for (int first = 0; first < table.size(); first += kLaunchTensors) {
    const int n = table.size() - first < kLaunchTensors ? table.size() - first : kLaunchTensors;
    const std::int64_t base = prefix[first];
    if (prefix[first + n] == base) continue;  // only empty tensors in this share
    lt->n = n;
    for (int i = 0; i < n; ++i) {
      lt->ptrs[i] = ptrs[first + i];
      lt->prefix[i] = prefix[first + i] - base;
    }
    lt->prefix[n] = prefix[first + n] - base;
    lt->total = lt->prefix[n];
    switch (dtype) {
      case kFloat32: launch<float>(*lt, inv_scale, found_inf, s); break;
      case kFloat16: launch<__half>(*lt, inv_scale, found_inf, s); break;
      default: launch<__nv_bfloat16>(*lt, inv_scale, found_inf, s); break;
    }
    check(cudaGetLastError(), "unscale_cuda", "kernel launch");
  }
}

void update_scale(float* scale, std::int32_t* growth_tracker, const float* found_inf, double growth_factor,
                  double backoff_factor, std::int64_t growth_interval, std::uintptr_t stream) {
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  update_scale_kernel<<<1, 1, 0, s>>>(scale, growth_tracker, found_inf, growth_factor, backoff_factor,
                                      growth_interval);
  check(cudaGetLastError(), "update_scale_cuda", "kernel launch");
}

}  // namespace cuda
}  // namespace jepa
