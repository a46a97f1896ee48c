// CUDA loss scaling: the fused unscale + non-finite check over every gradient of a TensorTable in ONE
// launch (apex multi_tensor_apply style, the table in device memory), and the dynamic scale update.
//
// The gradients form one virtual index space [0, total) (csrc/include/jepa/multi_tensor.h); each block
// takes fixed-size chunks of it (grid-stride), finds the tensor owning the chunk start by binary search
// (jepa::locate_tensor, shared with the CPU code) and walks the pieces of the chunk. inv_scale is read
// and found_inf written on the device, so the host never waits. Element math (jepa/amp_math.h) is in
// float32 and shared with the CPU loop: non-finite flags on the float32 bits, unscale_value.
//
// found_inf: every block that saw a non-finite value stores 1.0f to it. Several blocks may store at once;
// the race is harmless because they all store the same value and nothing reads it during the launch.
// It is never cleared here (the caller zeroes it), so it accumulates across calls like torch's.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "jepa/amp_math.h"
#include "jepa/cuda_ops.h"
#include "jepa/dtype.h"
#include "jepa/multi_tensor.h"

namespace jepa {
namespace cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;
constexpr std::int64_t kChunk = std::int64_t{kThreads} * kUnroll * 8;  // 8192 elements per chunk
constexpr std::int64_t kMaxBlocks = 8192;                               // grid-stride beyond this

void check(cudaError_t err, const char* fn, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(fn) + ": " + what + " failed: " + cudaGetErrorString(err));
  }
}

template <typename T>
struct Elem;

template <>
struct Elem<float> {
  static __device__ __forceinline__ float load(const float* p) { return *p; }
  static __device__ __forceinline__ void store(float* p, float v) { *p = v; }
};

template <>
struct Elem<__half> {
  static __device__ __forceinline__ float load(const __half* p) { return __half2float(*p); }
  static __device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }
};

template <>
struct Elem<__nv_bfloat16> {
  static __device__ __forceinline__ float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }
  static __device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
};

// Layout of a depth-1 table in device memory: n gradient pointers, then n + 1 prefix sums.
struct GradTable {
  const std::uintptr_t* ptrs;
  const std::int64_t* prefix;
  int n;
  std::int64_t total;
};

template <typename T>
__global__ void __launch_bounds__(kThreads)
    unscale_kernel(GradTable table, const float* __restrict__ inv_scale_ptr, float* found_inf) {
  const float inv = *inv_scale_ptr;
  const bool write = inv != 1.0f;  // uniform: inv == 1 leaves every value as it is, so only check
  std::uint32_t flag = 0;
  const std::int64_t nchunks = (table.total + kChunk - 1) / kChunk;
  for (std::int64_t c = blockIdx.x; c < nchunks; c += gridDim.x) {
    const std::int64_t begin = c * kChunk;
    const std::int64_t end = begin + kChunk < table.total ? begin + kChunk : table.total;
    int ti = locate_tensor(table.prefix, table.n, begin);
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

// Uploads a depth-1 table's pointers and prefix sums to the current device once and keeps them with the
// table (synchronous copy: complete before any stream can use it; a table is built once per set of
// gradient buffers and reused while they stay put).
GradTable device_table(const TensorTable& table) {
  int device = -1;
  check(cudaGetDevice(&device), "unscale_cuda", "cudaGetDevice");
  const int n = table.size();
  const std::size_t ptr_bytes = static_cast<std::size_t>(n) * sizeof(std::uintptr_t);
  const std::size_t prefix_bytes = (static_cast<std::size_t>(n) + 1) * sizeof(std::int64_t);
  std::lock_guard<std::mutex> lock(table.device_mutex());
  TensorTable::DeviceCopy& copy = table.device_copy();
  if (!copy.data || copy.device != device) {
    std::vector<unsigned char> host(ptr_bytes + prefix_bytes);
    std::memcpy(host.data(), table.ptrs(0), ptr_bytes);
    std::memcpy(host.data() + ptr_bytes, table.prefix(), prefix_bytes);
    void* dev = nullptr;
    check(cudaMalloc(&dev, host.size()), "unscale_cuda", "cudaMalloc");
    std::shared_ptr<void> owner(dev, [](void* p) { cudaFree(p); });  // errors at teardown are ignored
    check(cudaMemcpy(dev, host.data(), host.size(), cudaMemcpyHostToDevice), "unscale_cuda", "cudaMemcpy");
    copy.device = device;
    copy.data = std::move(owner);
  }
  auto* base = static_cast<const unsigned char*>(copy.data.get());
  GradTable out;
  out.ptrs = reinterpret_cast<const std::uintptr_t*>(base);
  out.prefix = reinterpret_cast<const std::int64_t*>(base + ptr_bytes);
  out.n = n;
  out.total = table.total();
  return out;
}

}  // namespace

void unscale(const TensorTable& table, const float* inv_scale, float* found_inf, std::uintptr_t stream) {
  if (table.depth() != 1) throw std::invalid_argument("unscale_cuda: the table must hold 1 pointer list");
  if (table.total() == 0) return;
  const GradTable gt = device_table(table);
  const std::int64_t nchunks = (gt.total + kChunk - 1) / kChunk;
  const unsigned blocks = static_cast<unsigned>(nchunks < kMaxBlocks ? nchunks : kMaxBlocks);
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  switch (table.dtype()) {
    case kFloat32: unscale_kernel<float><<<blocks, kThreads, 0, s>>>(gt, inv_scale, found_inf); break;
    case kFloat16: unscale_kernel<__half><<<blocks, kThreads, 0, s>>>(gt, inv_scale, found_inf); break;
    case kBFloat16: unscale_kernel<__nv_bfloat16><<<blocks, kThreads, 0, s>>>(gt, inv_scale, found_inf); break;
    default: throw std::invalid_argument("unscale_cuda: unsupported dtype_code " + std::to_string(table.dtype()));
  }
  check(cudaGetLastError(), "unscale_cuda", "kernel launch");
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
