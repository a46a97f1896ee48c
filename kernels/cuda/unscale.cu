// CUDA loss scaling: the fused unscale + non-finite check over every gradient of a TensorTable, and the
// dynamic scale update. Nothing is read back to the host, nothing is allocated or copied: the call only
// enqueues kernels on the given stream.
//
// The table (pointers, element and chunk prefix sums) travels by value as the kernel argument, apex
// multi_tensor_apply style, rather than in device memory: gradients are usually re-created every step
// (zero_grad with set_to_none), so a table uploaded once per tensor set would cost an upload per step.
// With CUDA >= 12.1 kernel arguments may take up to 32 KB, enough for kLaunchTensors (1344) gradients
// per launch; a longer list is cut into consecutive launches of that many tensors.
//
// Every gradient is cut into chunks of kCudaChunkBytes that start at multiples of the chunk size inside
// it (csrc/include/jepa/multi_tensor.h); each block takes chunks (grid-stride) and finds a chunk's
// gradient by a binary search over the chunk prefix sums, indexing the argument arrays directly
// (block-uniform indices, like apex's tl.addresses[..][tensor_loc]) so they stay in the constant bank.
// When every gradient of the table is 16-byte aligned (checked on the host) a chunk is read and written
// in 16-byte vectors, kUnroll in flight per thread, and its last < 16 bytes one element at a time;
// otherwise one element at a time. inv_scale is read and found_inf written on the device. Element math
// (jepa/amp_math.h) is float32 and shared with the CPU loop.
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
#include "jepa/multi_tensor.h"

namespace jepa {
namespace cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;                 // vectors (or elements) in flight per thread
constexpr std::int64_t kMaxBlocks = 8192;  // grid-stride beyond this

#if CUDART_VERSION >= 12010
constexpr int kLaunchTensors = 1344;  // sizeof(LaunchTable) ~31.5 KB <= 32764 bytes of kernel arguments
#else
constexpr int kLaunchTensors = 160;  // the classic 4 KB kernel-argument limit
#endif

// One launch's share of the table, passed by value: gradient pointers, element prefix sums relative to
// the first gradient of the launch, and chunk prefix sums.
struct LaunchTable {
  std::uintptr_t ptrs[kLaunchTensors];
  std::int64_t prefix[kLaunchTensors + 1];
  std::int64_t chunk_prefix[kLaunchTensors + 1];
  std::int64_t chunks;
  int n;
};
static_assert(sizeof(LaunchTable) + 2 * sizeof(void*) <= (kLaunchTensors > 160 ? 32764 : 4096),
              "kernel arguments too large");

template <typename T, bool kVectorized>
__global__ void __launch_bounds__(kThreads)
    unscale_kernel(const LaunchTable table, const float* __restrict__ inv_scale_ptr, float* found_inf) {
  const float inv = *inv_scale_ptr;
  const bool write = inv != 1.0f;  // uniform: inv == 1 leaves every value as it is, so only check
  const std::int64_t chunk = chunk_elements(static_cast<int>(sizeof(T)));
  std::uint32_t flag = 0;
  for (std::int64_t c = blockIdx.x; c < table.chunks; c += gridDim.x) {
    // the gradient owning chunk c: the largest ti with chunk_prefix[ti] <= c (empty gradients are never it)
    int lo_t = 0;
    int hi_t = table.n;
    while (hi_t - lo_t > 1) {
      const int mid = lo_t + (hi_t - lo_t) / 2;
      if (table.chunk_prefix[mid] <= c) {
        lo_t = mid;
      } else {
        hi_t = mid;
      }
    }
    const int ti = lo_t;
    const std::int64_t numel = table.prefix[ti + 1] - table.prefix[ti];
    const std::int64_t begin = (c - table.chunk_prefix[ti]) * chunk;
    const std::int64_t end = begin + chunk < numel ? begin + chunk : numel;
    T* __restrict__ g = reinterpret_cast<T*>(table.ptrs[ti]);
    std::int64_t scalar_begin = begin;
    if constexpr (kVectorized) {
      constexpr int kWidth = Vec16<T>::kWidth;
      const std::int64_t vend = vector_end(begin, end, kWidth);
      const std::int64_t nvec = (vend - begin) / kWidth;
      T* __restrict__ gv = g + begin;
      for (std::int64_t base = threadIdx.x; base < nvec; base += std::int64_t{kThreads} * kUnroll) {
        float v[kUnroll][kWidth];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const std::int64_t vi = base + std::int64_t{u} * kThreads;
          if (vi < nvec) {
            Vec16<T>::load(gv + vi * kWidth, v[u]);
          } else {
#pragma unroll
            for (int k = 0; k < kWidth; ++k) v[u][k] = 0.0f;
          }
#pragma unroll
          for (int k = 0; k < kWidth; ++k) flag |= f32_nonfinite_flag(float_as_bits(v[u][k]));
        }
        if (write) {
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) {
            const std::int64_t vi = base + std::int64_t{u} * kThreads;
            if (vi < nvec) {
              float out[kWidth];
#pragma unroll
              for (int k = 0; k < kWidth; ++k) out[k] = unscale_value(v[u][k], inv);
              Vec16<T>::store(gv + vi * kWidth, out);
            }
          }
        }
      }
      scalar_begin = vend;
    }
    // The tail (fewer than one vector), or the whole chunk when some gradient is not 16-byte aligned.
    for (std::int64_t base = scalar_begin + threadIdx.x; base < end; base += std::int64_t{kThreads} * kUnroll) {
      float v[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const std::int64_t i = base + std::int64_t{u} * kThreads;
        v[u] = i < end ? Elem<T>::load(g + i) : 0.0f;
        flag |= f32_nonfinite_flag(float_as_bits(v[u]));  // widening keeps inf/NaN: same test as the bits
      }
      if (write) {
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const std::int64_t i = base + std::int64_t{u} * kThreads;
          if (i < end) Elem<T>::store(g + i, unscale_value(v[u], inv));
        }
      }
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
void launch(const LaunchTable& lt, bool vectorized, const float* inv_scale, float* found_inf, cudaStream_t s) {
  const unsigned blocks = static_cast<unsigned>(lt.chunks < kMaxBlocks ? lt.chunks : kMaxBlocks);
  if (vectorized) {
    unscale_kernel<T, true><<<blocks, kThreads, 0, s>>>(lt, inv_scale, found_inf);
  } else {
    unscale_kernel<T, false><<<blocks, kThreads, 0, s>>>(lt, inv_scale, found_inf);
  }
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
    fill_chunk_prefix(lt->prefix, n, chunk_elements(dtype_size(dtype)), lt->chunk_prefix);
    lt->chunks = lt->chunk_prefix[n];
    const bool vec = table.aligned16();
    switch (dtype) {
      case kFloat32: launch<float>(*lt, vec, inv_scale, found_inf, s); break;
      case kFloat16: launch<__half>(*lt, vec, inv_scale, found_inf, s); break;
      default: launch<__nv_bfloat16>(*lt, vec, inv_scale, found_inf, s); break;
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
